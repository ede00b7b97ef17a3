"""What the experiment scripts share about their result tables: a table in ``--out`` (a committed copy
too) is extended, never redone or mixed with rows of another recipe.

A table is ``<name>.csv`` (one row per arm and seed, with the ``head`` it was trained with) next to
``<name>.json`` (the run's record, whose ``settings`` are the command-line arguments).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError


def previous_record(args: argparse.Namespace, out: Path, name: str, recipe: tuple[str, ...]) -> dict:
    """The record of the table already in ``out`` (empty if none); refused if a ``recipe`` setting differs."""
    path = out / f"{name}.json"
    if not path.is_file():
        return {}
    record = json.loads(path.read_text())
    before = record.get("settings", {})
    differing = [key for key in recipe if key in before and before[key] != getattr(args, key)]
    if differing:
        was = ", ".join(f"{key}={before[key]}" for key in differing)
        raise ConfigError(
            f"{out} holds a table made with {was}; run with the same settings or choose another --out"
        )
    return record


def head_key(head: dict | None) -> str:
    """A row's ``head`` column: what identifies the head it was trained with."""
    return json.dumps(head, sort_keys=True) if head else "torchvision"


def kept_row(table: pd.DataFrame, arm: str, seed: int, head: str) -> dict | None:
    """The row of an earlier table for this arm, seed and head (None if it has none)."""
    if table.empty or "head" not in table:
        return None
    match = table[(table["arm"] == arm) & (table["seed"] == seed) & (table["head"] == head)]
    return match.iloc[0].to_dict() if len(match) else None


def not_yet_reached(table: pd.DataFrame, rows: list[dict]) -> list[dict]:
    """Rows of an earlier table that this run has not reached yet (they join the table at once, so that
    a run stopped half-way still writes a table with every finished row)."""
    if table.empty:
        return []
    reached = {(row["arm"], row["seed"]) for row in rows}
    return [row for row in table.to_dict("records") if (row["arm"], row["seed"]) not in reached]
