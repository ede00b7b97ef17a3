"""``--smoke`` and ``--paper`` of the FAD experiments: presets that fill in the flags a user left out.

A flag given on the command line always wins (``--smoke --seeds 2`` runs two seeds); a preset fills the
rest, then the script's defaults. The two presets exclude each other.
"""

from __future__ import annotations

import argparse

from raynas.config import ConfigError

#: the FAD experiments' schedule flags and their defaults, and what --paper fills in (Sec. 4: c' = 96,
#: 12-epoch search and retraining schedules); each script has its own --smoke preset
FAD_DEFAULTS = {"seeds": 3, "search_epochs": 2, "epochs": 4, "c_prime": 24}
FAD_PAPER = {"c_prime": 96, "search_epochs": 12, "epochs": 12}


def fill_in(args: argparse.Namespace, defaults: dict, smoke: dict, paper: dict) -> None:
    """Set each flag of ``defaults`` still ``None``: from the preset switched on, else its default."""
    if args.smoke and args.paper:
        raise ConfigError("--smoke and --paper exclude each other; give one of them")
    preset = smoke if args.smoke else paper if args.paper else {}
    for name, default in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, preset.get(name, default))
