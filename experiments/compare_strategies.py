"""Compare search strategies across one or more result directories (pandas table + PNG).

    python experiments/compare_strategies.py runs/opanas_ea/search [more/search/dirs ...] [--out cmp.png]

A result directory is what ``search_opanas`` writes: one sub-folder per strategy with results.csv.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

from raynas.errors import run_main
from raynas.search.run import summarize
from raynas.viz import plot_search_curves


def load_tables(directories: list[str]) -> dict[str, pd.DataFrame]:
    tables = {}
    for directory in directories:
        found = sorted(Path(directory).glob("*/results.csv"))
        if not found:
            raise FileNotFoundError(
                f"{directory!r} holds no <strategy>/results.csv; pass a search output folder"
            )
        for csv in found:
            label = csv.parent.name if len(directories) == 1 else f"{Path(directory).name}/{csv.parent.name}"
            tables[label] = pd.read_csv(csv)
    return tables


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("directories", nargs="+")
    parser.add_argument("--out", default="strategies.png")
    parser.add_argument("--metric", default="AP")
    args = parser.parse_args(argv)
    return run_main("compare_strategies", lambda: compare(args))


def compare(args: argparse.Namespace) -> int:
    tables = load_tables(args.directories)
    missing = sorted(label for label, df in tables.items() if args.metric not in df)
    if missing:
        columns = sorted(c for c in next(iter(tables.values())).columns if c.startswith("AP"))
        raise ValueError(
            f"--metric {args.metric!r} is not a column of the results of {missing}; metric columns: {columns}"
        )
    rows = []
    for label, df in tables.items():
        wall = float(df["time_total_s"].sum()) if "time_total_s" in df else float("nan")
        rows.append({"strategy": label, **summarize(df, wall, args.metric)})
    print(pd.DataFrame(rows).to_string(index=False))
    print(f"plot: {plot_search_curves(tables, args.out, args.metric)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
