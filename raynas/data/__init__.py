"""Detection data: COCO-format and Pascal VOC datasets, the embedded digits and scenes generators, joint
transforms.

Every dataset yields ``(image FloatTensor[3,H,W] in [0,1], {"boxes": [n,4] xyxy, "labels": int64[n],
"image_id": int})`` and exposes its pycocotools ``COCO`` ground truth as ``dataset.coco``
(see docs/contracts.md). A job's :class:`~raynas.data.config.DataConfig` becomes datasets, splits and
loaders in :mod:`raynas.data.loaders`.
"""

from raynas.data.annotations import DatasetError
from raynas.data.coco import CocoDetection, DetectionDataset
from raynas.data.digits import generate_digits
from raynas.data.scenes import generate_scenes
from raynas.data.transforms import Compose, RandomHorizontalFlip, detection_collate
from raynas.data.voc import VOC_CLASSES, VOCDetection

__all__ = [
    "VOC_CLASSES",
    "CocoDetection",
    "Compose",
    "DatasetError",
    "DetectionDataset",
    "RandomHorizontalFlip",
    "VOCDetection",
    "detection_collate",
    "generate_digits",
    "generate_scenes",
]
