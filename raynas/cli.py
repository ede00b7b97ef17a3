"""The ``raynas`` command. Each sub-command calls the same function an experiment script calls.

    raynas data digits --out data/digits
    raynas data scenes --out data/scenes [--no-context]
    raynas data levels --data data/scenes [--split val] [--anchor-sizes 4 8 16 24 44] [--json levels.json]
    raynas pretrain --data data/digits [--backbone resnet50]
    raynas train --config experiments/configs/baseline_fcos_r18.yaml
    raynas search opanas-supernet --config experiments/configs/supernet_smoke.yaml
    raynas search opanas --checkpoint runs/supernet/checkpoint_... [--config search.yaml] [--resume]
    raynas search fad --config experiments/configs/fad_smoke.yaml
    raynas search opanas-darts --config experiments/configs/opanas_darts_smoke.yaml

User errors (bad config, missing files, invalid architectures, unreachable clusters) print one
line that says what to fix and exit with status 2 instead of a traceback.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from raynas.config import load_yaml
from raynas.data.scene_layout import DEFAULT_LAYOUT, LAYOUTS
from raynas.errors import OneLineParser, run_main
from raynas.models.config import RECIPE_BODY_STEPS


def _data(args: argparse.Namespace) -> None:
    from raynas.data import generate_digits

    wanted = {"num_train": args.train, "num_val": args.val, "image_size": args.size, "seed": args.seed}
    fix = (
        "give another --out, or pass --replace to generate raynas's own digits there again (configs made "
        "for the old data will refuse it); your own COCO / VOC data need no generating: set data.format: "
        "coco or voc in the job config"
    )
    root = generate_digits(args.out, **wanted, replace=args.replace, what="--out", fix=fix)
    print(f"digits dataset written to {root}")


def _scenes(args: argparse.Namespace) -> None:
    from raynas.data.scenes import generate_scenes

    fix = (
        "give another --out, or pass --replace to generate raynas's own scenes there again (configs made "
        "for the old data will refuse it)"
    )
    root = generate_scenes(
        args.out, args.train, args.val, args.test, args.size, args.seed,
        context_small=not (args.no_context or args.no_context_small),
        context_large=not (args.no_context or args.no_context_large), layout=args.layout,
        replace=args.replace, what="--out", fix=fix,
    )  # fmt: skip
    print(f"scenes dataset written to {root}")


def _levels(args: argparse.Namespace) -> None:
    from pathlib import Path

    from raynas.config import ConfigError
    from raynas.data.level_stats import LEVELS, format_statistics, level_statistics
    from raynas.io import atomic_write_json

    if args.anchor_sizes is not None and len(args.anchor_sizes) != len(LEVELS):
        raise ConfigError(f"--anchor-sizes needs {len(LEVELS)} sizes (P3..P7), got {args.anchor_sizes}")
    annotations = args.annotations or Path(args.data) / "annotations" / f"instances_{args.split}.json"
    stats = level_statistics(annotations, args.anchor_sizes, args.min_size, args.max_size)
    print(format_statistics(stats))
    if args.json:
        atomic_write_json(args.json, stats)
        print(f"written to {args.json}")


def _layout_of(root: str) -> str:
    """The scenes layout of the data at ``root`` (its provenance marker's; v1 where it names none)."""
    from raynas.data.provenance import read_marker

    marker = read_marker(root) if Path(root).is_dir() else None
    return (marker or {}).get("settings", {}).get("layout", "v1")


def _proxy_of(root: str) -> str:
    """Which embedded proxy's crops a body for the data at ``root`` learns from: the generator named by
    the folder's provenance marker (scenes or digits), digits where there is none yet."""
    from raynas.data.provenance import read_marker

    marker = read_marker(root) if Path(root).is_dir() else None
    return "scenes" if marker is not None and marker["generator"] == "scenes" else "digits"


def _pretrain(args: argparse.Namespace) -> None:
    from raynas.models.config import PROXY_BODIES, proxy_weights_path
    from raynas.training.pretrain import BODIES, PretrainConfig, check_body, context_settings, pretrain_body

    steps = {} if args.steps is None else {"steps": args.steps}
    source = args.source or _proxy_of(args.data)
    body = args.body or PROXY_BODIES[source]
    check_body(body, source)
    layout = context_settings(_layout_of(args.data)) if BODIES[body] else {}
    cfg = PretrainConfig(
        backbone=args.backbone, source=source, seed=args.seed, **BODIES[body], **layout, **steps
    )
    out = args.out or proxy_weights_path(args.data, args.backbone, body, args.steps)
    record = pretrain_body(cfg, out)
    print(f"pretrained {args.backbone} body: {out} (held-out accuracy {record['heldout_accuracy']:.3f})")


def _train(args: argparse.Namespace) -> None:
    from raynas.training.config import TrainConfig
    from raynas.training.standalone import train

    cfg = load_yaml(TrainConfig, args.config)
    _override_address(cfg, args)
    result = train(cfg, resume_from=args.resume)
    print(f"checkpoint: {result.checkpoint_dir}\nmetrics: {result.metrics}")


def _opanas_supernet(args: argparse.Namespace) -> None:
    from raynas.training.config import SupernetConfig
    from raynas.training.supernet import train_supernet

    cfg = load_yaml(SupernetConfig, args.config)
    _override_address(cfg, args)
    result = train_supernet(cfg, resume_from=args.resume)
    print(f"super-net checkpoint: {result.checkpoint_dir}\nmetrics: {result.metrics}")


def _opanas_search(args: argparse.Namespace) -> None:
    from raynas.search.opanas import search_opanas
    from raynas.search.opanas_config import OPANASSearchConfig

    cfg = load_yaml(OPANASSearchConfig, args.config) if args.config else OPANASSearchConfig()
    outcome = search_opanas(args.checkpoint, cfg, resume=args.resume, address=args.address)
    print(outcome["summary"].to_string(index=False))
    print(f"results: {outcome['run_dir']}")


def _fad_search(args: argparse.Namespace) -> None:
    from raynas.training.config import DartsConfig
    from raynas.training.darts import search_fad

    cfg = load_yaml(DartsConfig, args.config)
    _override_address(cfg, args)
    result = search_fad(cfg, resume_from=args.resume)
    print(f"genotype: {result.genotype_path}\ncheckpoint: {result.checkpoint_dir}")


def _opanas_darts(args: argparse.Namespace) -> None:
    from raynas.training.config import OPANASDartsConfig
    from raynas.training.darts import search_opanas_darts

    cfg = load_yaml(OPANASDartsConfig, args.config)
    _override_address(cfg, args)
    result = search_opanas_darts(cfg, resume_from=args.resume)
    print(f"architecture: {result.genotype_path}\ncheckpoint: {result.checkpoint_dir}")


def _override_address(cfg, args: argparse.Namespace) -> None:
    if getattr(args, "address", None):
        cfg.run.address = args.address


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="raynas", description="NAS for object detectors on Ray")
    commands = parser.add_subparsers(dest="command", required=True)

    data = commands.add_parser("data", help="datasets").add_subparsers(dest="dataset", required=True)
    digits = data.add_parser("digits", help="generate the embedded multi-scale digits dataset")
    digits.add_argument("--out", required=True)
    digits.add_argument("--train", type=int, default=1000)
    digits.add_argument("--val", type=int, default=200)
    digits.add_argument("--size", type=int, default=128)
    digits.add_argument("--seed", type=int, default=0)
    digits.add_argument(
        "--replace", action="store_true", help="replace a dataset in --out generated with other settings"
    )
    digits.set_defaults(func=_data)
    scenes = data.add_parser(
        "scenes", help="generate the scenes proxy: objects on every pyramid level, context rules"
    )
    scenes.add_argument("--out", required=True)
    scenes.add_argument("--train", type=int, default=1000)
    scenes.add_argument("--val", type=int, default=200)
    scenes.add_argument("--test", type=int, default=200)
    scenes.add_argument("--size", type=int, default=320)
    scenes.add_argument("--seed", type=int, default=0)
    scenes.add_argument("--no-context", action="store_true", help="both context rules off (the control)")
    scenes.add_argument("--no-context-small", action="store_true", help="small glyphs: no zone rule")
    scenes.add_argument("--no-context-large", action="store_true", help="large glyphs: no mark rule")
    scenes.add_argument(
        "--layout",
        default=DEFAULT_LAYOUT,
        choices=list(LAYOUTS),
        help=f"how zones and glyphs are laid out (default {DEFAULT_LAYOUT}, the proxy's; the others are its "
        "earlier tries: docs/proxy.md)",
    )
    scenes.add_argument(
        "--replace", action="store_true", help="replace a dataset in --out generated with other settings"
    )
    scenes.set_defaults(func=_scenes)
    levels = data.add_parser(
        "levels", help="what an FCOS detector sees of a COCO split: positives per level, sizes, classes"
    )
    source = levels.add_mutually_exclusive_group(required=True)
    source.add_argument("--data", help="dataset root (reads ROOT/annotations/instances_SPLIT.json)")
    source.add_argument("--annotations", help="a COCO instances JSON file")
    levels.add_argument("--split", default="train")
    levels.add_argument(
        "--anchor-sizes", type=float, nargs="+", default=None,
        help="FCOS anchor size per level P3..P7 (default: the scenes recipe for scenes, else torchvision's "
        "scaled to the images)",
    )  # fmt: skip
    levels.add_argument("--min-size", type=int, default=None, help="detector resize (default: image size)")
    levels.add_argument("--max-size", type=int, default=None)
    levels.add_argument("--json", default=None, help="also write the statistics to this JSON file")
    levels.set_defaults(func=_levels)

    pretrain = commands.add_parser(
        "pretrain", help="pretrain a ResNet body on proxy crops (the proxy's ImageNet pretraining)"
    )
    pretrain.add_argument(
        "--data", default="data/digits", help="proxy data root; the body goes to DATA/pretrained/"
    )
    pretrain.add_argument(
        "--source",
        choices=["digits", "scenes"],
        default=None,
        help="whose crops (default: the proxy the --data folder holds, digits if none)",
    )
    pretrain.add_argument(
        "--body",
        choices=["glyphs", "context"],
        default=None,
        help="glyph crops only, or with the dense context task too (scenes; default: digits glyphs, scenes "
        "context, the body backbone_weights: proxy names)",
    )
    pretrain.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    pretrain.add_argument(
        "--steps", type=int, default=None, help=f"AdamW steps of batch 64 (default {RECIPE_BODY_STEPS})"
    )
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument(
        "--out",
        default=None,
        help="state dict path (default DATA/pretrained/BACKBONE[-BODY][-STEPSsteps].pt, where a job on DATA "
        "with backbone_weights: proxy and model.body_steps: STEPS looks)",
    )
    pretrain.set_defaults(func=_pretrain)

    train = commands.add_parser("train", help="train a detector standalone on Ray Train")
    train.add_argument("--config", required=True)
    train.add_argument("--resume", default=None, help="checkpoint directory to continue from")
    train.add_argument("--address", default=None, help="Ray cluster address (default: local)")
    train.set_defaults(func=_train)

    search = commands.add_parser("search", help="architecture searches").add_subparsers(
        dest="search", required=True
    )
    supernet = search.add_parser("opanas-supernet", help="train the OPANAS super-net (Ray Train)")
    supernet.add_argument("--config", required=True)
    supernet.add_argument("--resume", default=None)
    supernet.add_argument("--address", default=None)
    supernet.set_defaults(func=_opanas_supernet)

    opanas = search.add_parser("opanas", help="evolutionary / random sub-net search (Ray Tune)")
    opanas.add_argument("--checkpoint", required=True, help="super-net checkpoint directory")
    opanas.add_argument("--config", default=None, help="YAML OPANASSearchConfig")
    opanas.add_argument("--resume", action="store_true", help="continue an interrupted search")
    opanas.add_argument("--address", default=None)
    opanas.set_defaults(func=_opanas_search)

    fad = search.add_parser("fad", help="FAD first-order DARTS head search (Ray Train)")
    fad.add_argument("--config", required=True)
    fad.add_argument("--resume", default=None)
    fad.add_argument("--address", default=None)
    fad.set_defaults(func=_fad_search)
    darts = search.add_parser(
        "opanas-darts", help="DARTS / Fair DARTS on the OPANAS neck DAG, the Table 6 baselines (Ray Train)"
    )
    darts.add_argument("--config", required=True)
    darts.add_argument("--resume", default=None)
    darts.add_argument("--address", default=None)
    darts.set_defaults(func=_opanas_darts)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return run_main("raynas", lambda: args.func(args))


if __name__ == "__main__":
    sys.exit(main())
