"""Can any level of the frozen body read the cue that an object's label depends on? (issue 26)

    python experiments/proxy_context_probe.py              # the calibration's body and data (seconds)
    python experiments/proxy_context_probe.py --smoke      # tiny data and body (CI)

A neck path can only bring a label's cue to a pyramid level if some body level carries it at the object
(``raynas.studies.context_probe``): for each body level (C3, C4, C5) a logistic regression from the
cached feature vector at each glyph's centre to its tag is fitted on the training images and scored on
val, per placement role: small glyphs (tag = the zone's type, with the context rule on), medium ones (tag
= their own colour, a local cue) and large ones (tag = the mark at their corner); glyph identity likewise.
``--control`` probes the same body on the context-off data as well (every tag a local cue). The body and
data are the calibration recipe's (``configs/scenes_calibration.yaml``). Outputs in ``--out``:
``probe.json`` and ``probe.md``.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import replace
from pathlib import Path

from raynas.config import ConfigError, apply_yaml, load_yaml
from raynas.data.scene_layout import DEFAULT_LAYOUT, LAYOUTS
from raynas.errors import OneLineParser
from raynas.io import atomic_write_json, atomic_write_text
from raynas.jobs.entry import run_experiment
from raynas.jobs.proxies import SMOKE_PRETRAIN_STEPS
from raynas.studies.recipes import SMOKE_BUDGET
from raynas.training.config import TrainConfig

RECIPE = Path(__file__).parent / "configs" / "scenes_calibration.yaml"


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", default=None, help="scenes data root (default data/scenes)")
    parser.add_argument(
        "--out", default=None, help="where probe.json / .md go (default runs/proxy_context_probe[_BODY])"
    )
    parser.add_argument(
        "--body", default="context", choices=["glyphs", "context"], help="which pretrained scenes body"
    )
    parser.add_argument(
        "--layout",
        default=DEFAULT_LAYOUT,
        choices=list(LAYOUTS),
        help="the scenes layout of --data (docs/proxy.md)",
    )
    parser.add_argument("--control", action="store_true", help="probe the context-off data too")
    parser.add_argument("--smoke", action="store_true", help="tiny data and body (CI)")
    return parser


def recipe(data: str, smoke: bool, body: str = "context", layout: str = DEFAULT_LAYOUT) -> TrainConfig:
    """The calibration's data, frozen body and cache settings (the probe needs no neck or schedule)."""
    from raynas.models.config import proxy_weights_path

    cfg = load_yaml(TrainConfig, RECIPE)
    if smoke:
        cfg = apply_yaml(cfg, SMOKE_BUDGET)
        cfg = replace(cfg, data=replace(cfg.data, num_test=8, image_size=128),
                      model=replace(cfg.model, min_size=128, max_size=128))  # fmt: skip
    return replace(
        cfg,
        data=replace(cfg.data, root=data, scenes_layout=layout),
        model=replace(cfg.model, backbone_weights=proxy_weights_path(data, cfg.model.backbone, body)),
    )


def probe(cfg: TrainConfig, smoke: bool, body: str = "context") -> dict:
    """Data, body (``cfg``'s weights, pretrained as ``body`` where missing) and caches made where missing;
    the probe's accuracies for tags and glyphs."""
    from raynas.studies.context_probe import category_names, probe_accuracy, probe_set
    from raynas.training.inputs import ensure_body_features, ensure_inputs
    from raynas.training.pretrain import ensure_proxy_weights

    # a seconds-scale body exercises every part with --smoke
    steps = SMOKE_PRETRAIN_STEPS if smoke else None
    layout = cfg.data.scenes_layout
    ensure_proxy_weights(
        cfg.model.backbone_weights, cfg.model.backbone, "scenes", body, steps, layout, smoke=smoke
    )
    ensure_inputs(cfg, features=False)
    caches = ensure_body_features(cfg)
    names = category_names(Path(cfg.data.root) / "annotations" / "instances_train.json")
    train, val = probe_set(caches["train"], names), probe_set(caches["val"], names)
    return {target: probe_accuracy(train, val, target) for target in ("tag", "glyph")}


def markdown(results: dict[str, dict]) -> str:
    lines = ["# Which body level carries each label cue? (held-out accuracy, %)", ""]
    for data, by_target in results.items():
        for target, by_role in by_target.items():
            levels = sorted({k for row in by_role.values() for k in row if k.startswith("C")})
            lines += [f"## {data}: {target}", "", "| role | objects (fit / held out) | chance | "
                      + " | ".join(levels) + " |", "|---" * (3 + len(levels)) + "|"]  # fmt: skip
            for role, row in by_role.items():
                cells = " | ".join(f"{100 * row[level]:.1f}" for level in levels)
                lines.append(
                    f"| {role} | {row['fit']} / {row['held_out']} | {100 * row['chance']:.1f} | {cells} |"
                )
            lines.append("")
    return "\n".join(lines)


def check(args: argparse.Namespace) -> tuple[str, Path, TrainConfig]:
    """The data root, the output folder and the recipe, checked before anything is made."""
    data = args.data or ("data/scenes_smoke" if args.smoke else "data/scenes")
    out = Path(args.out or "runs/proxy_context_probe" + ("" if args.body == "glyphs" else f"_{args.body}"))
    if out.exists() and not out.is_dir():
        raise ConfigError(f"--out {str(out)!r} is a file; give a folder")
    return data, out, recipe(data, args.smoke, args.body, args.layout)


def run(args: argparse.Namespace, checked: tuple[str, Path, TrainConfig]) -> None:
    data, out, base = checked
    results = {"context on": probe(base, args.smoke, args.body)}
    if args.control:  # the same images labelled by local cues; the main data's body
        off = replace(
            base.data, root=f"{data.rstrip('/')}_context_off", context_small=False, context_large=False
        )
        results["context off"] = probe(replace(base, data=off), args.smoke, args.body)
    atomic_write_json(out / "probe.json", results)
    atomic_write_text(out / "probe.md", markdown(results))
    print((out / "probe.md").read_text())


def main(argv: list[str] | None = None) -> int:
    return run_experiment("proxy_context_probe", build_parser(), argv, check, run, uses_ray=False)


if __name__ == "__main__":
    sys.exit(main())
