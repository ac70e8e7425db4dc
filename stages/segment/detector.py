"""Detector-mask segmenter: keep the masks the detector produced (YOLO-seg, classic detector).

Detections without a usable mask (a box-only detector, or a mask with no pixels inside its box)
get one from the configured fallback: ``foreground`` (background subtraction inside the box) or
``drop`` (such detections are removed).
"""

from __future__ import annotations

import numpy as np

from pipeline.messages import FrameResult
from stages.segment.foreground import ForegroundSegmenter
from stages.segment.masks import clear_outside_boxes, with_masks

FALLBACKS = ("foreground", "drop")


class DetectorMasks:
    """Uses ``detections.mask``; masks are cut to their boxes, missing ones filled by ``fallback``.

    fallback: "foreground" or "drop". The foreground fallback starts a source's background model
    at the first frame that needs it and feeds it every frame from then on (it has to keep
    learning the camera's empty scene), so detectors that always give masks never pay for it.
    """

    def __init__(self, *, fallback: str = "foreground") -> None:
        if fallback not in FALLBACKS:
            raise ValueError(f"segment fallback {fallback!r} is not one of: {', '.join(FALLBACKS)}")
        self.fallback = fallback
        self._foreground = ForegroundSegmenter() if fallback == "foreground" else None
        self._fallback_sources: set[str] = set()

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        out = []
        for item in batch:
            detections = item.detections
            source_id = item.frame.source_id
            if detections.mask is None:
                masks = np.zeros((len(detections), *item.frame.size), dtype=bool)
            else:
                # The detector's mask array is handed on, not shared: clearing in place is safe.
                masks = clear_outside_boxes(np.asarray(detections.mask, dtype=bool), detections.xyxy)
            missing = ~masks.any(axis=(1, 2))
            if self._foreground is None:
                result = with_masks(detections, masks)[~missing]
            else:
                if missing.any():
                    self._fallback_sources.add(source_id)
                if source_id in self._fallback_sources:
                    masks[missing] = self._foreground.masks(source_id, item.frame.image, detections.xyxy[missing])
                result = with_masks(detections, masks)
            out.append(FrameResult(item.frame, result, item.ended_track_ids))
        return out

    def end_source(self, source_id: str) -> list[FrameResult]:
        """The source ended: forget its state (the fallback's background model)."""
        self._fallback_sources.discard(source_id)
        if self._foreground is not None:
            self._foreground.end_source(source_id)
        return []
