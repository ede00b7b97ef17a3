"""Pictures of results: an OPANAS architecture as a DAG, FAD cells, and search curves (PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

PATH_COLOURS = {
    "top_down": "tab:blue",
    "bottom_up": "tab:orange",
    "scale_equalizing": "tab:green",
    "fusing_splitting": "tab:red",
    "skip": "tab:gray",
}


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)
    return path


def draw_dag(
    edges: list[tuple[int, int, str]], num_nodes: int, path: str | Path, title: str, node_names=None
) -> Path:
    """Nodes on a line, each edge an arc labelled with its operation (``none`` edges omitted)."""
    names = node_names or ["P"] + [f"x{j}" for j in range(1, num_nodes + 1)] + ["O"]
    fig, ax = plt.subplots(figsize=(2.0 + 1.6 * len(names), 4.2))
    for index, name in enumerate(names):
        ax.add_patch(plt.Circle((index, 0), 0.22, color="white", ec="black", zorder=3))
        ax.text(index, 0, name, ha="center", va="center", zorder=4, fontsize=10)
    for k, (i, j, op) in enumerate(edges):
        if op == "none":
            continue
        height = 0.35 * (j - i) * (1 if k % 2 == 0 else -1)
        xs = [i + 0.2, (i + j) / 2, j - 0.2]
        ys = [0.1 * (height > 0) - 0.1 * (height < 0), height, 0]
        colour = PATH_COLOURS.get(op, "tab:purple")
        ax.plot(xs, ys, color=colour, lw=1.6)
        ax.annotate(
            "", xy=(j - 0.2, 0), xytext=(xs[1], ys[1]), arrowprops={"arrowstyle": "->", "color": colour}
        )
        ax.text(xs[1], ys[1], op, fontsize=7, ha="center", va="bottom" if height > 0 else "top", color=colour)
    ax.set_xlim(-0.6, len(names) - 0.4)
    ax.set_ylim(-0.35 * num_nodes - 0.5, 0.35 * num_nodes + 0.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(title)
    return _save(fig, path)


def draw_opanas_arch(arch: Any, path: str | Path, title: str = "OPA-FPN") -> Path:
    """The sub-net DAG: input pyramid P, intermediate nodes x1..xN, output O = sum of live nodes."""
    from raynas.spaces.opanas.space import live_nodes

    edges = [(i, j, op) for (i, j), op in arch.items()]
    live = live_nodes(arch)
    out = arch.num_nodes + 1
    edges += [(j, out, "sum") for j in range(1, arch.num_nodes + 1) if live[j]]
    return draw_dag(edges, arch.num_nodes, path, title)


def plot_search_curves(tables: dict[str, pd.DataFrame], path: str | Path, metric: str = "AP") -> Path:
    """Best-so-far ``metric`` against the number of evaluations, one line per strategy."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for strategy, df in tables.items():
        if df.empty:
            continue
        values = df[metric].astype(float).fillna(0.0).cummax()
        ax.plot(range(1, len(values) + 1), values, label=f"{strategy} (best {values.iloc[-1]:.3f})")
    ax.set_xlabel("evaluations")
    ax.set_ylabel(f"best {metric} so far")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def plot_pareto(
    tables: dict[str, pd.DataFrame], path: str | Path, metric: str = "AP", cost: str = "neck_flops"
) -> Path:
    """``metric`` against ``cost`` for every evaluated candidate, each strategy's Pareto front joined."""
    fig, ax = plt.subplots(figsize=(6, 4))
    for (strategy, df), color in zip(tables.items(), plt.rcParams["axes.prop_cycle"].by_key()["color"]):
        if df.empty or cost not in df:
            continue
        x, y = df[cost].astype(float) / 1e9, df[metric].astype(float)
        ax.scatter(x, y, s=10, alpha=0.35, color=color)
        if "pareto_front" in df:
            front = df["pareto_front"].astype(bool)
            order = x[front].sort_values().index
            ax.plot(x[order], y[order], "o-", color=color, label=f"{strategy} front ({int(front.sum())})")
    ax.set_xlabel(f"{cost} (G)")
    ax.set_ylabel(metric)
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, path)


def draw_fad_genotype(genotype: Any, path: str | Path) -> Path:
    """The FAD cells side by side: group 1 (box regression) and group 2 (classification) of a detection
    head, or the one group of a mask head."""
    from raynas.spaces.fad import EDGES

    groups = genotype.groups
    fig, axes = plt.subplots(1, len(groups), figsize=(5.5 * len(groups), 3.6), squeeze=False)
    roles = ("box regression", "classification") if len(groups) == 2 else ("mask head",)
    for g, (ax, ops) in enumerate(zip(axes[0], groups)):
        names = ["in", "n1", "n2", "n3"]
        for index, name in enumerate(names):
            ax.add_patch(plt.Circle((index, 0), 0.2, color="white", ec="black", zorder=3))
            ax.text(index, 0, name, ha="center", va="center", zorder=4, fontsize=9)
        for k, ((i, j), op) in enumerate(zip(EDGES, ops)):
            if op == "none":
                continue
            height = 0.3 * (j - i) * (1 if k % 2 == 0 else -1)
            ax.plot([i + 0.18, (i + j) / 2, j - 0.18], [0, height, 0], color="tab:blue", lw=1.4)
            ax.text((i + j) / 2, height, op, fontsize=7, ha="center", va="bottom" if height > 0 else "top")
        ax.set_xlim(-0.5, 3.5)
        ax.set_ylim(-1.1, 1.1)
        ax.axis("off")
        ax.set_title(f"group {g + 1} ({roles[g]})")
    return _save(fig, path)


def plot_arch_weights(weights: Any, candidates: Any, path: str | Path, title: str = "") -> Path:
    """A heatmap of architecture weights: one row per edge (all leading axes flattened), one column per
    candidate, the value in each cell (what DARTS's derivation reads)."""
    rows = weights.detach().float().cpu().reshape(-1, weights.shape[-1]).numpy()
    fig, ax = plt.subplots(figsize=(0.55 * rows.shape[1] + 2.5, 0.3 * rows.shape[0] + 1.5))
    image = ax.imshow(rows, cmap="viridis", aspect="auto", vmin=0.0)
    ax.set_xticks(range(rows.shape[1]), list(candidates), rotation=60, ha="right", fontsize=7)
    ax.set_yticks(range(rows.shape[0]), [f"edge {i}" for i in range(rows.shape[0])], fontsize=7)
    ax.set_title(title, fontsize=9)
    fig.colorbar(image, ax=ax, fraction=0.04)
    return _save(fig, path)
