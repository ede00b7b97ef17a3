"""Does a larger test split make the random necks' ranking measurable? (issue 26's random-neck goals)

The calibration scores every run on a 200-image test split, and one such split carries about 0.4 AP of
measurement noise beside 0.5 AP of training noise (experiments/results/proxy_calibration/README.md). This
probe generates the same scenes with more test images (an image is seeded by its split and index,
:func:`raynas.data.scenes.generate_scenes`, so the first 200 are the calibration's test split and the
training images are untouched), scores each finished random-neck run on them with the full detector, as the
calibration scores, and measures both goals on the larger split beside the 200-image one. No run is
trained: the checkpoints are the calibration's (``experiments/proxy_test_split.py`` parses the flags).

It also writes the random necks as a table of architectures with their standalone AP per seed on the larger
split (``random_necks_archs.csv``, the columns of ``rank_correlation.csv``), so that a super-net's scores of
the same necks can be ranked against them (``supernet_variants.py --archs``) without training a neck again.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.calibration_tables import random_neck_goals
from raynas.jobs.shards import shard_runs

RUN_NAME = re.compile(r"random(\d+)_seed(\d+)$")
METRICS = ("AP", "AP50", "APs", "APm", "APl")
NAME = "test_split"  # test_split.csv / .md / .json in --out; one scores/<run>.json per scored run
ARCHS = "random_necks_archs.csv"  # the necks as rank_correlation.csv's columns, standalone AP per seed


@dataclass(frozen=True)
class ProbeSettings:
    runs: str  # the calibration's runs folder (random<k>_seed<s>/ inside)
    out: str
    test_images: int
    shard: str | None = None  # "I/N": every N-th run from the I-th (two side by side, one core each)


def finished_runs(runs: Path) -> list[tuple[str, Path]]:
    """``(run name, last checkpoint)`` of every random-neck run with a scored checkpoint
    (``test_metrics.json`` beside it: the calibration finished it), in neck then seed order."""
    from raynas.jobs.arms import TEST_METRICS_FILE

    found = []
    for run_dir in runs.iterdir() if runs.is_dir() else []:
        match = RUN_NAME.match(run_dir.name)
        kept = run_dir / TEST_METRICS_FILE
        if match and kept.is_file():
            try:
                checkpoint = run_dir / json.loads(kept.read_text())["checkpoint"]
            except (ValueError, KeyError, TypeError) as err:
                raise ConfigError(
                    f"{kept} cannot be read ({err}); delete it and re-run the calibration's command to "
                    "score that run again"
                ) from None
            if checkpoint.is_dir():
                found.append((int(match[1]), int(match[2]), run_dir.name, checkpoint))
    return [(name, checkpoint) for _, _, name, checkpoint in sorted(found)]


def check(settings: ProbeSettings) -> list[tuple[str, Path]]:
    """The runs to score, before anything is written: one line where there are none."""
    if settings.test_images <= 200:
        raise ConfigError(f"--test-images must be above the calibration's 200, got {settings.test_images}")
    runs = finished_runs(Path(settings.runs))
    if not runs:
        raise ConfigError(
            f"--runs {settings.runs!r} holds no finished random-neck run (random<k>_seed<s>/ with "
            "test_metrics.json); pass the calibration's runs folder, e.g. runs/proxy_calibration_context/runs"
        )
    return runs


def larger_test_data(checkpoint: Path, out: Path, test_images: int) -> Path:
    """The calibration's scenes (the checkpoint's data settings) with ``test_images`` test images, in
    ``out/data`` (generated once; refused by the generator if made with other settings)."""
    from raynas.checkpoints import config_from_state, load_state
    from raynas.data.loaders import ensure_dataset

    data = config_from_state(load_state(checkpoint)).data
    root = out / "data"
    ensure_dataset(replace(data, root=str(root), num_test=test_images))
    return root


def score(checkpoint: Path, root: Path) -> dict:
    """COCO metrics of the checkpoint's detector on every test image of ``root``."""
    from raynas.training.standalone import evaluate_checkpoint

    return evaluate_checkpoint(checkpoint, "test", data_root=str(root))


def rows_of(out: Path) -> pd.DataFrame:
    """Every scored run (``scores/*.json``, from any shard) as a row: arm, seed, the calibration's
    200-image metrics and the larger split's."""
    rows = []
    for path in sorted((out / "scores").glob("*.json")):
        record = json.loads(path.read_text())
        match = RUN_NAME.match(path.stem)
        larger = f"test{record['test_images']}"
        rows.append({"group": "random", "arm": f"random {match[1]}", "seed": int(match[2]), "run": path.stem,
                     **{f"{k}_test200": record["test200"].get(k) for k in METRICS},
                     **{f"{k}_{larger}": record["larger"].get(k) for k in METRICS},
                     "arch": json.dumps(record.get("arch"), sort_keys=True)})  # fmt: skip
    return pd.DataFrame(rows)


def archs_table(frame: pd.DataFrame, test_images: int) -> pd.DataFrame:
    """One row per neck: its architecture's edges (``rank_correlation.csv``'s columns), its standalone AP
    on the larger split per seed (``standalone_AP_seed<k>``) and their mean (``standalone_AP``)."""
    from raynas.jobs.arms import arch_id

    metric = f"AP_test{test_images}"
    per_seed = frame.pivot_table(index=["arm", "arch"], columns="seed", values=metric).reset_index()
    rows = []
    for row in per_seed.to_dict("records"):
        arch = json.loads(row["arch"])
        seeds = {f"standalone_AP_seed{seed}": row[seed] for seed in sorted(frame["seed"].unique())}
        present = [value for value in seeds.values() if pd.notna(value)]
        rows.append({"arch_id": arch_id(arch), "arm": row["arm"], **arch,
                     "standalone_AP": sum(present) / len(present), **seeds})  # fmt: skip
    return pd.DataFrame(rows).sort_values("arm", key=_neck_order, ignore_index=True)


def markdown(frame: pd.DataFrame, test_images: int, measured: dict[str, dict]) -> str:
    lines = [f"# Random necks on a {test_images}-image test split (AP in %)", "",
             f"| neck | seed | AP, test 200 | AP, test {test_images} |", "|---|---|---|---|"]  # fmt: skip
    for row in frame.sort_values(["arm", "seed"], key=_neck_order).to_dict("records"):
        lines.append(f"| {row['arm']} | {row['seed']} | {100 * row['AP_test200']:.1f} | "
                     f"{100 * row[f'AP_test{test_images}']:.1f} |")  # fmt: skip
    lines += ["", "| goal (issue 26) | test 200 | test " + str(test_images) + " |", "|---|---|---|"]
    split_200, larger = measured["test200"], measured[f"test{test_images}"]
    for key, label in (("random_pairs", "necks with both seeds"),
                       ("random_between_arch_std", "spread between necks (AP)"),
                       ("random_within_arch_std", "spread between seeds (AP)"),
                       ("random_seed_tau", "seed 0 vs seed 1 Kendall tau")):  # fmt: skip
        lines.append(f"| {label} | {_cell(split_200.get(key))} | {_cell(larger.get(key))} |")
    for split, values in (("test 200", split_200), (f"test {test_images}", larger)):
        if values:
            ratio = values["random_between_arch_std"] / values["random_within_arch_std"]
            low, high = values["random_seed_tau_low"], values["random_seed_tau_high"]
            lines.append(f"\n{split}: spread {ratio:.2f}x (goal 3x: {values['goal_spread']}), tau 95 % "
                         f"interval [{low:.2f}, {high:.2f}] (goal 0.6: {values['goal_tau']})")  # fmt: skip
    return "\n".join(lines) + "\n"


def _neck_order(column: pd.Series) -> pd.Series:
    return column.map(lambda arm: int(arm.split()[-1])) if column.name == "arm" else column


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:.2f}" if isinstance(value, float) else str(value)


def write_outputs(out: Path, test_images: int, started: float) -> dict:
    frame = rows_of(out)
    if frame.empty:
        return {"runs": 0}
    measured = {
        split: random_neck_goals(frame.assign(AP=100 * frame[f"AP_{split}"]))
        for split in ("test200", f"test{test_images}")
    }
    atomic_write_text(out / f"{NAME}.csv", frame.drop(columns="arch").to_csv(index=False))
    atomic_write_text(out / f"{NAME}.md", markdown(frame, test_images, measured))
    if (frame["arch"] != "null").all():  # every score knows its neck (older ones: filled in by run)
        atomic_write_text(out / ARCHS, archs_table(frame, test_images).to_csv(index=False))
    record = {"runs": len(frame), "test_images": test_images, **measured,
              "wall_time_s": round(time.perf_counter() - started, 1)}  # fmt: skip
    atomic_write_json(out / f"{NAME}.json", record)
    return record


def neck_arch(checkpoint: Path) -> dict:
    """The OPANAS architecture of a calibration run's neck, from its ``run_info.json``."""
    info = checkpoint.parent / "run_info.json"
    try:
        return json.loads(info.read_text())["config"]["neck"]["arch"]
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ConfigError(
            f"{info} does not say the run's neck ({err!r}); it is the calibration's record of the run: "
            "restore it, or score another --runs"
        ) from None


def _scored(kept: Path, checkpoint: Path) -> bool:
    """A score kept for this very checkpoint (one of another --runs folder, or damaged, is scored again).
    Shards deal the runs finished when they start: start them after the calibration's runs end."""
    try:
        return json.loads(kept.read_text())["checkpoint"] == str(checkpoint)
    except (OSError, ValueError, KeyError, TypeError):
        return False


def run(settings: ProbeSettings, runs: list[tuple[str, Path]]) -> dict:
    """Score every run not scored yet (resumable: ``scores/<run>.json``), then the tables from all."""
    from raynas.jobs.arms import TEST_METRICS_FILE

    out, started = Path(settings.out), time.perf_counter()
    root = larger_test_data(runs[0][1], out, settings.test_images)
    if settings.shard is not None:  # dealt before the scored ones are skipped: shards never share a run
        runs = shard_runs(runs, settings.shard)
    todo = [(name, ckpt) for name, ckpt in runs if not _scored(out / "scores" / f"{name}.json", ckpt)]
    for name, checkpoint in runs:  # a score kept from before the arch was recorded: its neck from the run
        kept = out / "scores" / f"{name}.json"
        if (name, checkpoint) not in todo and "arch" not in (record := json.loads(kept.read_text())):
            atomic_write_json(kept, {**record, "arch": neck_arch(checkpoint)})
    for name, checkpoint in todo:
        print(f"== {name} ==", flush=True)
        test200 = json.loads((checkpoint.parent / TEST_METRICS_FILE).read_text())["metrics"]
        record = {
            "checkpoint": str(checkpoint),
            "test_images": settings.test_images,
            "test200": test200,
            "larger": score(checkpoint, root),
            "arch": neck_arch(checkpoint),
        }
        atomic_write_json(out / "scores" / f"{name}.json", record)
        write_outputs(out, settings.test_images, started)
    record = write_outputs(out, settings.test_images, started)
    if (out / f"{NAME}.md").is_file():
        print("\n" + (out / f"{NAME}.md").read_text())
    return record


__all__ = ["ProbeSettings", "check", "finished_runs", "run"]
