"""OPANAS: one-shot search of the FPN neck over six information paths (Liang et al., CVPR 2021).

* :mod:`.paths` -- the six information paths (Sec. 3.1, Eq. 1-6).
* :mod:`.space` -- architecture encoding, validation, sampling and variation (Sec. 3.2, 3.2.2).
* :mod:`.dag` -- the DAG neck every OPANAS neck shares (laterals, extra levels, Eq. 10).
* :mod:`.fpn` -- a discrete OPA-FPN neck for one architecture.
* :mod:`.supernet` -- the weight-sharing super-net with edge importance weights (Sec. 3.2.1, Eq. 10-12);
  ``extract(arch)`` gives the OPA-FPN of a sub-net with the super-net's weights.
* :mod:`.mixed` -- the DARTS / Fair DARTS relaxation of the DAG (Table 6).
* :mod:`.sampling` -- strict fair sampling of K=4 sub-nets per step (Sec. 3.2.1, Eq. 13).
"""

from raynas.spaces.opanas.fpn import OPAFPN, opa_fpn_factory
from raynas.spaces.opanas.paths import (
    PARAMETERISED_PATHS,
    PATH_NAMES,
    BottomUpPath,
    FusingSplittingPath,
    NonePath,
    ScaleEqualizingPath,
    SkipPath,
    TopDownPath,
    build_path,
    fusing_levels,
)
from raynas.spaces.opanas.sampling import fair_sample, fair_step_seed
from raynas.spaces.opanas.space import OPANASArch, OPANASSpace, active_edges, edge_key, edge_pairs, live_nodes
from raynas.spaces.opanas.supernet import OPANASSupernet

__all__ = [
    "OPAFPN",
    "PARAMETERISED_PATHS",
    "PATH_NAMES",
    "BottomUpPath",
    "FusingSplittingPath",
    "NonePath",
    "OPANASArch",
    "OPANASSpace",
    "OPANASSupernet",
    "ScaleEqualizingPath",
    "SkipPath",
    "TopDownPath",
    "active_edges",
    "build_path",
    "edge_key",
    "edge_pairs",
    "fair_sample",
    "fair_step_seed",
    "fusing_levels",
    "live_nodes",
    "opa_fpn_factory",
]
