"""YOLO person detector (ultralytics): boxes, and masks from -seg models.

Weights are a local ``.pt`` file (vetted first: only the classes an ultralytics checkpoint needs, see
``ULTRALYTICS_CHECKPOINT``), or a model YAML such as ``yolo11n-seg.yaml`` (built with random
weights: for plumbing tests only). Nothing is downloaded unless ``allow_download`` is set:
ultralytics runs with ``YOLO_OFFLINE=1`` and a missing ``.pt`` file is an error at construction.
ultralytics is imported here, lazily, so other backends never need it.
"""

from __future__ import annotations

import os
from pathlib import Path

import cv2
import numpy as np
import supervision as sv

from pipeline.messages import FrameResult
from stages.checkpoints import TORCH_TENSORS, PickleAllowlist, vet_torch_pickle

PERSON_CLASS = 0  # COCO "person", the class every ultralytics COCO model uses


class MissingWeightsError(FileNotFoundError):
    """The configured YOLO weights are not on disk and downloading is not allowed."""


# What an ultralytics checkpoint pickles: its model classes (restored, never called), torch modules,
# tensors, and plain containers for its training arguments and metrics.
ULTRALYTICS_CHECKPOINT = PickleAllowlist(
    callables=TORCH_TENSORS.callables | {"types.SimpleNamespace", "ultralytics.utils.IterableSimpleNamespace",
                                         "pathlib.PosixPath", "pathlib.WindowsPath"},
    data=TORCH_TENSORS.data,
    module_packages=("torch.nn.modules", "ultralytics.nn"),
)


class YoloDetector:
    """Batched ultralytics inference over frames of any sources; person class only.

    weights: path to a ``.pt`` file, or a model ``.yaml`` name/path (random weights).
    confidence / iou: detection score threshold and NMS IoU threshold.
    image_size: inference size in pixels (letterboxed square side).
    device: torch device string ("cpu", "cuda:0", ...).
    allow_download: let ultralytics fetch a named model it does not find (off by default).
    """

    def __init__(
        self,
        *,
        weights: str = "yolo11n-seg.pt",
        confidence: float = 0.25,
        iou: float = 0.7,
        image_size: int = 640,
        device: str = "cpu",
        allow_download: bool = False,
    ) -> None:
        path = Path(weights).expanduser()
        is_yaml = path.suffix in (".yaml", ".yml")
        if not is_yaml and not path.is_file() and not allow_download:
            raise MissingWeightsError(
                f"YOLO weights {weights} not found; give a local .pt path, set allow_download, "
                "or use the classic detector"
            )
        if path.is_file() and path.suffix.lower() in (".pt", ".pth"):
            # ultralytics unpickles checkpoints with arbitrary globals: refuse anything else first
            vet_torch_pickle(path, ULTRALYTICS_CHECKPOINT, "YOLO weights")
        if not allow_download:
            os.environ["YOLO_OFFLINE"] = "1"  # before ultralytics is imported: no network look-ups
        from ultralytics import YOLO

        self._model = YOLO(str(path) if path.is_file() else weights)
        self.confidence = float(confidence)
        self.iou = float(iou)
        self.image_size = int(image_size)
        self.device = device
        self.has_masks = self._model.task == "segment"

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        if not batch:
            return []
        results = self._model.predict(
            [item.frame.image for item in batch],
            classes=[PERSON_CLASS],
            conf=self.confidence,
            iou=self.iou,
            imgsz=self.image_size,
            device=self.device,
            retina_masks=True,  # masks at the original frame size
            verbose=False,
        )
        return [
            FrameResult(item.frame, _detections(result, item.frame.size, self.has_masks), item.ended_track_ids)
            for item, result in zip(batch, results)
        ]


def _detections(result: object, frame_size: tuple[int, int], has_masks: bool) -> sv.Detections:
    """One ultralytics ``Results`` -> sv.Detections (xyxy float32, mask (N, H, W) bool or None)."""
    boxes = result.boxes  # type: ignore[attr-defined]
    xyxy = boxes.xyxy.cpu().numpy().astype(np.float32).reshape(-1, 4)
    mask = None
    if has_masks:
        height, width = frame_size
        raw = result.masks  # type: ignore[attr-defined]
        if raw is None or len(xyxy) == 0:
            mask = np.zeros((len(xyxy), height, width), dtype=bool)
        else:
            data = raw.data.cpu().numpy()
            if data.shape[1:] != (height, width):
                data = np.stack([cv2.resize(m, (width, height), interpolation=cv2.INTER_LINEAR) for m in data])
            mask = data > 0.5
    return sv.Detections(
        xyxy=xyxy,
        mask=mask,
        confidence=boxes.conf.cpu().numpy().astype(np.float32),
        class_id=boxes.cls.cpu().numpy().astype(int),
    )
