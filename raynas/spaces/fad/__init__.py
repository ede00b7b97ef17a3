"""FAD / RepShare: differentiable search of one-stage detection heads (Zhong et al., ECCV 2020).

``ops`` (conv units, the 12 transformations + none), ``repshare`` (naive and RepShare blocks, decoupling H),
``cells`` (search / derived cells, the two-group module of Fig. 1), ``head`` (torchvision FCOS / RetinaNet
heads), ``mask_head`` (the one-group Mask R-CNN mask head), ``genotype`` (discrete space, derivation).
Pure PyTorch: no Ray import here.
"""

from raynas.spaces.fad.cells import EDGES, DerivedCell, FADModule, SearchCell
from raynas.spaces.fad.genotype import FADGenotype, FADSpace, derive, representation_to_transformation
from raynas.spaces.fad.head import FADHead, derived_space, fad_head_factory, head_cost
from raynas.spaces.fad.mask_head import FADMaskHead, fad_mask_head_factory
from raynas.spaces.fad.ops import build_transformation, candidate_names, receptive_field
from raynas.spaces.fad.repshare import BlockConfig, NaiveBlock, RepShareBlock

__all__ = [
    "EDGES",
    "BlockConfig",
    "DerivedCell",
    "FADGenotype",
    "FADHead",
    "FADMaskHead",
    "FADModule",
    "FADSpace",
    "NaiveBlock",
    "RepShareBlock",
    "SearchCell",
    "build_transformation",
    "candidate_names",
    "derive",
    "derived_space",
    "fad_head_factory",
    "fad_mask_head_factory",
    "head_cost",
    "receptive_field",
    "representation_to_transformation",
]
