"""FAD's budget sweep (issue 28): the searched head's AP against the search's block width c' and length,
one seed each, beside torchvision's head trained at several seeds with its AP after every epoch, so that the
evidence recipe (c', search epochs, retraining epochs) is chosen from measurements, not guessed
(``experiments/fad_budget_sweep.py`` parses its flags into :class:`SweepSettings` and runs :func:`run`).

The paper searches 12 epochs of VOC at c' = 96 (fad-repshare.txt Sec. 4.1); the digits tables used 2 epochs at
c' = 24. Every search here is followed by one retraining of its derived head at its own c', with the recipe
every arm of the evidence shares; heads are scored on the test split (never used for choices) and their
curves on val (the split choices are made on): the schedule is long enough when the default head's mean val
AP rose over the last epoch by no more than its seed std (issue 28).
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.arms import train_and_report
from raynas.jobs.fad import FADSettings, fad_head_spec, fad_search_config, search_time_s
from raynas.jobs.head_evidence import head_cost
from raynas.studies.tables import wall_times
from raynas.training.config import TrainConfig

NAME = "budget_sweep"  # budget_sweep.csv / .md / .json / .png and budget_curve.csv in --out
METRICS = ("AP", "AP50", "AP75")
#: the settings the rows depend on: rows of another recipe are never mixed into one table
RECIPE = ("kind", "epochs", "train_images", "cells_per_group", "smoke", "paper", "proxy")
DEFAULT_ARM, SEARCHED_ARM = "default head", "FAD searched"


@dataclass(frozen=True)
class SweepSettings:
    """The FAD flags (``fad.c_prime`` / ``fad.search_epochs`` / ``fad.search_warmup`` unused: each grid
    point sets its own) and the grid: block widths x weights-only warm-up epochs x search lengths."""

    fad: FADSettings
    widths: tuple[int, ...]
    search_lengths: tuple[int, ...]
    warmups: tuple[int, ...] = (0,)


def grid(settings: SweepSettings) -> list[tuple[str, int, int, int]]:
    """``(run name, c', warm-up epochs, search epochs)`` of every searched point, widths outer; a point
    without warm-up keeps the name it had before warm-ups were swept (``c24_e2``), so kept rows match."""
    return [
        (f"c{c}_e{length}" if warmup == 0 else f"c{c}_w{warmup}_e{length}", c, warmup, length)
        for c in settings.widths
        for warmup in settings.warmups
        for length in settings.search_lengths
    ]


def read_kept(out: Path) -> tuple[dict[str, dict], pd.DataFrame]:
    """The rows (by run name) and curves of a sweep already in ``out`` (its recipe is checked by the
    script, with its record): a kept row is not trained again, also on a machine without the run folders."""
    rows, curves = out / f"{NAME}.csv", out / "budget_curve.csv"
    kept = {row["run"]: row for row in pd.read_csv(rows).to_dict("records")} if rows.is_file() else {}
    return kept, pd.read_csv(curves) if curves.is_file() else pd.DataFrame(columns=["run", "epoch", "AP"])


def kept_genotype(out: Path, name: str) -> Path:
    return out / "genotypes" / f"{name}.json"


def kept_searches(before: dict, out: Path) -> dict[str, dict]:
    """The searches a stopped sweep finished (its record's ``searches``, each with its genotype in
    ``genotypes/``): not run again, so a stop in a retraining loses the retraining only. A search whose
    genotype is missing is run again."""
    recorded = before.get("searches", {})
    return {name: cost for name, cost in recorded.items() if kept_genotype(out, name).is_file()}


def check_kept_searches(before: dict, out: Path) -> None:
    """The record's finished searches and their genotypes readable (before Ray; one line naming the file)."""
    searches = before.get("searches", {})
    if not isinstance(searches, dict) or not all(
        isinstance(cost, dict) and isinstance(cost.get("search_time_s"), int | float)
        for cost in searches.values()
    ):
        raise ConfigError(
            f"{out / f'{NAME}.json'}: 'searches' is not a table of search costs; restore it, or choose "
            "another --out"
        )
    for name in kept_searches(before, out):
        path = kept_genotype(out, name)
        try:
            arch = json.loads(path.read_text())["arch"]
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(
                f"{path} cannot be read as a genotype ({err}); restore it, or delete it to search again"
            ) from None
        if not isinstance(arch, dict):
            raise ConfigError(f"{path}: 'arch' is not a genotype; restore it, or delete it to search again")


def _curve(run: str, checkpoint_dir: Path) -> pd.DataFrame:
    """The run's val AP after every epoch (its TensorBoard scalars)."""
    from raynas.training.curves import read_curve

    curve = read_curve(checkpoint_dir.parent)
    return curve.loc[curve["AP"].notna(), ["epoch", "AP"]].assign(run=run)[["run", "epoch", "AP"]]


def _trained(cfg: TrainConfig, run: str, fields: dict) -> tuple[dict, pd.DataFrame, bool]:
    """Train (or read back) ``cfg`` with val AP every epoch: its row (test metrics, head cost), its curve,
    and whether it trained now."""
    from raynas.checkpoints import load_state

    cfg = replace(cfg, run=replace(cfg.run, eval_every=1))
    reported = train_and_report(cfg)
    num_classes = load_state(reported.checkpoint_dir)["num_classes"]
    metrics = {key: reported.metrics.get(key) for key in METRICS}
    row = {"run": run, **fields, **metrics, "split": reported.split, **head_cost(cfg, num_classes)}
    return row, _curve(run, reported.checkpoint_dir), reported.trained_now


def run(settings: SweepSettings, base: TrainConfig, before: dict) -> dict:
    from raynas.jobs.proxies import prepare_inputs
    from raynas.training.darts import search_fad

    out, started = Path(settings.fad.out), time.perf_counter()
    prepare_inputs(base, smoke=settings.fad.smoke)
    kept, curves = read_kept(out)
    rows, trained = [], 0
    searches = kept_searches(before, out)  # run name -> its search's cost, where its genotype is kept

    def write() -> dict:
        """Tables and record after every run: a stop leaves a folder the same command resumes, with every
        kept row (those this run has not reached yet, and those a narrower re-run does not plan)."""
        reached = {row["run"] for row in rows}
        table = write_outputs(out, rows + [row for run, row in kept.items() if run not in reached], curves)
        record = {
            "runs_started": trained,
            "runs": len(rows),
            **wall_times(started, before),
            "schedule": schedule_check(table, curves),
            "searches": searches,
            "settings": {
                **asdict(settings.fad),
                "widths": list(settings.widths),
                "search_lengths": list(settings.search_lengths),
                "warmups": list(settings.warmups),
            },
        }
        atomic_write_json(out / f"{NAME}.json", record)
        return record

    def add(row: dict, curve: pd.DataFrame, trained_now: bool) -> None:
        nonlocal curves, trained
        rows.append(row)
        trained += trained_now
        curves = pd.concat([curves[curves["run"] != row["run"]], curve], ignore_index=True)
        write()

    for seed in range(settings.fad.seeds):  # the default head first: its curve fixes the schedule
        name = f"default_seed{seed}"
        if name in kept:
            rows.append(kept[name])
            continue
        cfg = replace(base, head=None, run=replace(base.run, name=name, seed=seed))
        add(*_trained(cfg, name, {"arm": DEFAULT_ARM, "seed": seed}))
    for name, c_prime, warmup, length in grid(settings):
        if name in kept:
            rows.append(kept[name])
            continue
        point = replace(settings.fad, c_prime=c_prime, search_epochs=length, search_warmup=warmup)
        if name not in searches:
            print(f"== search: c'={c_prime}, {warmup} warm-up + {length} epoch(s) ==", flush=True)
            result = search_fad(fad_search_config(base, point, f"search_{name}"))
            (out / "genotypes").mkdir(parents=True, exist_ok=True)
            shutil.copyfile(result.genotype_path, kept_genotype(out, name))
            searches[name] = {
                "search_time_s": search_time_s(result),
                "search_peak_memory_mb": float(result.metrics.get("peak_memory_mb", float("nan"))),
            }
            write()  # a stop in the retraining keeps the search
        else:
            print(f"== search {name}: kept ({kept_genotype(out, name)}) ==")
        genotype = json.loads(kept_genotype(out, name).read_text())["arch"]
        head = fad_head_spec(genotype, point, c_prime)
        cfg = replace(base, head=head, run=replace(base.run, name=f"retrain_{name}", seed=0))
        fields = {
            "arm": SEARCHED_ARM,
            "seed": 0,
            "c_prime": c_prime,
            "search_warmup": warmup,
            "search_epochs": length,
            **searches[name],
        }
        add(*_trained(cfg, name, fields))
    record = write()
    print("\n" + (out / f"{NAME}.md").read_text())
    return record


def schedule_check(rows: pd.DataFrame, curves: pd.DataFrame) -> dict:
    """Has the default head's AP stopped rising? Its mean val AP over seeds at the last two epochs, the rise
    between them and the seed std at the last; ``stopped`` where the rise is at most that std (issue 28's
    rule; None where fewer than two epochs or two seeds say it). The recipe decays the learning rate for
    the last epoch, which lifts AP by itself, so the rise over the epoch before (at the full rate) is
    reported beside it (``rise_before_decay``, NaN under three epochs)."""
    runs = rows.loc[rows["arm"] == DEFAULT_ARM, "run"]
    wide = curves[curves["run"].isin(runs)].pivot_table(index="epoch", columns="run", values="AP")
    if len(wide) < 2 or wide.shape[1] < 2:
        return {"epochs": len(wide), "seeds": int(wide.shape[1]), "stopped": None}
    mean, last = wide.mean(axis=1), wide.index.max()
    rise, std = float(mean.loc[last] - mean.iloc[-2]), float(wide.loc[last].std(ddof=1))
    before = float(mean.iloc[-2] - mean.iloc[-3]) if len(mean) >= 3 else float("nan")
    return {"epochs": int(last), "seeds": int(wide.shape[1]), "last_epoch_rise": rise, "seed_std": std,
            "rise_before_decay": before, "stopped": bool(rise <= std)}  # fmt: skip


def markdown(rows: pd.DataFrame, curves: pd.DataFrame) -> str:
    split = rows["split"].iloc[0] if len(rows) else "test"
    lines = [f"AP on {split} in %; searched heads: one search and one retraining each (seed 0).", ""]
    default = rows[rows["arm"] == DEFAULT_ARM]
    if len(default):
        ap = 100 * default["AP"]
        params = default["head_params"].iloc[0] / 1e6
        spread = f" +/- {ap.std(ddof=1):.1f} ({len(default)} seeds)" if len(default) > 1 else " (1 seed)"
        lines += [f"- torchvision's head: {ap.mean():.1f}{spread}, {params:.2f} M head params", ""]
    searched = rows[rows["arm"] == SEARCHED_ARM]
    if len(searched):
        # rows from before warm-ups were swept have no such column: they searched without one
        warmup = searched.get("search_warmup", pd.Series(0, index=searched.index)).fillna(0)
        searched = searched.assign(search_warmup=warmup.astype(int))
        lines += [
            "| c' | warm-up epochs | search epochs | AP | AP50 | head params | head FLOPs | search time |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for row in searched.sort_values(["c_prime", "search_warmup", "search_epochs"]).to_dict("records"):
            cells = [
                f"{int(row['c_prime'])}",
                f"{row['search_warmup']}",
                f"{int(row['search_epochs'])}",
                f"{100 * row['AP']:.1f}",
                f"{100 * row['AP50']:.1f}",
                f"{row['head_params'] / 1e6:.2f} M",
                f"{row['head_flops'] / 1e9:.2f} G",
                f"{row['search_time_s']:.0f} s",
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    check = schedule_check(rows, curves)
    if check["stopped"] is None:
        counts = f"{check['epochs']} epoch(s), {check['seeds']} seed(s) of the default head"
        lines.append(f"Schedule: not measurable ({counts}).")
    else:
        verdict = "has stopped rising" if check["stopped"] else "is still rising: retrain longer"
        rise, std = 100 * check["last_epoch_rise"], 100 * check["seed_std"]
        epoch = check["epochs"]
        lines.append(f"Schedule: the default head's mean val AP rose {rise:+.2f} over epoch {epoch}, "
                     f"seed std {std:.2f}: it {verdict} (the last epoch runs at 0.1x the learning rate; "
                     f"over the epoch before: {100 * check['rise_before_decay']:+.2f}).")  # fmt: skip
    return "\n".join(lines) + "\n"


def plot(rows: pd.DataFrame, curves: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    arms = dict(zip(rows["run"], rows["arm"], strict=True))
    for run, curve in curves.groupby("run", sort=False):
        style = "-" if arms.get(run) == DEFAULT_ARM else "--"
        ax.plot(curve["epoch"], 100 * curve["AP"], style, marker="o", ms=3, label=run)
    ax.set_xlabel("retraining epoch")
    ax.set_ylabel("AP on val (%)")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_outputs(out: Path, rows: list[dict], curves: pd.DataFrame) -> pd.DataFrame:
    """The sweep's CSV, curves, Markdown and plot; after every run, so a stop keeps what finished."""
    table = pd.DataFrame(rows)
    out.mkdir(parents=True, exist_ok=True)
    curves = curves[curves["run"].isin(table["run"])] if len(table) else curves
    atomic_write_text(out / f"{NAME}.csv", table.to_csv(index=False))
    atomic_write_text(out / "budget_curve.csv", curves.to_csv(index=False))
    atomic_write_text(out / f"{NAME}.md", markdown(table, curves))
    if len(curves):
        plot(table, curves, out / f"{NAME}.png")
    return table
