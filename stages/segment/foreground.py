"""Foreground segmenter: a person's mask is the moving foreground inside its box.

For detectors that give boxes only (YOLO detection models) on static cameras. One background
model per source, fed every frame of that source, so it must see the frames in order.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.messages import FrameResult
from stages.detect.background import BackgroundModel, paste_mask
from stages.segment.masks import clear_outside_boxes, with_masks

_MIN_PIECE = 0.05  # foreground pieces smaller than this fraction of the box's largest are noise


class ForegroundSegmenter:
    """Masks from per-source MOG2 background subtraction, cut to each detection's box.

    history / var_threshold / learning_rate: MOG2 settings (learning_rate -1 = automatic).
    work_width: background model resolution (pixels wide; narrower frames are kept as they are).
    open_px / close_px: morphology kernel sizes in working pixels.
    global_change_fraction: a frame with more foreground than this fraction is a global change
    (exposure, lights): relearnt quickly, its masks are empty.
    protect_frames: frames a box's pixels are kept out of the background model in a row.
    """

    def __init__(
        self,
        *,
        history: int = 500,
        var_threshold: float = 16.0,
        learning_rate: float = -1.0,
        work_width: int = 640,
        open_px: int = 3,
        close_px: int = 7,
        global_change_fraction: float = 0.35,
        protect_frames: int = 50,
    ) -> None:
        self._options = {
            "history": history,
            "var_threshold": var_threshold,
            "learning_rate": learning_rate,
            "work_width": work_width,
            "open_px": open_px,
            "close_px": close_px,
            "global_change_fraction": global_change_fraction,
            "protect_frames": protect_frames,
        }
        self._models: dict[str, BackgroundModel] = {}

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        out = []
        for item in batch:
            masks = self.masks(item.frame.source_id, item.frame.image, item.detections.xyxy)
            out.append(FrameResult(item.frame, with_masks(item.detections, masks), item.ended_track_ids))
        return out

    def end_source(self, source_id: str) -> list[FrameResult]:
        """The source ended: forget its background model."""
        self._models.pop(source_id, None)
        return []

    def masks(self, source_id: str, image: np.ndarray, boxes_xyxy: np.ndarray) -> np.ndarray:
        """Feed one frame of a source; masks (N, H, W) bool of the foreground in each box (N, 4)."""
        model = self._models.get(source_id)
        if model is None:
            model = self._models[source_id] = BackgroundModel(**self._options)
        foreground = model.foreground(image)
        model.learn(model.boxes_mask(boxes_xyxy))
        frame_size = (int(image.shape[0]), int(image.shape[1]))
        masks = np.zeros((len(boxes_xyxy), *frame_size), dtype=bool)
        for i, box in enumerate(boxes_xyxy):
            crop, crop_box = _crop(foreground, box / model.scale)
            masks[i] = paste_mask(crop, crop_box * model.scale, frame_size)
        return clear_outside_boxes(masks, boxes_xyxy)


def _crop(foreground: np.ndarray, box_work: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The foreground under a box (working coordinates), without small stray pieces.

    Returns the crop (h, w) bool and its own box (4,) in working pixels (the box, rounded out).
    """
    h, w = foreground.shape
    x1 = min(max(int(np.floor(box_work[0])), 0), w)
    y1 = min(max(int(np.floor(box_work[1])), 0), h)
    x2 = min(max(int(np.ceil(box_work[2])), x1), w)
    y2 = min(max(int(np.ceil(box_work[3])), y1), h)
    crop_box = np.array([x1, y1, x2, y2], dtype=np.float32)
    crop = foreground[y1:y2, x1:x2].astype(np.uint8)
    if crop.size == 0:
        return crop.astype(bool), crop_box
    count, labels, stats, _ = cv2.connectedComponentsWithStats(crop, connectivity=8)
    if count <= 2:
        return crop.astype(bool), crop_box
    areas = stats[1:, cv2.CC_STAT_AREA]
    keep = 1 + np.flatnonzero(areas >= _MIN_PIECE * areas.max())
    return np.isin(labels, keep), crop_box
