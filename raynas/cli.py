"""The ``raynas`` command. Each sub-command calls the same function an experiment script calls.

    raynas data digits --out data/digits
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

from raynas.config import load_yaml
from raynas.errors import run_main


def _data(args: argparse.Namespace) -> None:
    from raynas.data import generate_digits
    from raynas.data.digits import check_digits_settings

    wanted = {"num_train": args.train, "num_val": args.val, "image_size": args.size, "seed": args.seed}
    if not args.replace:
        fix = "pass --replace to generate them again there (configs made for the old data will refuse it)"
        check_digits_settings(args.out, wanted, "--out", fix + ", or give another --out")
    root = generate_digits(args.out, **wanted)
    print(f"digits dataset written to {root}")


def _pretrain(args: argparse.Namespace) -> None:
    from raynas.models.config import proxy_weights_path
    from raynas.models.pretrain import PretrainConfig, pretrain_body

    steps = {} if args.steps is None else {"steps": args.steps}
    cfg = PretrainConfig(backbone=args.backbone, seed=args.seed, **steps)
    out = args.out or proxy_weights_path(args.data, args.backbone)
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
    from raynas.search.opanas import OPANASSearchConfig, search_opanas

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
    parser = argparse.ArgumentParser(prog="raynas", description="NAS for object detectors on Ray")
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

    pretrain = commands.add_parser(
        "pretrain", help="pretrain a ResNet body on digit crops (the proxy's ImageNet pretraining)"
    )
    pretrain.add_argument(
        "--data", default="data/digits", help="digits root; the body goes to DATA/pretrained/"
    )
    pretrain.add_argument("--backbone", default="resnet18", choices=["resnet18", "resnet34", "resnet50"])
    pretrain.add_argument("--steps", type=int, default=None, help="AdamW steps of batch 64 (default 700)")
    pretrain.add_argument("--seed", type=int, default=0)
    pretrain.add_argument("--out", default=None, help="state dict path (default DATA/pretrained/BACKBONE.pt)")
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
