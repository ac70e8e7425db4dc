"""Mask helpers shared by the segmentation backends."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import supervision as sv

from pipeline.messages import FrameResult
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


# (people: (frame, box xyxy) pairs, the detector's full-frame mask of each or None) -> each person's box mask
BoxMasker = Callable[[list[tuple[np.ndarray, np.ndarray]], list[np.ndarray | None]], list[np.ndarray]]


def segment_rows(batch: list[FrameResult], rows_to_segment: Callable[[FrameResult], list[int]],
                 box_masks: BoxMasker) -> list[FrameResult]:
    """A crop segmenter's ``process``: the detections ``rows_to_segment`` picks get the masks ``box_masks``
    makes over their box pixels; the others keep the detector's mask cut to their box, or none."""
    masks, wanted = [], []
    for item_index, item in enumerate(batch):
        detections = item.detections
        if detections.mask is None:
            item_masks = np.zeros((len(detections), *item.frame.size), dtype=bool)
        else:
            item_masks = clear_outside_boxes(np.array(detections.mask, dtype=bool), detections.xyxy)
        masks.append(item_masks)
        wanted += [(item_index, row) for row in rows_to_segment(item)]
    people = [(batch[i].frame.image, batch[i].detections.xyxy[row]) for i, row in wanted]
    detected = [None if batch[i].detections.mask is None else masks[i][row] for i, row in wanted]
    for (item_index, row), box_mask in zip(wanted, box_masks(people, detected)):
        x1, y1, x2, y2 = box_pixels(batch[item_index].detections.xyxy[row], batch[item_index].frame.size)
        mask = masks[item_index][row]
        mask[:] = False
        mask[y1:y2, x1:x2] = box_mask
    return [
        FrameResult(item.frame, with_masks(item.detections, item_masks), item.ended_track_ids)
        for item, item_masks in zip(batch, masks)
    ]
