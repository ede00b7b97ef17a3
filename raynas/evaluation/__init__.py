"""Evaluation: COCO box mAP (pycocotools), parameters, FLOPs and latency (no Ray here)."""

from raynas.evaluation.coco_eval import METRIC_NAMES, coco_metrics_from_detections, evaluate_coco
from raynas.evaluation.complexity import count_flops, count_params, measure_latency

__all__ = [
    "METRIC_NAMES",
    "coco_metrics_from_detections",
    "count_flops",
    "count_params",
    "evaluate_coco",
    "measure_latency",
]
