"""Separating people whom the detector gave one box: split a merged box along the tracks inside it.

Where people overlap in the image (one walks behind another, or two walk side by side) a detector can
return one box around both: background subtraction always does once their blobs touch, a learned
detector sometimes. The tracker then gives that box to one of the people's tracks, which from then on
follows the group (every later stage mixes two people), while the other track starves and ends.

The tracks know better: just before the merge each person had a track, and each track predicts where
its person is now. A box that holds the predicted boxes of two or more tracks that were matched a
moment ago, each mostly inside it and each person-sized against it, is split into one box per track:
the prediction cut to the merged box and, when the detector gave a mask, tightened to the merged
mask's pixels inside it (the foreground says where the person really is). Each part keeps the
merged box's confidence and may only continue a track, never start one. A box with at most one such
track is left alone, so a lone walker's box never moves.
"""

from __future__ import annotations

import numpy as np
import supervision as sv

from pipeline.messages import GROUP_PART, STARTS_TRACK


def inside_fraction(inner: np.ndarray, outer: np.ndarray) -> np.ndarray:
    """Share of each box of ``inner`` (K, 4) lying inside box ``outer`` (4,), xyxy -> (K,)."""
    inner = np.asarray(inner, np.float64).reshape(-1, 4)
    ix = np.clip(np.minimum(inner[:, 2], outer[2]) - np.maximum(inner[:, 0], outer[0]), 0, None)
    iy = np.clip(np.minimum(inner[:, 3], outer[3]) - np.maximum(inner[:, 1], outer[1]), 0, None)
    area = (inner[:, 2] - inner[:, 0]) * (inner[:, 3] - inner[:, 1])
    return np.where(area > 0, ix * iy / np.maximum(area, 1e-9), 0.0)


def _tight_to_mask(box: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(box, mask) of one part: the mask's pixels inside ``box``, and their bounding box when any."""
    height, width = mask.shape
    x1, y1 = int(np.clip(np.floor(box[0]), 0, width)), int(np.clip(np.floor(box[1]), 0, height))
    x2, y2 = int(np.clip(np.ceil(box[2]), 0, width)), int(np.clip(np.ceil(box[3]), 0, height))
    part = np.zeros_like(mask)
    part[y1:y2, x1:x2] = mask[y1:y2, x1:x2]
    ys, xs = np.nonzero(mask[y1:y2, x1:x2])
    if not len(ys):
        return box, part
    return np.array([x1 + xs.min(), y1 + ys.min(), x1 + xs.max() + 1, y1 + ys.max() + 1], np.float32), part


class GroupSplitter:
    """Splits detections that hold several tracked people (see the module docstring).

    min_inside: least share of a track's predicted box inside the detection for the track to be in it.
    min_height: least height of a predicted box, as a share of the detection's height, for it to count
        as a person there (a track on a fragment of a body, or far behind, does not split a box).
    """

    def __init__(self, min_inside: float = 0.7, min_height: float = 0.5) -> None:
        if not 0 < min_inside <= 1 or not 0 < min_height <= 1:
            raise ValueError(f"need 0 < min_inside, min_height <= 1, got {min_inside}, {min_height}")
        self.min_inside = float(min_inside)
        self.min_height = float(min_height)

    def groups(self, boxes: np.ndarray, predicted: np.ndarray) -> list[np.ndarray]:
        """For each detection box (N, 4), the indices of the predicted boxes (K, 4) of the people in it
        (empty unless two or more; each predicted box goes to at most one detection, the one holding
        most of it)."""
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
        predicted = np.asarray(predicted, np.float64).reshape(-1, 4)
        if not len(boxes) or len(predicted) < 2:
            return [np.zeros(0, np.int64) for _ in boxes]
        inside = np.stack([inside_fraction(predicted, box) for box in boxes])  # (N, K)
        heights = (predicted[:, 3] - predicted[:, 1])[None, :] / np.maximum(boxes[:, 3] - boxes[:, 1], 1e-9)[:, None]
        member = (inside >= self.min_inside) & (heights >= self.min_height)
        member &= np.arange(len(boxes))[:, None] == inside.argmax(axis=0)[None, :]
        return [np.flatnonzero(row) if row.sum() >= 2 else np.zeros(0, np.int64) for row in member]

    def split(self, detections: sv.Detections, predicted: np.ndarray) -> sv.Detections:
        """The detections with every merged box replaced by one box per tracked person in it."""
        groups = self.groups(detections.xyxy, predicted)
        if not any(len(g) for g in groups):
            return detections
        predicted = np.asarray(predicted, np.float32).reshape(-1, 4)
        rows, boxes, masks = [], [], []
        for row, members in enumerate(groups):
            if not len(members):
                rows.append(row)
                boxes.append(detections.xyxy[row])
                masks.append(None if detections.mask is None else detections.mask[row])
                continue
            merged = detections.xyxy[row]
            for k in members:
                part = np.concatenate([np.maximum(predicted[k, :2], merged[:2]), np.minimum(predicted[k, 2:], merged[2:])])
                mask = None
                if detections.mask is not None:
                    part, mask = _tight_to_mask(part, detections.mask[row])
                rows.append(row)
                boxes.append(part)
                masks.append(mask)
        rows_array = np.asarray(rows, np.int64)
        is_part = np.asarray([len(groups[r]) > 0 for r in rows], bool)
        out = detections[rows_array]
        out.xyxy = np.asarray(boxes, np.float32).reshape(-1, 4)
        if detections.mask is not None:
            out.mask = np.stack(masks)
        starts = np.asarray(out.data.get(STARTS_TRACK, np.ones(len(out), bool)), bool)
        out.data[STARTS_TRACK] = starts & ~is_part
        out.data[GROUP_PART] = is_part
        return out
