"""Ground-truth masks in place of the segmenter: the benchmark's "perfect segmentation" ablation.

A rendered site knows every person's visible mask in every frame. ``TruthMasks`` is a segmentation
stage that gives each tracked box the visible mask of the person its box overlaps most, cut to the
box, so the rest of the chain (detector, tracker, gait detector, embeddings, gallery) runs as
shipped on exact silhouettes. The difference to the default variant is what the segmenter costs
identity; the difference to 1.0 is what the other stages cost.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evaluation.identity.truth import box_iou
from pipeline.messages import FrameResult
from stages.segment.masks import clear_outside_boxes, with_masks
from synth.groundtruth import decode_mask, load_groundtruth


class TruthMasks:
    """Segmentation stage for the videos of one rendered site (a camera's video is ``<camera>.mp4``).

    truth: the site's ``groundtruth.json`` (rendered with masks). min_iou: least box IoU between a
    detection and a person for the person's mask to be used; a box that overlaps nobody that much
    gets an empty mask (the tracklet assembler then skips the frame, as it does for an empty mask).
    """

    def __init__(self, truth: str | Path, min_iou: float = 0.3) -> None:
        data = load_groundtruth(truth)
        self._frames: dict[str, list[list[dict]]] = data["frames"]
        self.min_iou = float(min_iou)

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        return [self._segment(item) for item in batch]

    def end_source(self, source_id: str) -> list[FrameResult]:
        return []

    def _segment(self, item: FrameResult) -> FrameResult:
        frame, detections = item.frame, item.detections
        camera = Path(frame.source_id).stem
        if camera not in self._frames:
            raise ValueError(f"{frame.source_id}: no camera {camera!r} in the site's ground truth")
        frames = self._frames[camera]
        people = [p for p in (frames[frame.index] if frame.index < len(frames) else []) if "mask" in p]
        masks = np.zeros((len(detections), *frame.size), dtype=bool)
        if people and len(detections):
            boxes = np.array([p["box"] for p in people], np.float64)
            for i, box in enumerate(np.asarray(detections.xyxy, np.float64)):
                overlap = box_iou(box, boxes)
                best = int(np.argmax(overlap))
                if overlap[best] >= self.min_iou:
                    masks[i] = decode_mask(people[best]["mask"], frame.size)
        return FrameResult(frame, with_masks(detections, clear_outside_boxes(masks, detections.xyxy)), item.ended_track_ids)
