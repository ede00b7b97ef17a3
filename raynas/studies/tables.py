"""What the experiment scripts share about their result files: a table in ``--out`` (a committed copy
too) is extended, never redone or mixed with rows of another recipe, and every result file a script
wrote and reads back is checked on read, since a user can cut it short or edit it.

A table is ``<name>.csv`` (one row per arm and seed, with the ``head`` it was trained with) next to
``<name>.json`` (the run's record, whose ``settings`` are the command-line arguments). A damaged file is
one line naming it and the fix, raised before Ray starts, so that a refused run writes nothing.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pandas as pd

from raynas.config import ConfigError


def _why(err: BaseException) -> str:
    return " ".join(str(err).split())[:160]


def read_table(
    path: Path, fix: str, complete: tuple[str, ...] = (), numeric: tuple[str, ...] = (), **options
) -> pd.DataFrame:
    """The CSV table at ``path`` (``options`` for ``pd.read_csv``): ``complete`` columns filled in every row
    (a row cut short lacks its last cells), ``numeric`` columns numbers. Anything else is one line naming
    the file and ``fix``."""
    try:
        table = pd.read_csv(path, **options)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        raise ConfigError(f"{path} is not a readable CSV table ({_why(err)}); {fix}") from err
    return check_table(table, path, fix, complete, numeric)


def check_table(
    table: pd.DataFrame, path: Path, fix: str, complete: tuple[str, ...] = (), numeric: tuple[str, ...] = ()
) -> pd.DataFrame:
    """:func:`read_table`'s checks of a table already read (when which columns to check depends on it)."""
    missing = [column for column in (*complete, *numeric) if column not in table]
    if missing:
        raise ConfigError(f"{path} lacks the column(s) {missing}; {fix}")
    lines = [index + 2 for index in table.index[table[list(complete)].isna().any(axis=1)]]  # + header, from 1
    if lines:
        raise ConfigError(f"{path} has rows cut short or emptied (line(s) {lines[:5]}); {fix}")
    for column in numeric:
        values = pd.to_numeric(table[column], errors="coerce")
        lines = [index + 2 for index in table.index[values.isna() & table[column].notna()]]
        if lines:
            raise ConfigError(f"{path} has a {column!r} that is not a number (line(s) {lines[:5]}); {fix}")
    return table


def none_as_written(table: pd.DataFrame, column: str = "search_images") -> pd.DataFrame:
    """``column`` as it was written: pandas reads an unset value (``None``) back as NaN, which would never
    equal the key it is compared with, so a cached table would be redone on every run."""
    if column in table:
        table[column] = table[column].astype(object).where(table[column].notna(), "None")
    return table


def read_record(path: Path, fix: str) -> dict:
    """The JSON object at ``path``; anything else is one line naming the file and ``fix``."""
    try:
        record = json.loads(path.read_text())
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ConfigError(f"{path} is not a readable JSON record ({_why(err)}); {fix}") from err
    if not isinstance(record, dict):
        raise ConfigError(f"{path} is not a JSON record (an object of named values); {fix}")
    return record


def table_fix(name: str) -> str:
    """What to do about a damaged file of the table ``name`` in ``--out``."""
    return f"restore it (from git or experiments/results/{name}/), or choose another --out"


def previous_record(
    settings: Any, out: Path, name: str, recipe: tuple[str, ...], assumed: dict | None = None
) -> dict:
    """The record of the table already in ``out`` (empty if none); refused if a ``recipe`` setting (an
    attribute of ``settings``) differs, or if the table is there without its record (then nothing says
    which recipe its rows are of). ``assumed``: the value of a setting that records written before it
    existed were made with (FAD's ``proxy``: digits)."""
    path, table = out / f"{name}.json", out / f"{name}.csv"
    if not path.is_file():
        if table.is_file():
            raise ConfigError(
                f"{table} has no record {path.name} beside it, so its recipe is unknown; copy the record "
                "with it, or choose another --out"
            )
        return {}
    record = read_record(path, table_fix(name))
    before = record.get("settings")
    if not isinstance(before, dict):  # every record has them: without, its table's recipe is unknown
        raise ConfigError(f"{path}: 'settings' is missing or not an object of flags; {table_fix(name)}")
    before = {**(assumed or {}), **before}
    for key in ("wall_time_s", "wall_time_total_s"):
        if not isinstance(record.get(key, 0), int | float):
            raise ConfigError(f"{path}: {key!r} is not a number; {table_fix(name)}")
    differing = [key for key in recipe if key in before and before[key] != getattr(settings, key)]
    if differing:
        was = ", ".join(f"{key}={before[key]}" for key in differing)
        raise ConfigError(
            f"{out} holds a table made with {was}; run with the same settings or choose another --out"
        )
    return record


def wall_times(started: float, before: dict) -> dict[str, float]:
    """This run's wall time since ``started`` (``time.perf_counter``) and the table's total over every run
    that extended it (``before``: the previous record; one older than the total counts its own time)."""
    wall_time_s = round(time.perf_counter() - started, 1)
    total = before.get("wall_time_total_s", before.get("wall_time_s", 0))
    return {"wall_time_s": wall_time_s, "wall_time_total_s": round(total + wall_time_s, 1)}


def previous_rows(out: Path, name: str, record: dict, metrics: tuple[str, ...]) -> pd.DataFrame:
    """The rows of the table whose ``record`` is in ``out`` (empty without a record), each whole: its
    arm, seed, metrics and a ``head`` the scripts write (the last column: a row cut short has none)."""
    path = out / f"{name}.csv"
    if not record or not path.is_file():
        return pd.DataFrame()
    fix = table_fix(name)
    table = read_table(path, fix, complete=("arm", "seed", "head"), numeric=("seed", *metrics))
    if not table["seed"].astype(float).map(float.is_integer).all():
        raise ConfigError(f"{path} has a seed that is not a whole number; {fix}")
    for line, head in enumerate(table["head"], start=2):
        if head != "torchvision" and not isinstance(_json_or_none(head), dict):
            raise ConfigError(
                f"{path} line {line}: head {str(head)[:40]!r} is not one this script wrote; {fix}"
            )
    return table.astype({"seed": int})


def _json_or_none(text: str) -> object:
    try:
        return json.loads(text)
    except (TypeError, ValueError):
        return None


def head_key(head: dict | None) -> str:
    """A row's ``head`` column: what identifies the head it was trained with."""
    return json.dumps(head, sort_keys=True) if head else "torchvision"


def same_head(key: str) -> str:
    """A ``head`` cell as it reads today: a FAD head written before ``cells_per_group`` existed had one."""
    head = _json_or_none(key)
    if isinstance(head, dict) and head.get("type") == "fad" and "cells_per_group" not in head:
        return head_key({**head, "cells_per_group": 1})
    return key


def kept_row(table: pd.DataFrame, arm: str, seed: int, head: str) -> dict | None:
    """The row of an earlier table for this arm, seed and head (None if it has none)."""
    if table.empty or "head" not in table:
        return None
    match = table[(table["arm"] == arm) & (table["seed"] == seed) & (table["head"].map(same_head) == head)]
    return match.iloc[0].to_dict() if len(match) else None


def not_yet_reached(
    table: pd.DataFrame, rows: list[dict], keys: tuple[str, ...] = ("arm", "seed")
) -> list[dict]:
    """Rows of an earlier table that this run has not reached yet, by ``keys`` (they join the table at
    once, so that a run stopped half-way still writes a table with every finished row)."""
    if table.empty:
        return []
    reached = {tuple(row[key] for key in keys) for row in rows}
    return [row for row in table.to_dict("records") if tuple(row[key] for key in keys) not in reached]
