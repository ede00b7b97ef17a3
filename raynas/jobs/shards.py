"""Runs of a study dealt to shards that train side by side (one core each), and rows kept from runs that
finished elsewhere (an earlier machine, a committed table), so that a study resumes wherever its runs are.
"""

from __future__ import annotations

from collections import Counter

import pandas as pd

from raynas.config import ConfigError

#: what a kept row must hold to stand for a run: which run, and what it was computed from
KEPT_KEYS = ("group", "arm", "seed", "neck", "recipe", "body")


def read_kept_rows(path: str) -> dict[tuple, dict]:
    """``--kept-rows``: the rows of an earlier calibration by :data:`KEPT_KEYS`, checked (one line for a
    missing or unreadable file or one without those columns)."""
    fix = "give a calibration.csv written by this script (with recipe and body columns), or drop --kept-rows"
    try:
        table = pd.read_csv(path, dtype={"recipe": str, "body": str})
    except FileNotFoundError:
        raise ConfigError(f"--kept-rows {path!r}: no such file; {fix}") from None
    except (OSError, ValueError) as error:
        raise ConfigError(f"--kept-rows {path!r} cannot be read as CSV ({error}); {fix}") from None
    missing = [key for key in KEPT_KEYS if key not in table.columns]
    if missing:
        raise ConfigError(f"--kept-rows {path!r} has no column(s) {missing}; {fix}")
    table[["recipe", "body"]] = table[["recipe", "body"]].fillna("")  # a run without a pretrained body
    return {tuple(row[key] for key in KEPT_KEYS): row for row in table.to_dict("records")}


def shard_of(text: str) -> tuple[int, int]:
    """``"I/N"`` as (I, N), checked."""
    index, _, count = text.partition("/")
    if not (index.isdigit() and count.isdigit() and 0 <= int(index) < int(count)):
        raise ConfigError(f"--shard takes I/N with 0 <= I < N (e.g. 0/2), got {text!r}")
    return int(index), int(count)


def shard_runs(runs: list, shard: str) -> list:
    """The runs of shard ``I/N``: every N-th from the I-th, so that shards side by side share the plan's
    order (what finishes together in the plan finishes together across shards) and together cover it once.
    Shards started with the same kept rows deal the same runs."""
    index, count = shard_of(shard)
    return runs[index::count]


def unmatched_kept_note(kept: dict[tuple, dict], identities: list[dict]) -> str | None:
    """Why kept rows stand for none of these runs although they name the same (group, arm, seed): the
    identity columns that differ, with the usual cause, or None. A kept row is reused only under the
    same recipe digest, and the digest holds the data root as written: ``--data data/scenes`` and
    ``--data /abs/data/scenes`` are two recipes, so a user sees it before the runs train again."""
    named = {tuple(key[:3]): key for key in kept}
    differing = Counter(
        column
        for identity in identities
        if (key := named.get(tuple(identity[k] for k in KEPT_KEYS[:3]))) is not None
        for column, value in zip(KEPT_KEYS[3:], key[3:], strict=True)
        if identity[column] != value
    )
    if not differing:
        return None
    counts = ", ".join(f"{column} ({n})" for column, n in differing.items())
    return (
        f"note: kept rows name runs of this plan but differ in {counts}, so those runs train again; a recipe "
        "differs when --data (or the recipe) is given otherwise than when the rows were made (e.g. a "
        "relative vs an absolute path), a body when it was pretrained again"
    )


__all__ = ["KEPT_KEYS", "read_kept_rows", "shard_of", "shard_runs", "unmatched_kept_note"]
