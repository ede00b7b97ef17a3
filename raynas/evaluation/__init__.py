"""Evaluation: COCO box and mask mAP (pycocotools), params, FLOPs, latency, rank agreement (no Ray here)."""

from raynas.evaluation.coco_eval import METRIC_NAMES, coco_metrics_from_detections, evaluate_coco
from raynas.evaluation.complexity import count_flops, count_params, measure_latency
from raynas.evaluation.ranking import rank_agreement, spread_picks

__all__ = [
    "METRIC_NAMES",
    "coco_metrics_from_detections",
    "count_flops",
    "count_params",
    "evaluate_coco",
    "measure_latency",
    "rank_agreement",
    "spread_picks",
]
