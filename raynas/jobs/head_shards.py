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

import os
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
from raynas.studies.tables import (
    head_key,
    kept_row,
    previous_record,
    previous_rows,
    read_record,
    same_head,
    table_fix,
    wall_times,
)

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
        check_siblings(settings)
        held = searched_in(out, record)
        wanted = settings.arms or [slug for _, slug, _ in SEARCHED]
        pending = [slug for _, slug, _ in SEARCHED if slug in wanted and slug not in held]
        mine = frozenset(shard_runs(pending, settings.shard))
        return cls(settings.shard, (out, record), rows, mine, frozenset(pending))

    def runs(self, arms: list, seeds: int, runs: Path) -> Callable[[object, int], bool]:
        """Whether this call trains an arm's run at a seed: a shard its own searches' runs and every N-th
        from the I-th of the others that ``--out``'s rows lack, in the plan's order (seed by seed); and
        only a run no other live process owns (:func:`claim`), so that a deal that differs between
        processes (a shard restarted after a --gather) leaves a run for later, never trains it twice."""
        if self.shard is None:
            return lambda arm, seed: claim(runs / f"{arm.slug}_seed{seed}")
        rest = [
            (arm.slug, seed)
            for seed in range(seeds)
            for arm in arms
            if arm.search not in self.pending
            and kept_row(self.shared_rows, arm.label, seed, head_key(arm.head_for_seed[seed])) is None
        ]
        dealt = set(shard_runs(rest, self.shard))

        def mine(arm, seed: int) -> bool:
            dealt_here = arm.search in self.searching or (arm.slug, seed) in dealt
            return dealt_here and claim(runs / f"{arm.slug}_seed{seed}")

        return mine


#: the deal's flags: shards of one N must agree on them, or they deal different plans
DEAL_FLAGS = ("arms", "seeds", "random_genotypes", "matched_width", "kind")


def check_siblings(settings: FADSettings) -> None:
    """A shard's deal-shaping flags against its siblings' (the shard folders of the same N that have a
    record): a difference would deal one run to two shards or to none."""
    index, count = shard_of(settings.shard)
    mine = {key: _as_json(getattr(settings, key)) for key in DEAL_FLAGS}
    for folder in sorted(Path(settings.out).glob(f"shard-*-of-{count}")):
        record = folder / f"{NAME}.json"
        if folder.name == f"shard-{index}-of-{count}" or not record.is_file():
            continue
        theirs = read_record(record, table_fix(NAME)).get("settings", {})
        differing = [key for key in DEAL_FLAGS if key in theirs and _as_json(theirs[key]) != mine[key]]
        if differing:
            was = ", ".join(f"{key}={theirs[key]}" for key in differing)
            raise ConfigError(
                f"{folder} was dealt with {was}; start every shard of {count} with the same flags"
            )


def _as_json(value: object) -> object:
    """A flag as a record holds it (tuples are lists there)."""
    return list(value) if isinstance(value, tuple) else value


def claim(run_dir: Path) -> bool:
    """Whether this process may train ``run_dir``: no other live process on this machine owns it. The
    owner's pid is written beside the run (``<run>.owner``, created exclusively); an owner that is no
    longer running leaves the run to whoever comes next (it resumes from the run's checkpoint)."""
    owner = run_dir.with_name(run_dir.name + ".owner")
    owner.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(2):
        try:
            with open(owner, "x") as file:
                file.write(str(os.getpid()))
            return True
        except FileExistsError:
            pid = _pid_in(owner)
            if pid == os.getpid():
                return True
            if pid is not None and _alive(pid):
                print(f"== {run_dir.name}: trained by process {pid} (another shard); left to it ==")
                return False
            owner.unlink(missing_ok=True)  # its owner stopped: the run is free again
    return False


def _pid_in(path: Path) -> int | None:
    try:
        return int(path.read_text().strip())
    except (OSError, ValueError):
        return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, another user's
        return True
    return True


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
    taken: dict[str, Path] = {}  # slug -> the shard folder whose genotype --out takes
    for folder in folders:  # every folder read and checked before anything is written
        record = previous_record(settings, folder, NAME, RECIPE, BEFORE_FLAGS)
        folder_costs = recorded_costs(record, folder)
        check_kept_genotypes(every_arm, folder, folder_costs)
        held = searched_in(folder, record)
        for cost in folder_costs:
            slug = SLUGS[cost["arm"]]
            if slug in held and _new_genotype(folder, out, slug, taken):
                costs[cost["arm"]] = cost  # the search whose genotype the table has
        rows += with_genotypes(previous_rows(folder, NAME, record, METRICS)).to_dict("records")
        if record:
            shards[folder.name] = record.get("wall_time_total_s", 0.0)
    unique: dict[tuple, dict] = {}
    for row in rows:
        first = unique.setdefault(run_unit(row), row)
        if same_head(first["head"]) != same_head(row["head"]):
            raise ConfigError(
                f"{row['arm']} at seed {row['seed']} has rows of two heads in {out} and its shard folders "
                "(a search made again?); remove the stale row from its fad_evidence.csv and gather again"
            )
    baseline = f"{'FCOS' if settings.kind == 'fcos' else 'RetinaNet'} head"
    if not unique:
        raise ConfigError(f"{out} and its shard folders hold no finished run yet; gather when one has")
    order = [baseline, RANDOM_ARM, *SLUGS]

    def plan_order(row: dict) -> tuple:
        """Seed by seed, arms as the plan has them (the matched width after the searched head)."""
        arm = row["arm"]
        place = order.index(arm) if arm in order else order.index("FAD searched") + 0.5
        return int(row["seed"]), place, run_unit(row)[2]

    for slug, folder in taken.items():
        _copy_genotype(folder, out, slug)
    write_table(out, sorted(unique.values(), key=plan_order), list(costs.values()), baseline,
                reported_split(base))  # fmt: skip
    record = {"runs_started": 0, "runs": len(unique), **wall_times(started, before), "shards": shards,
              "search_costs": list(costs.values()), "settings": asdict(settings)}  # fmt: skip
    atomic_write_json(out / f"{NAME}.json", record)
    print(f"gathered {len(folders)} shard folder(s): {len(unique)} rows in {out / (NAME + '.csv')}")
    print("\n" + (out / f"{NAME}.md").read_text())
    return record


def _new_genotype(folder: Path, out: Path, slug: str, taken: dict[str, Path]) -> bool:
    """Whether ``folder``'s genotype of ``slug`` is new to ``--out`` (then noted in ``taken``, copied once
    every folder is checked); the same one as ``--out``'s (or another folder's) is fine, another is two
    searches of one arm and is refused: nothing is overwritten."""
    source = folder / "genotypes" / f"{slug}.json"
    target = taken.get(slug, out) / "genotypes" / f"{slug}.json"
    if target.is_file():
        if target.read_bytes() != source.read_bytes():
            raise ConfigError(
                f"{source} and {target} are two searches of {slug}; keep the one the table should use "
                "(move the other away) and gather again"
            )
        return False
    taken[slug] = folder
    return True


def _copy_genotype(folder: Path, out: Path, slug: str) -> None:
    """A shard's genotype (and its drawing, unless ``--out`` has one) into ``--out/genotypes``."""
    source, target = folder / "genotypes" / f"{slug}.json", out / "genotypes" / f"{slug}.json"
    target.parent.mkdir(parents=True, exist_ok=True)
    drawing = source.with_suffix(".png")
    if drawing.is_file() and not target.with_suffix(".png").exists():
        target.with_suffix(".png").write_bytes(drawing.read_bytes())
    atomic_write_text(target, source.read_text())  # the genotype last: it says the search is there


__all__ = ["ShardPlan", "check_siblings", "claim", "gather", "searched_in", "table_folder"]
