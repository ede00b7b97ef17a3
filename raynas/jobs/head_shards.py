"""FAD's head table made by shards side by side (one core each), then gathered into one table.

``--shard I/N`` (``experiments/fad_evidence.py``): the searches that ``--out`` lacks are dealt every N-th
from the I-th; a shard trains the runs of its own searches and every N-th from the I-th of the other runs
that ``--out``'s table lacks (torchvision's head, FAD random, the searched arms whose genotypes ``--out``
holds), in the plan's order, so shards side by side finish the table seed by seed together. A shard writes
its rows, genotypes and record in ``--out/shard-I-of-N``; run folders stay in ``--out/runs`` (each run is
one shard's, so a run stopped in an unsharded call resumes in the shard it is dealt to). Shards deal from
what ``--out`` holds when they start: start them from the same ``--out``. ``--gather`` takes every shard's
rows, genotypes and search costs into ``--out``'s table and trains nothing; shards started after it deal
what is still missing.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.fad import BEFORE_FLAGS, FADSettings
from raynas.jobs.head_evidence import (
    METRICS,
    RANDOM_ARM,
    RECIPE,
    SEARCHED,
    check_kept_genotypes,
    recorded_costs,
    run_unit,
    with_genotypes,
    write_table,
)
from raynas.jobs.shards import shard_of, shard_runs
from raynas.studies.tables import head_key, kept_row, previous_record, previous_rows, wall_times

NAME = "fad_evidence"
SLUGS = {label: slug for label, slug, _ in SEARCHED}


def table_folder(settings: FADSettings) -> Path:
    """Where a call writes its table: ``--out``, or a shard's folder in it."""
    out = Path(settings.out)
    return out if settings.shard is None else out / "shard-{}-of-{}".format(*shard_of(settings.shard))


def searched_in(folder: Path, record: dict) -> set[str]:
    """The slugs of the searches a folder holds: a genotype beside its recorded cost."""
    recorded = {cost["arm"] for cost in recorded_costs(record, folder)}
    return {SLUGS[label] for label in recorded if (folder / "genotypes" / f"{SLUGS[label]}.json").is_file()}


@dataclass(frozen=True)
class ShardPlan:
    """A shard's part of the table (everything when unsharded): the searches dealt to it, and which runs
    are its own; ``shared``: ``--out`` and its record, whose genotypes every shard reuses."""

    shard: str | None
    shared: tuple[Path, dict] | None = None
    shared_rows: pd.DataFrame | None = None
    searching: frozenset[str] | None = None  # the searches dealt to this shard (None: every one)
    pending: frozenset[str] = frozenset()  # every shard's searches: their arms' runs are their searcher's

    @classmethod
    def read(cls, settings: FADSettings) -> ShardPlan:
        if settings.shard is None:
            return cls(None)
        out = Path(settings.out)
        record = previous_record(settings, out, NAME, RECIPE, BEFORE_FLAGS)
        rows = previous_rows(out, NAME, record, METRICS)
        held = searched_in(out, record)
        wanted = settings.arms or [slug for _, slug, _ in SEARCHED]
        pending = [slug for _, slug, _ in SEARCHED if slug in wanted and slug not in held]
        mine = frozenset(shard_runs(pending, settings.shard))
        return cls(settings.shard, (out, record), rows, mine, frozenset(pending))

    def runs(self, arms: list, seeds: int) -> Callable[[object, int], bool]:
        """Whether this shard trains an arm's run at a seed: its own searches' runs, and every N-th from
        the I-th of the others that ``--out``'s rows lack, in the plan's order (seed by seed)."""
        if self.shard is None:
            return lambda arm, seed: True
        rest = [
            (arm.slug, seed)
            for seed in range(seeds)
            for arm in arms
            if arm.search not in self.pending
            and kept_row(self.shared_rows, arm.label, seed, head_key(arm.head_for_seed[seed])) is None
        ]
        dealt = set(shard_runs(rest, self.shard))
        return lambda arm, seed: arm.search in self.searching or (arm.slug, seed) in dealt


def gather(settings: FADSettings, base, before: dict, kept_rows: pd.DataFrame) -> dict:
    """``--out``'s table from its own rows and every shard folder's (a run in two folders counts once,
    ``--out``'s first), their genotypes copied to ``--out/genotypes`` and their search costs recorded;
    nothing trains. The record keeps each shard's wall time apart (``shards``): they ran side by side."""
    from raynas.jobs.arms import reported_split

    out = Path(settings.out)
    started = time.perf_counter()
    folders = sorted(path for path in out.glob("shard-*-of-*") if path.is_dir())
    if not folders:
        raise ConfigError(f"{out} has no shard folders (shard-I-of-N) to gather; run --shard I/N first")
    costs = {cost["arm"]: cost for cost in recorded_costs(before, out)}
    rows = with_genotypes(kept_rows).to_dict("records")
    shards = dict(before.get("shards", {}))
    every_arm = replace(settings, arms=None)
    for folder in folders:
        record = previous_record(settings, folder, NAME, RECIPE, BEFORE_FLAGS)
        folder_costs = recorded_costs(record, folder)
        check_kept_genotypes(every_arm, folder, folder_costs)
        for cost in folder_costs:
            if SLUGS[cost["arm"]] in searched_in(folder, record):
                _take_genotype(folder, out, SLUGS[cost["arm"]])
                costs.setdefault(cost["arm"], cost)
        rows += with_genotypes(previous_rows(folder, NAME, record, METRICS)).to_dict("records")
        if record:
            shards[folder.name] = record.get("wall_time_total_s", 0.0)
    unique: dict[tuple, dict] = {}
    for row in rows:
        unique.setdefault(run_unit(row), row)
    baseline = f"{'FCOS' if settings.kind == 'fcos' else 'RetinaNet'} head"
    if not unique:
        raise ConfigError(f"{out} and its shard folders hold no finished run yet; gather when one has")
    order = [baseline, RANDOM_ARM, *SLUGS]

    def plan_order(row: dict) -> tuple:
        """Seed by seed, arms as the plan has them (the matched width after the searched head)."""
        arm = row["arm"]
        place = order.index(arm) if arm in order else order.index("FAD searched") + 0.5
        return int(row["seed"]), place, run_unit(row)[2]

    write_table(out, sorted(unique.values(), key=plan_order), list(costs.values()), baseline,
                reported_split(base))  # fmt: skip
    record = {"runs_started": 0, "runs": len(unique), **wall_times(started, before), "shards": shards,
              "search_costs": list(costs.values()), "settings": asdict(settings)}  # fmt: skip
    atomic_write_json(out / f"{NAME}.json", record)
    print(f"gathered {len(folders)} shard folder(s): {len(unique)} rows in {out / (NAME + '.csv')}")
    print("\n" + (out / f"{NAME}.md").read_text())
    return record


def _take_genotype(folder: Path, out: Path, slug: str) -> None:
    """A shard's genotype (and its drawing) into ``--out/genotypes``, unless ``--out`` has it already: the
    same one is fine, another is two searches of one arm and is refused (nothing is overwritten)."""
    source, target = folder / "genotypes" / f"{slug}.json", out / "genotypes" / f"{slug}.json"
    if target.is_file():
        if target.read_bytes() != source.read_bytes():
            raise ConfigError(
                f"{source} and {target} are two searches of {slug}; keep the one the table should use "
                "(move the other away) and gather again"
            )
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    if (drawing := source.with_suffix(".png")).is_file():
        target.with_suffix(".png").write_bytes(drawing.read_bytes())
    atomic_write_text(target, source.read_text())  # the genotype last: it says the search is there


__all__ = ["ShardPlan", "gather", "searched_in", "table_folder"]
