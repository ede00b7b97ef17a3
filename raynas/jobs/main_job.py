"""The main job: OPANAS end to end on Ray (data -> body -> super-net -> EA vs random search -> table).

``experiments/opanas_ea.py`` parses its flags into a :class:`MainJob`; the other experiments build one
(``replace(MainJob(), ...)``) where they need the main job's recipe or a smoke run of it, never a faked
command line.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path

import pandas as pd

from raynas.config import ConfigError, apply_yaml, load_yaml, with_overrides
from raynas.jobs.proxies import PROXIES, digits_parts, prepare_inputs, scenes_parts
from raynas.models.detector import DETECTORS
from raynas.registry import ONE_STAGE
from raynas.search.opanas_config import OPANASSearchConfig
from raynas.studies.flags import check_counts
from raynas.studies.recipes import SMOKE_BUDGET
from raynas.training.config import OPANASConfig, OptimConfig, RunConfig, SupernetConfig, TrainConfig

#: the detectors OPANAS's neck plugs into (Table 1: one-stage, two-stage and cascade), Mask R-CNN aside
KINDS = tuple(kind for kind in DETECTORS if kind != "mask_rcnn")
#: the main job's scenes budget (15 minutes on 2 cores, everything included; measured in
#: experiments/results/opanas_ea/README.md): a body pretrained for 300 steps (the recipe's 700 take 514 s
#: alone; 300 steps: 215 s, zone type at C4 / C5 83 / 99 %, glyph accuracy 36 %) and 400 of the 800
#: training images for 2 epochs (a super-net epoch of 800 images at 320 px took 286 s)
SCENES_BODY_STEPS, SCENES_TRAIN_IMAGES, SCENES_EPOCHS = 300, 400, 2
#: the super-net budgets (``--budget``): ``default`` is the 15-minute one above on scenes (it learns next
#: to nothing: the FPN reference reaches 2.6 AP); ``evidence`` is the scenes super-net the OPANAS evidence
#: stands on (issue 27): the calibration's recipe (experiments/configs/scenes_calibration.yaml: its
#: 700-step context body, every training image outside the search split, 8 epochs, x0.1 for the last 2,
#: 100 warm-up steps): 27 minutes on 2 cores with the body there (super-net epochs of 150-172 s), about
#: 36 without (experiments/results/opanas_ea/README.md)
BUDGETS = ("default", "evidence")
EVIDENCE_EPOCHS, EVIDENCE_DECAY_EPOCHS, EVIDENCE_WARMUP_ITERS = 8, 2, 100


@dataclass(frozen=True)
class MainJob:
    """What a run of the main job is asked to do (the flags of ``experiments/opanas_ea.py``).

    ``out_given`` / ``train_workers_given``: the flag was on the command line, so it wins over a config
    file (without a file, the values here decide either way)."""

    data: str = "data/digits"
    proxy: str = "digits"
    out: str = "runs/opanas_ea"
    kind: str = "fcos"
    train_workers: int = 2
    scorers: int | None = None
    gpu: bool = False
    address: str | None = None
    paper: bool = False
    smoke: bool = False
    budget: str = "default"  # BUDGETS: the super-net's schedule and data on scenes
    retrain: bool = False
    reference: bool = True
    supernet_checkpoint: str | None = None
    supernet_config: str | None = None
    search_config: str | None = None
    resume: bool = False
    verbose: bool = False
    out_given: bool = False
    train_workers_given: bool = False


def main_supernet_config(
    data: str,
    out: str,
    kind: str = "fcos",
    workers: int = 2,
    address: str | None = None,
    proxy: str = "digits",
    budget: str = "default",
) -> SupernetConfig:
    """The main job's super-net (see the README's main-job row for what it costs): the proxy's data and
    model, one schedule (``budget``: :data:`BUDGETS`). 20 % of the training images are the search split:
    held out of the super-net and of every standalone run it is compared with, and what candidates are
    scored on."""
    epochs, warmup, milestones = 4, 50, [3]
    if proxy == "scenes" and budget == "evidence":
        data_cfg, model_cfg = scenes_parts(data, kind, train_images=None, body_steps=None)
        epochs, warmup = EVIDENCE_EPOCHS, EVIDENCE_WARMUP_ITERS
        milestones = [EVIDENCE_EPOCHS - EVIDENCE_DECAY_EPOCHS]
    elif proxy == "scenes":
        data_cfg, model_cfg = scenes_parts(
            data, kind, train_images=SCENES_TRAIN_IMAGES, body_steps=SCENES_BODY_STEPS
        )
        epochs, milestones = SCENES_EPOCHS, [SCENES_EPOCHS - 1]
    else:
        data_cfg, model_cfg = digits_parts(data, kind)
    return SupernetConfig(
        data=data_cfg,
        model=model_cfg,
        optim=OptimConfig(epochs=epochs, lr=0.01, warmup_iters=warmup, milestones=milestones),
        run=RunConfig(
            name="supernet", storage_path=out, num_workers=workers, address=address, eval_every=epochs
        ),
        opanas=OPANASConfig(norm="gn"),
    )


def smoke_supernet_config(
    data: str,
    out: str,
    kind: str = "fcos",
    workers: int = 2,
    address: str | None = None,
    proxy: str = "digits",
) -> SupernetConfig:
    """The seconds-scale super-net of ``--smoke`` (also used by the other experiments' smoke modes): the
    main job's super-net under the smoke budget (``raynas/studies/smoke_budget.yaml``), with what only this
    job needs on top: 2 images per worker, a search split of 4 of the 16 images, one sub-net
    evaluated, and RetinaNet at 16 channels (FCOS's head needs 64). Scenes at 128 px (8 test images): at
    the budget's 96 px its smallest glyphs would be a pixel or two."""
    config = apply_yaml(main_supernet_config(data, out, kind, workers, address, proxy), SMOKE_BUDGET)
    overrides: dict = {
        "data": {"batch_size": 2, "search_fraction": 0.25},
        "model": {"out_channels": 64 if kind == "fcos" else 16},
        "opanas": {"eval_subnets": 1},
        "run": {"eval_every": 1},
    }
    if proxy == "scenes":
        from raynas.data.scenes import scenes_anchor_sizes

        overrides["data"].update(image_size=128, num_test=8)
        anchors = list(scenes_anchor_sizes(128)) if kind == "fcos" else None
        # the smoke's own seconds-scale body, at the recipe's file name (its data root is its own)
        overrides["model"].update(
            min_size=128, max_size=128, anchor_sizes=anchors, body_steps=None, backbone_weights="proxy"
        )
    return with_overrides(config, overrides, where="smoke_supernet_config")


def main_job_configs(job: MainJob) -> tuple[SupernetConfig, OPANASSearchConfig]:
    """The budget of each mode (see the README's main-job row for what the default costs), the config files
    laid over it, the job's own values over those."""
    if job.smoke:
        supernet = smoke_supernet_config(
            job.data, job.out, job.kind, job.train_workers, job.address, job.proxy
        )
        search = OPANASSearchConfig(population_size=4, generations=1, top_k=2)
    else:
        supernet = main_supernet_config(
            job.data, job.out, job.kind, job.train_workers, proxy=job.proxy, budget=job.budget
        )
        search = OPANASSearchConfig(population_size=10, generations=3, top_k=4, max_search_images=100)
        if job.paper:
            search = replace(search, population_size=50, generations=12, top_k=10, max_search_images=None)
    if job.supernet_config:
        supernet = load_yaml(SupernetConfig, job.supernet_config)
    if job.search_config:
        search = load_yaml(OPANASSearchConfig, job.search_config)
    return with_job_values(supernet, search, job)


def with_job_values(
    supernet: SupernetConfig, search: OPANASSearchConfig, job: MainJob
) -> tuple[SupernetConfig, OPANASSearchConfig]:
    """Flags given on the command line win over the config files; without a file, flags and their
    defaults decide. ``replace`` re-runs each config's own checks on the new values."""
    run_changes: dict = {}
    search_changes: dict = {}
    if job.out_given or not job.supernet_config:
        run_changes["storage_path"] = job.out
    if job.out_given or not job.search_config:
        search_changes["storage_path"] = job.out
    if not job.search_config:
        search_changes["name"] = "search"
    if job.gpu:
        run_changes["use_gpu"] = search_changes["use_gpu"] = True
    if job.address:
        run_changes["address"] = job.address
    if job.train_workers_given or not job.supernet_config:
        run_changes["num_workers"] = job.train_workers
    if job.scorers is not None or not job.search_config:
        search_changes["num_scorers"] = 2 if job.scorers is None else job.scorers
    supernet = replace(supernet, run=replace(supernet.run, **run_changes), neck=None)
    return supernet, replace(search, **search_changes)


def reference_config(supernet: SupernetConfig) -> TrainConfig:
    """The FPN detector trained standalone with the super-net's data, model and schedule."""
    return TrainConfig(
        data=supernet.data,
        model=supernet.model,
        optim=supernet.optim,
        run=replace(supernet.run, name="reference_fpn", eval_every=supernet.optim.epochs),
    )


def retrain_config(supernet: SupernetConfig, arch_config: dict) -> TrainConfig:
    """The full-training phase of the best architecture: the reference's recipe, the searched neck."""
    from raynas.models.build import searched_neck_spec

    return replace(
        reference_config(supernet),
        run=replace(supernet.run, name="retrain_opa_fpn", eval_every=supernet.optim.epochs),
        neck=searched_neck_spec(arch_config, supernet.opanas),
    )


def ratio_line(summary: pd.DataFrame, reference: dict | None, metric: str) -> tuple[str, float | None]:
    """How a random sub-net of the super-net compares with the FPN trained standalone (search split)."""
    rows = summary.set_index("strategy")
    if reference is None or "random" not in rows.index:
        return "sub-net / standalone ratio: not measured (needs the random strategy and the reference)", None
    subnet, standalone = float(rows.loc["random", "mean_" + metric]), reference[metric]
    ratio = subnet / standalone if standalone else float("nan")
    return (
        f"random sub-nets of the super-net: mean {metric} {100 * subnet:.1f} on the search split = "
        f"{ratio:.2f} x the standalone FPN's {100 * standalone:.1f} (same data and epochs)",
        ratio,
    )


@dataclass(frozen=True)
class CheckedConfigs:
    """The configs of a main job, every value and file checked before Ray starts."""

    supernet: SupernetConfig
    search: OPANASSearchConfig
    given_checkpoint: SupernetConfig | None  # the config stored in ``job.supernet_checkpoint``


def check_main_job(job: MainJob) -> CheckedConfigs:
    """The super-net and search configs and a given checkpoint's config, every value and file checked:
    called before Ray starts, so that a wrong one costs nothing."""
    from raynas.checkpoints import load_state
    from raynas.config import check_writable_folder
    from raynas.search.pool import supernet_config

    if job.smoke and job.paper:
        raise ConfigError("--smoke and --paper exclude each other; give one of them")
    if job.proxy not in PROXIES:
        raise ConfigError(f"--proxy must be one of {list(PROXIES)}, got {job.proxy!r}")
    if job.budget not in BUDGETS:
        raise ConfigError(f"--budget must be one of {list(BUDGETS)}, got {job.budget!r}")
    if job.budget == "evidence" and job.smoke:
        raise ConfigError(
            "--smoke has its own seconds-scale budget, on --proxy scenes too; "
            "drop --budget evidence (or --smoke)"
        )
    if job.budget == "evidence" and job.proxy != "scenes":
        raise ConfigError("--budget evidence is the scenes super-net's (digits has one); add --proxy scenes")
    if job.proxy == "scenes" and job.kind not in ONE_STAGE:
        raise ConfigError(
            f"--proxy scenes trains on the frozen body's cached outputs, which --kind {job.kind} cannot use "
            f"(its detector runs its own body); use --kind {' or '.join(ONE_STAGE)}, or --proxy digits"
        )
    if job.proxy != "digits" and (job.supernet_config or job.supernet_checkpoint):
        given = "--supernet-config" if job.supernet_config else "--supernet-checkpoint"
        raise ConfigError(
            f"--proxy {job.proxy} sets the super-net's data and model, and so does {given}; give one of them"
        )
    check_counts(
        job,
        {"train_workers": 1, "scorers": 1},
        {"train_workers": "run.num_workers", "scorers": "num_scorers"},
    )
    check_writable_folder(job.out, "--out")
    supernet_cfg, search_cfg = main_job_configs(job)
    if job.retrain and "evolution" not in search_cfg.strategies:
        raise ConfigError(
            f"--retrain trains the best evolved architecture, but the search runs only "
            f"{search_cfg.strategies}; add evolution to the search config's strategies, or drop --retrain"
        )
    checkpoint = job.supernet_checkpoint
    given_cfg = supernet_config(load_state(checkpoint), checkpoint) if checkpoint else None
    finished = Path(search_cfg.storage_path) / search_cfg.name / "evolution"
    if job.retrain and (finished / "summary.json").is_file():  # reused as it is: checked now
        best_evolved(finished / "best_arch.json", (given_cfg or supernet_cfg).opanas.num_nodes)
    return CheckedConfigs(supernet_cfg, search_cfg, given_cfg)


def run_main_job(job: MainJob, configs: CheckedConfigs) -> dict:
    """The main job with the configs of :func:`check_main_job`, in the Ray session the caller holds;
    prints its tables and returns (and writes to ``job.out/main_job.json``) its record."""
    from raynas.io import atomic_write_json
    from raynas.search.opanas import search_opanas
    from raynas.training.cluster import ensure_ray
    from raynas.training.standalone import evaluate_checkpoint, train
    from raynas.training.supernet import train_supernet

    ensure_ray(job.address)  # the caller's session, or one of its own
    started = time.perf_counter()
    times: dict[str, float] = {}
    supernet_cfg, search_cfg = configs.supernet, configs.search
    checkpoint = job.supernet_checkpoint
    if checkpoint is None:
        prepare_inputs(supernet_cfg, job.smoke)
        times["data_and_body_s"] = time.perf_counter() - started
        print(f"== super-net training ({supernet_cfg.optim.epochs} epochs, K={supernet_cfg.opanas.k}) ==")
        checkpoint = str(train_supernet(supernet_cfg).checkpoint_dir)
        times["supernet_s"] = time.perf_counter() - started - sum(times.values())
    else:  # the checkpoint's config, with the flags applied as they would be to a new super-net
        supernet_cfg = with_job_values(configs.given_checkpoint, search_cfg, job)[0]
    reference = None
    if job.reference:
        print(f"== standalone FPN reference ({supernet_cfg.optim.epochs} epochs, same data) ==")
        fpn = train(reference_config(supernet_cfg))
        reference = {
            **evaluate_checkpoint(fpn.checkpoint_dir, "search", search_cfg.max_search_images),
            "val": {k: fpn.metrics.get(k) for k in ("AP", "AP50", "AP75")},
        }
        times["reference_s"] = time.perf_counter() - started - sum(times.values())
    print(f"== search: {search_cfg.strategies}, {search_cfg.budget} evaluations each ==")
    outcome = search_opanas(
        checkpoint, search_cfg, resume=job.resume, verbose=1 if job.verbose else 0, address=job.address
    )
    times["search_s"] = time.perf_counter() - started - sum(times.values())
    pd.set_option("display.width", 160)
    summary = outcome["summary"]
    print("\n== strategies compared (Tune result tables) ==")
    print(summary.to_string(index=False))
    line, ratio = ratio_line(summary, reference, search_cfg.metric)
    print("\n" + line)
    for strategy, table in outcome["tables"].items():
        columns = [
            c for c in ("evaluation", "generation", "origin", "AP", "AP50", "neck_params") if c in table
        ]
        print(f"\n-- top 5 {strategy} --")
        print(table.sort_values(search_cfg.metric, ascending=False)[columns].head(5).to_string(index=False))
    run_dir = outcome["run_dir"]
    retrained = None
    if job.retrain:
        best = best_evolved(run_dir / "evolution" / "best_arch.json", supernet_cfg.opanas.num_nodes)
        print("\n== full training: best EA architecture vs the FPN reference (val) ==")
        result = train(retrain_config(supernet_cfg, best))
        retrained = {k: result.metrics.get(k) for k in ("AP", "AP50", "AP75")}
        rows = [
            {"model": "FPN (reference)", **(reference or {}).get("val", {})},
            {"model": "OPA-FPN (best EA)", **retrained},
        ]
        print(pd.DataFrame(rows).to_string(index=False))
        times["retrain_s"] = time.perf_counter() - started - sum(times.values())
    times["total_s"] = time.perf_counter() - started
    record = {
        "strategies": summary.to_dict("records"),
        "reference_fpn": reference,
        "subnet_to_standalone_ratio": ratio,
        "retrained_best_evolution": retrained,
        "supernet_checkpoint": checkpoint,
        "times_s": {k: round(v, 1) for k, v in times.items()},
    }
    atomic_write_json(Path(job.out) / "main_job.json", record)
    print(f"\nresults: {run_dir} (results.csv, best_arch.json/png per strategy, search_curves.png)")
    curves = Path(supernet_cfg.run.storage_path)
    print(f"training curves: tensorboard --logdir {curves} (a tensorboard/ folder in each run)")
    print(
        f"{times['total_s']:.0f} s in all: "
        + ", ".join(f"{k} {v:.0f}" for k, v in times.items() if k != "total_s")
    )
    return {**record, "run_dir": run_dir}


def best_evolved(path: Path, num_nodes: int) -> dict:
    """The best evolved architecture the search wrote (checked: a user may have edited the file)."""
    from raynas.spaces.base import arch_from_json
    from raynas.spaces.opanas import OPANASSpace

    space = OPANASSpace(num_nodes)
    try:
        return space.to_config(arch_from_json(space, path.read_text()))
    except ValueError as err:
        raise ConfigError(
            f"{path}: {err}; restore it, or move the search folder away to search again"
        ) from err
