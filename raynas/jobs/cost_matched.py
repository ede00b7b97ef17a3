"""The cost-matched arms of OPANAS's evidence (issue 27): evolution under torchvision's FPN's neck FLOPs (the
search's own constraint) and the NSGA-II front's member nearest those FLOPs, searched with the main job's
settings on its super-net, a finished search read back instead of run again
(``raynas.jobs.neck_evidence`` trains them as arms).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from raynas.config import ConfigError, from_dict
from raynas.search.opanas_config import PARETO_COST, OPANASSearchConfig
from raynas.search.search_folder import read_search_info
from raynas.spaces.opanas import OPANASSpace
from raynas.training.config import SupernetConfig

if TYPE_CHECKING:
    from raynas.jobs.neck_evidence import EvidenceSettings, Inputs

FLOPS_MATCHED_SEARCH, PARETO_SEARCH = "search_flops_matched", "search_pareto"  # folders under --out
#: draws per candidate under the FPN's FLOPs: 0.08 % of uniform draws pass it (the digits main job's and the
#: smoke super-net alike), so the searchers' default of 100 gives up on nearly every random candidate; at
#: 20,000 one gives up with p ~ 1e-7, and a draw costs ~50 us (NeckCost counts by parts)
FLOPS_MATCHED_RETRIES = 20_000


def fpn_neck_flops(supernet: SupernetConfig, num_classes: int) -> int:
    """Torchvision's FPN's neck FLOPs counted as the search's constraint counts a candidate's
    (:class:`~raynas.search.neck_cost.NeckCost`: the super-net's detector, width and image size, the reference
    input of :func:`~raynas.search.neck_cost.reference_features`): the FLOPs-matched search's limit."""
    from raynas.search.neck_cost import detector_cost

    return detector_cost(supernet.model, None, supernet.head, num_classes).neck_flops


def main_search_config(search_dir: Path) -> OPANASSearchConfig:
    """The main job's search settings (its ``search/run_info.json``), which the cost-matched searches
    repeat with their own strategy and limit."""
    path = search_dir / "search" / "run_info.json"
    if not path.is_file():
        raise ConfigError(
            f"--search-dir {str(search_dir)!r} has no search/run_info.json (the main job's search settings, "
            "which the cost-matched searches repeat); run the main job to the end first, or pass "
            "--no-cost-matched"
        )
    info = read_search_info(path)
    try:
        return from_dict(OPANASSearchConfig, info["config"], where=str(path))
    except ValueError as err:  # ConfigError is one
        raise ConfigError(f"{err}; restore it, or run the main job's search again") from err


def cost_matched_searches(
    search: OPANASSearchConfig, fpn_flops: int, out: Path, use_gpu: bool, with_pareto: bool
) -> list[OPANASSearchConfig]:
    """The main job's search settings for the cost-matched arms: evolution under the FPN's neck FLOPs
    (the search's own constraint), and with ``with_pareto`` NSGA-II with the main job's limits (none by
    default), so that its front spans costs on both sides of the FPN's."""
    limit = fpn_flops if search.max_neck_flops is None else min(fpn_flops, search.max_neck_flops)
    common = {"storage_path": str(out), "use_gpu": use_gpu}
    result = [
        replace(
            search,
            strategies=["evolution"],
            max_neck_flops=limit,
            max_retries=max(search.max_retries, FLOPS_MATCHED_RETRIES),
            name=FLOPS_MATCHED_SEARCH,
            **common,
        )
    ]
    if with_pareto:
        result.append(replace(search, strategies=["pareto"], name=PARETO_SEARCH, **common))
    return result


def nearest_front_member(table: pd.DataFrame, flops: float, metric: str) -> pd.Series:
    """The row of the Pareto front (``pareto_front``) whose neck FLOPs are nearest ``flops``; of two as
    near, the one with the higher ``metric``, then the cheaper one."""
    front = table[table["pareto_front"].astype(bool)]
    if front.empty:
        raise RuntimeError("the NSGA-II search's result table marks no Pareto front; run it again")
    order = pd.DataFrame(
        {
            "distance": (front[PARETO_COST].astype(float) - flops).abs(),
            "metric": -front[metric].astype(float).fillna(-np.inf),
            "cost": front[PARETO_COST].astype(float),
        },
        index=front.index,
    ).sort_values(["distance", "metric", "cost"], kind="stable")
    return front.loc[order.index[0]]


def finished_search(cfg: OPANASSearchConfig, checkpoint: Path) -> dict[str, pd.DataFrame] | None:
    """The tables of a search that finished in an earlier run (its settings checked by the search's own
    folder guard), so a re-run does not start the scorer actors for nothing; ``None`` if not finished."""
    from raynas.search.search_folder import guard_search_folder

    run_dir = Path(cfg.storage_path).resolve() / cfg.name
    if not (run_dir / "run_info.json").is_file():
        return None
    finished = guard_search_folder(run_dir, cfg, str(checkpoint.resolve()), resume=True)
    if set(finished) != set(cfg.strategies):
        return None
    return {strategy: table for strategy, (table, _) in finished.items()}


def cost_matched_archs(inputs: Inputs, settings: EvidenceSettings) -> dict[str, dict]:
    """The architectures of the cost-matched arms, searching for them first where no search has."""
    from raynas.search.opanas import search_opanas

    space = OPANASSpace(num_nodes=inputs.supernet.opanas.num_nodes)
    metric = inputs.search.metric
    tables = {} if inputs.pareto is None else {"pareto": inputs.pareto}
    configs = cost_matched_searches(
        inputs.search, inputs.fpn_flops, settings.out, settings.gpu, inputs.pareto is None
    )
    for cfg in configs:
        found = finished_search(cfg, inputs.checkpoint)
        if found is None:
            print(f"== cost-matched search: {cfg.strategies[0]}, {cfg.budget} evaluations ==", flush=True)
            found = search_opanas(inputs.checkpoint, cfg, resume=True, address=settings.address)["tables"]
        tables.update(found)
    evolved = tables["evolution"]
    best = evolved.loc[evolved[metric].astype(float).fillna(-1).idxmax()]  # the search's own rule
    nearest = nearest_front_member(tables["pareto"], inputs.fpn_flops, metric)
    print(
        f"cost-matched arms: FPN neck {inputs.fpn_flops / 1e9:.4f} GFLOPs; evolution under it "
        f"{best[PARETO_COST] / 1e9:.4f}; NSGA-II front member nearest it {nearest[PARETO_COST] / 1e9:.4f}"
    )
    return {
        "flops_matched": space.to_config(space.from_config(best.to_dict())),
        "pareto_nearest": space.to_config(space.from_config(nearest.to_dict())),
    }
