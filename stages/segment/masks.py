"""Mask helpers shared by the segmentation backends."""

from __future__ import annotations

import numpy as np
import supervision as sv

from stages.detect.background import box_pixels


def clear_outside_boxes(masks: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
    """Sets masks (N, H, W) bool to False outside their boxes (N, 4) xyxy, in place; returns them."""
    frame_size = (int(masks.shape[1]), int(masks.shape[2]))
    for mask, box in zip(masks, boxes_xyxy):
        x1, y1, x2, y2 = box_pixels(box, frame_size)
        mask[:y1] = False
        mask[y2:] = False
        mask[y1:y2, :x1] = False
        mask[y1:y2, x2:] = False
    return masks


def with_masks(detections: sv.Detections, masks: np.ndarray) -> sv.Detections:
    """``detections`` with ``mask`` replaced by ``masks`` (N, H, W) bool; other fields shared."""
    return sv.Detections(
        xyxy=detections.xyxy,
        mask=masks,
        confidence=detections.confidence,
        class_id=detections.class_id,
        tracker_id=detections.tracker_id,
        data=dict(detections.data),
        metadata=dict(detections.metadata),
    )
