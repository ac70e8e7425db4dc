"""YOLO person detector (ultralytics): boxes, and masks from -seg models.

Weights are a local ``.pt`` file (vetted first: only the classes an ultralytics checkpoint needs, see
``ULTRALYTICS_CHECKPOINT``), a model exported by ultralytics (an OpenVINO directory with its
``metadata.yaml``, which needs the ``openvino`` package, or an ``.onnx`` file), or a model YAML such
as ``yolo11n-seg.yaml`` (built with random weights: for plumbing tests only). Relative paths are also
looked up in the models directory (`stages.model_files`). Nothing is downloaded unless ``allow_download`` is set:
ultralytics runs with ``YOLO_OFFLINE=1`` and a missing ``.pt`` file is an error at construction.
ultralytics is imported here, lazily, so other backends never need it.
"""

from __future__ import annotations

import importlib.util
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import supervision as sv
import yaml

from pipeline.messages import FrameResult
from stages.checkpoints import TORCH_TENSORS, PickleAllowlist, vet_torch_pickle
from stages.detect.schedule import DetectionSchedule
from stages.model_files import ModelFileError, resolve_model_path

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

    weights: path to a ``.pt`` file, an exported OpenVINO directory or ``.onnx`` file, or a model
    ``.yaml`` name/path (random weights).
    models_dir: where relative weights paths are also looked for (default: `stages.model_files`).
    confidence / iou: detection score threshold and NMS IoU threshold.
    image_size: inference size in pixels (letterboxed square side).
    device: torch device string ("cpu", "cuda:0", ...).
    allow_download: let ultralytics fetch a named model it does not find (off by default).
    detect_every: run the model on every N-th frame of each source; the tracker predicts the boxes of
    the frames in between (1: every frame).
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
        models_dir: str | None = None,
        detect_every: int = 1,
    ) -> None:
        self.schedule = DetectionSchedule(detect_every)
        path = resolve_model_path(weights, models_dir)
        is_yaml = path.suffix in (".yaml", ".yml")
        self._export_link: tempfile.TemporaryDirectory | None = None
        self._task: str | None = None  # an export's task from its metadata.yaml; None: ultralytics guesses
        if path.is_dir():
            path = self._openvino_export(path)
        elif path.suffix == ".onnx" and path.is_file():
            _require_package("onnxruntime", path)
        if not is_yaml and not path.exists() and not allow_download:
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

        self._model = YOLO(str(path) if path.exists() else weights, task=self._task)
        self.confidence = float(confidence)
        self.iou = float(iou)
        self.image_size = int(image_size)
        self.device = device
        self.has_masks = self._model.task == "segment"

    def _openvino_export(self, folder: Path) -> Path:
        """An ultralytics OpenVINO export folder, under a name ultralytics recognises.

        ultralytics tells formats by name (``*_openvino_model/``); a folder kept under another name
        (as in a models directory) is reached through a link of that name in a private temporary
        folder, removed by `close`.
        """
        metadata = folder / "metadata.yaml"
        if not metadata.is_file() or not any(folder.glob("*.xml")):
            raise ModelFileError(
                folder,
                "not an ultralytics OpenVINO export (no metadata.yaml and .xml)",
                "export with YOLO(...).export(format='openvino')",
            )
        _require_package("openvino", folder)
        try:
            self._task = yaml.safe_load(metadata.read_text()).get("task")
        except (yaml.YAMLError, AttributeError, UnicodeDecodeError) as exc:
            raise ModelFileError(metadata, f"unreadable ({type(exc).__name__})", "re-export the model") from None
        if folder.name.endswith("_openvino_model"):
            return folder
        self._export_link = tempfile.TemporaryDirectory(prefix="gaitscope-openvino-")
        link = Path(self._export_link.name) / f"{folder.name}_openvino_model"
        link.symlink_to(folder.resolve(), target_is_directory=True)
        return link

    def close(self) -> None:
        if self._export_link is not None:
            self._export_link.cleanup()
            self._export_link = None

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        return self.schedule.run(batch, self.detect)

    def end_source(self, source_id: str) -> list[FrameResult]:
        self.schedule.end_source(source_id)
        return []

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        """Person detections for each (H, W, 3) uint8 BGR image, in frame pixels."""
        if not images:
            return []
        results = self._model.predict(
            list(images),
            classes=[PERSON_CLASS],
            conf=self.confidence,
            iou=self.iou,
            imgsz=self.image_size,
            device=self.device,
            retina_masks=True,  # masks at the original frame size
            verbose=False,
        )
        return [_detections(result, image.shape[:2], self.has_masks) for image, result in zip(images, results)]


def _require_package(name: str, model: Path) -> None:
    """A one-line error naming the model when the runtime it needs is not installed."""
    if importlib.util.find_spec(name) is None:
        raise ModelFileError(model, f"needs the {name} package, which is not installed", f"pip install {name}")


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
