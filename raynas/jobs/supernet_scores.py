"""Super-net scores of a fixed set of architectures whose standalone AP is measured: what OPANAS's Table 5
(which super-net ranks?) and the strategy comparison's common yardstick are computed from. The set is a
``rank_correlation.csv``: v2 (issue 27) writes the mean over seeds as ``standalone_AP`` and each seed's AP
as ``standalone_AP_seed<k>``; v1 wrote one seed's as ``standalone_AP``.

The super-nets are the main job's (:mod:`raynas.jobs.main_job`) with ``OPANASConfig`` switches changed.
"""

from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from raynas.config import ConfigError
from raynas.io import atomic_write_text
from raynas.jobs.main_job import MainJob, main_job_configs
from raynas.studies.tables import none_as_written, read_table
from raynas.training.config import SupernetConfig

METRIC = "AP"
#: super-net variant -> OPANASConfig switches (Table 5: sampling rule x edge importance; ``fair_gamma_all``
#: is ours: fair sampling over all six paths)
VARIANTS: dict[str, dict] = {
    "fair_gamma": {"sampling": "fair", "gamma": True},
    "fair_nogamma": {"sampling": "fair", "gamma": False},
    "uniform_gamma": {"sampling": "uniform", "gamma": True},
    "uniform_nogamma": {"sampling": "uniform", "gamma": False},
    "fair_gamma_all": {"sampling": "fair", "gamma": True, "train_paths": "all", "k": 6},
}
NUM_NODES = 5  # the paper's N


def variant_config(name: str, job: MainJob) -> SupernetConfig:
    """The main job's super-net with the variant's switches, in its own run folder."""
    cfg, _ = main_job_configs(job)
    return replace(
        cfg,
        opanas=replace(cfg.opanas, **VARIANTS[name]),
        run=replace(cfg.run, name=f"supernet_{name}"),
        neck=None,
    )


def load_archs(path: str, flag: str = "--archs") -> pd.DataFrame:
    """The fixed architectures and their measured standalone AP (``flag`` names where the path came from)."""
    from raynas.spaces.opanas import OPANASSpace

    if not Path(path).is_file():
        raise ConfigError(f"{flag} {path!r} is not a file; give a rank_correlation.csv")
    try:
        table = pd.read_csv(path)
    except (UnicodeDecodeError, pd.errors.ParserError, pd.errors.EmptyDataError) as err:
        why = " ".join(str(err).split())[:160]
        raise ConfigError(f"{flag} {path!r} is not a CSV table ({why}); give rank_correlation.csv") from err
    space = OPANASSpace(NUM_NODES)
    missing = sorted((set(space.choices()) | {"standalone_" + METRIC}) - set(table.columns))
    if missing:
        raise ConfigError(f"{flag} {path!r} lacks the column(s) {missing}; give a rank_correlation.csv")
    if len(table) < 3:
        raise ConfigError(f"{flag} {path!r} has {len(table)} architectures; a rank correlation needs >= 3")
    scores = pd.to_numeric(table["standalone_" + METRIC], errors="coerce")
    if scores.isna().any():
        lines = [index + 2 for index in table.index[scores.isna()]][:5]
        raise ConfigError(
            f"{flag} {path!r} has no number as standalone_{METRIC} on line(s) {lines}; give a "
            "rank_correlation.csv whose architectures all have a measured AP"
        )
    for column in seed_columns(table):  # a seed an architecture lacks is empty; anything else a number
        values = pd.to_numeric(table[column], errors="coerce")
        lines = [index + 2 for index in table.index[values.isna() & table[column].notna()]][:5]
        if lines:
            raise ConfigError(
                f"{flag} {path!r} has no number as {column} on line(s) {lines}; give a rank_correlation.csv"
            )
    for line, row in enumerate(table.to_dict("records"), start=2):
        try:
            space.from_config(row)
        except ValueError as err:
            raise ConfigError(
                f"{flag} {path!r} line {line} is not an OPANAS architecture ({err}); "
                "give a rank_correlation.csv"
            ) from err
    return table


def seed_columns(table: pd.DataFrame) -> list[str]:
    """The ``standalone_AP_seed<k>`` columns of a v2 ``rank_correlation.csv``, in seed order."""
    seeds = {
        int(m[1]): c for c in table.columns if (m := re.fullmatch(rf"standalone_{METRIC}_seed(\d+)", str(c)))
    }
    return [seeds[k] for k in sorted(seeds)]


def seed_aps(table: pd.DataFrame) -> list[list[float]]:
    """Each architecture's standalone AP, one value per seed it has (a seed it lacks left out), for the
    bootstrap over architectures and seeds; a v1 table's one ``standalone_AP`` per architecture."""
    columns = seed_columns(table)
    if not columns:
        return [[float(value)] for value in table["standalone_" + METRIC]]
    values = table[columns].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    means = table["standalone_" + METRIC].astype(float)
    return [row[~np.isnan(row)].tolist() or [mean] for row, mean in zip(values, means, strict=True)]


def kept_scores(
    path: Path,
    names: tuple[str, ...] = (),
    fix: str = "restore it, or delete it to score the architectures again",
) -> pd.DataFrame | None:
    """Scores of an earlier run (``None`` if none), each row a whole architecture with its score and key:
    a damaged copy is refused (also before Ray starts), not half reused. ``names``: columns that name a row
    and must be filled (read as text: "1234567890" is a name, not a number)."""
    from raynas.spaces.opanas import OPANASSpace

    if not path.is_file():
        return None
    space = OPANASSpace(NUM_NODES)
    # a row cut short in its key (checkpoint, search_images) matches no key: it is scored again
    dtype = {column: str for column in ("search_images", *names)}
    table = read_table(path, fix, (*names, *space.keys), ("supernet_" + METRIC,), dtype=dtype)
    for line, row in enumerate(table.to_dict("records"), start=2):
        try:
            space.from_config(row)
        except ValueError as err:
            raise ConfigError(f"{path} line {line} is not an OPANAS architecture ({err}); {fix}") from err
    return none_as_written(table)


def scorer_options(settings: Any) -> dict:
    """:func:`score_archs`'s keyword arguments from a study's settings (``scorers``, ``search_images``,
    ``gpu``)."""
    return {"scorers": settings.scorers, "search_images": settings.search_images, "use_gpu": settings.gpu}


def score_archs(
    checkpoint: str,
    archs: pd.DataFrame,
    path: Path,
    *,
    scorers: int,
    search_images: int | None,
    use_gpu: bool = False,
) -> pd.DataFrame:
    """Super-net scores of the fixed architectures by ``scorers`` actors, inference only (kept in ``path``;
    reused on re-run when the checkpoint, the image cap and the architectures are the same)."""
    from ray.util import ActorPool

    from raynas.search.pool import ScorerPool
    from raynas.spaces.opanas import OPANASSpace

    space = OPANASSpace(NUM_NODES)
    configs = [space.to_config(space.from_config(row)) for row in archs.to_dict("records")]
    key = {"checkpoint": str(Path(checkpoint).resolve()), "search_images": str(search_images)}
    table = kept_scores(path)
    if table is not None:
        same_archs = (
            len(table) == len(configs)
            and [space.to_config(space.from_config(row)) for row in table.to_dict("records")] == configs
        )
        if same_archs and all(k in table and table[k].astype(str).eq(v).all() for k, v in key.items()):
            return table
    pool = ScorerPool(checkpoint, num_actors=scorers, max_images=search_images, use_gpu=use_gpu)
    try:
        results = list(ActorPool(pool.actors).map(lambda actor, c: actor.score.remote(c), configs))
    finally:
        pool.shutdown()
    table = archs.copy()
    table["supernet_" + METRIC] = [r[METRIC] for r in results]
    for name, value in key.items():
        table[name] = value
    atomic_write_text(path, table.to_csv(index=False))
    return table
