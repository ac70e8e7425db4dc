"""Pose-crop segmenter: MediaPipe BlazePose run on a square crop around each tracked person.

BlazePose GHUM (``pose_landmark_full.tflite``) takes a 256x256 RGB crop in [0, 1] centred on one
person, about 1.3 times the person's box, and besides the landmarks gives a 256x256 map of
segmentation logits for that person (output ``Identity_2``; person where > 0). The crop is cut with
one affine warp (parts outside the frame are black), and the logits are warped back onto the box
pixels only, so a mask never leaves its box. Only tracked people at least ``min_height`` pixels tall
are segmented (smaller ones make no usable 64x44 silhouette); the others keep the detector's mask,
cut to their box, or none. Crops of all frames in a batch go through the model together.
"""

from __future__ import annotations

import numpy as np

from pipeline.messages import FrameResult
from stages.detect.background import box_pixels
from stages.model_files import resolve_model_path
from stages.runtimes import TFLiteModel
from stages.segment import INSTALL_HINT, POSE_MODEL
from stages.segment.crops import Region, cut_region, region_around, region_map_in_box
from stages.segment.masks import segment_rows

INPUT_SIZE = (256, 256)  # (height, width): BlazePose landmark models take 256x256 crops
SEGMENTATION_OUTPUT = "Identity_2"


class PoseCropSegmenter:
    """Person masks from BlazePose's segmentation output on square crops around tracked boxes.

    model: the ``pose_landmark_full.tflite`` file; relative paths are looked up in the models
    directory (``models_dir``, else ``$GAITSCOPE_MODELS``, else ``~/.cache/gaitscope/models``).
    runtime: "auto" (LiteRT when ``ai-edge-litert`` is installed, else OpenCV's dnn), "litert", "opencv".
    threads: CPU threads of the runtime.
    crop_scale: side of the square crop as a multiple of the box's longer side.
    min_height: least box height in pixels for a person to be segmented.
    tracked_only: segment only detections that carry a tracker id (the ones that become silhouettes).
    max_batch: most crops per model call.
    """

    def __init__(
        self,
        *,
        model: str = POSE_MODEL,
        models_dir: str | None = None,
        runtime: str = "auto",
        threads: int = 1,
        crop_scale: float = 1.3,
        min_height: int = 40,
        tracked_only: bool = True,
        max_batch: int = 8,
    ) -> None:
        if crop_scale < 1.0:
            raise ValueError(f"crop_scale must be at least 1 (the crop holds the whole box), got {crop_scale}")
        self.model = TFLiteModel(
            resolve_model_path(model, models_dir),
            what="BlazePose",
            input_shape=(*INPUT_SIZE, 3),
            output=SEGMENTATION_OUTPUT,
            missing_hint=INSTALL_HINT,
            runtime=runtime,
            threads=threads,
        )
        self.crop_scale = float(crop_scale)
        self.min_height = int(min_height)
        self.tracked_only = tracked_only
        self.max_batch = max(1, int(max_batch))

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        return segment_rows(batch, self.rows_to_segment, lambda people, _detected: self.box_masks(people))

    def box_masks(self, people: list[tuple[np.ndarray, np.ndarray]]) -> list[np.ndarray]:
        """(frame BGR uint8, person box xyxy) pairs -> each person's mask over its box's pixels
        (``box_pixels`` bounds), bool (y2 - y1, x2 - x1). Boxes must not be empty inside the frame."""
        logits, regions = self.crop_logits(people)
        return [region_map_in_box(values, region, box_pixels(box, image.shape[:2])) > 0.0
                for (image, box), values, region in zip(people, logits, regions)]

    def crop_logits(self, people: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[np.ndarray], list[Region]]:
        """(frame BGR uint8, person box xyxy) pairs -> (each person's segmentation logits over its crop,
        the crop's region in the frame)."""
        regions = [region_around(box, self.crop_scale, INPUT_SIZE) for _, box in people]
        crops = [cut_region(image, region, INPUT_SIZE) for (image, _), region in zip(people, regions)]
        return self.logits(crops), regions

    def rows_to_segment(self, item: FrameResult) -> list[int]:
        """Rows of the detections to segment: tracked (when asked), tall enough, inside the frame."""
        detections = item.detections
        rows = []
        for row, box in enumerate(detections.xyxy):
            if self.tracked_only and (detections.tracker_id is None or detections.tracker_id[row] < 0):
                continue
            x1, y1, x2, y2 = box_pixels(box, item.frame.size)
            if y2 - y1 < self.min_height or x2 <= x1:
                continue
            rows.append(row)
        return rows

    def logits(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Crops (256, 256, 3) uint8 BGR -> segmentation logits (256, 256) float32, batched."""
        out: list[np.ndarray] = []
        for start in range(0, len(crops), self.max_batch):
            chunk = np.stack(crops[start : start + self.max_batch])
            rgb = chunk[..., ::-1].astype(np.float32) / np.float32(255.0)
            out.extend(self.model.run(rgb)[..., 0])
        return out
