"""YOLOX person detector for ONNX exports (Megvii YOLOX, e.g. YOLOX-Nano at 416x416, Apache-2.0).

An export takes one ``(1, 3, S, S)`` float32 BGR image, 0..255, letterboxed into the top-left corner
on grey 114, and gives ``(1, A, 5 + C)`` raw head outputs, one row per grid cell of the strides 8, 16
and 32 (``A = sum((S / s) ** 2)``): centre offsets in cells, log width and height in cells, then
objectness and the C class probabilities (already through a sigmoid). `decode_yolox` turns these into
boxes; a person's score is objectness x P(person); boxes above ``score_threshold`` go through NMS.

Runs on onnxruntime when installed, else on OpenCV's ``cv2.dnn`` (slower, no extra package). The
model file is found through `stages.model_files` (``GAITSCOPE_MODELS``), nothing is downloaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import supervision as sv

from pipeline.messages import STARTS_TRACK, FrameResult
from stages.detect.schedule import DetectionSchedule
from stages.model_files import ModelFileError, resolve_model_path

DEFAULT_MODEL = "yolox_nano/yolox_nano.onnx"
STRIDES = (8, 16, 32)
PAD_VALUE = 114  # YOLOX's letterbox grey
RUNTIMES = ("auto", "onnxruntime", "opencv")


def letterbox(image: np.ndarray, size: int) -> tuple[np.ndarray, float]:
    """(H, W, 3) uint8 BGR -> ((3, size, size) float32 0..255, scale model px per frame px).

    The frame is shrunk (or grown) to fit, keeping its aspect, and placed at the top-left corner of a
    grey canvas, as YOLOX was trained; boxes map back by dividing by the scale.
    """
    height, width = image.shape[:2]
    scale = min(size / height, size / width)
    resized = cv2.resize(
        image, (max(1, round(width * scale)), max(1, round(height * scale))), interpolation=cv2.INTER_LINEAR
    )
    canvas = np.full((size, size, 3), PAD_VALUE, dtype=np.uint8)
    canvas[: resized.shape[0], : resized.shape[1]] = resized
    return np.ascontiguousarray(canvas.transpose(2, 0, 1), dtype=np.float32), scale


def grid_cells(size: int, strides: Sequence[int] = STRIDES) -> tuple[np.ndarray, np.ndarray]:
    """Cell corners (A, 2) as (x, y) in cells and the stride (A, 1) of each output row, in head order."""
    grids, cell_strides = [], []
    for stride in strides:
        cells = size // stride
        ys, xs = np.meshgrid(np.arange(cells), np.arange(cells), indexing="ij")
        grids.append(np.stack([xs.ravel(), ys.ravel()], axis=1))
        cell_strides.append(np.full((cells * cells, 1), stride))
    return np.concatenate(grids).astype(np.float32), np.concatenate(cell_strides).astype(np.float32)


def decode_yolox(raw: np.ndarray, size: int, class_index: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Raw head output (A, 5 + C) at input ``size`` -> boxes (A, 4) xyxy in model pixels, scores (A,).

    score = objectness x P(class ``class_index``).
    """
    grid, stride = grid_cells(size)
    if raw.ndim != 2 or raw.shape[0] != len(grid) or raw.shape[1] <= 5 + class_index:
        raise ValueError(f"output shape {raw.shape} is not a YOLOX head at {size}x{size} (expected ({len(grid)}, 85))")
    centre = (raw[:, :2] + grid) * stride
    half = np.exp(np.minimum(raw[:, 2:4], 20.0)) * stride / 2  # clip: exp of a garbage logit must stay finite
    boxes = np.concatenate([centre - half, centre + half], axis=1)
    return boxes, raw[:, 4] * raw[:, 5 + class_index]


def person_detections(
    raw: np.ndarray,
    size: int,
    scale: float,
    frame_size: tuple[int, int],
    score_threshold: float,
    nms_iou: float,
    start_threshold: float | None = None,
) -> sv.Detections:
    """One image's raw output -> person detections in frame pixels (xyxy float32, class 0).

    With ``start_threshold``, ``data[STARTS_TRACK]`` marks the boxes scoring at least that much.
    """
    boxes, scores = decode_yolox(raw, size)
    keep = scores >= score_threshold
    boxes, scores = boxes[keep] / scale, scores[keep]
    height, width = frame_size
    boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, width)
    boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, height)
    if len(boxes):
        xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
        kept = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), score_threshold, nms_iou), dtype=int)
        kept = kept.reshape(-1)
        boxes, scores = boxes[kept], scores[kept]
    return sv.Detections(
        xyxy=boxes.astype(np.float32).reshape(-1, 4),
        confidence=scores.astype(np.float32),
        class_id=np.zeros(len(scores), dtype=int),
        data={} if start_threshold is None else {STARTS_TRACK: scores >= start_threshold},
    )


class OnnxRuntimeNet:
    """An ONNX model on onnxruntime (CPU); ``forward((N, 3, S, S)) -> (N, A, K)``."""

    name = "onnxruntime"

    def __init__(self, path: Path, threads: int) -> None:
        import onnxruntime

        options = onnxruntime.SessionOptions()
        if threads > 0:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self._session = onnxruntime.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # onnxruntime raises its own exception types for unreadable models
            raise ModelFileError(path, f"onnxruntime cannot load it ({_first_line(exc)})", _REPLACE) from exc
        model_input = self._session.get_inputs()[0]
        self._input = model_input.name
        self.input_shape = tuple(model_input.shape)
        # A fixed batch dimension of 1 (the usual YOLOX export) takes the frames one at a time.
        self.batch_limit = 1 if self.input_shape and self.input_shape[0] == 1 else None

    def forward(self, batch: np.ndarray) -> np.ndarray:
        step = self.batch_limit or len(batch)
        outputs = [self._session.run(None, {self._input: batch[i : i + step]})[0] for i in range(0, len(batch), step)]
        return np.concatenate(outputs)


class OpenCvNet:
    """An ONNX model on OpenCV's dnn module; ``forward((N, 3, S, S)) -> (N, A, K)``."""

    name = "opencv"

    def __init__(self, path: Path) -> None:
        try:
            self._net = cv2.dnn.readNetFromONNX(str(path))
        except cv2.error as exc:
            raise ModelFileError(path, f"OpenCV cannot read it as ONNX ({_first_line(exc)})", _REPLACE) from exc
        self.input_shape: tuple = ()  # cv2.dnn does not report it; the first forward checks it

    def forward(self, batch: np.ndarray) -> np.ndarray:
        outputs = []
        for image in batch:  # the exported graph reshapes with a fixed batch of 1
            self._net.setInput(image[None])
            outputs.append(self._net.forward())
        return np.concatenate(outputs)


_REPLACE = "replace it with the publisher's file (YOLOX release ONNX export)"


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0][:200] if text else type(exc).__name__


def open_onnx(path: Path, runtime: str, threads: int) -> OnnxRuntimeNet | OpenCvNet:
    """The model on the requested runtime; ``auto`` is onnxruntime when installed, else OpenCV."""
    if runtime not in RUNTIMES:
        raise ValueError(f"runtime {runtime!r} is not one of: {', '.join(RUNTIMES)}")
    if runtime in ("auto", "onnxruntime"):
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            if runtime == "onnxruntime":
                raise ModelFileError(
                    path, "the onnxruntime package is not installed", "pip install onnxruntime, or set runtime: opencv"
                ) from None
        else:
            return OnnxRuntimeNet(path, threads)
    return OpenCvNet(path)


class YoloxDetector:
    """Batched YOLOX inference over frames of any sources; person boxes only, no masks.

    model: the ``.onnx`` file, absolute or relative to the models directory.
    models_dir: the models directory (default ``$GAITSCOPE_MODELS`` or ``~/.cache/gaitscope/models``).
    input_size: the export's square input side in pixels (416 for Nano and Tiny, 640 for S and up).
    score_threshold: least objectness x P(person) to keep a box.
    start_threshold: least score for a box to start a new track; the weaker boxes kept only continue
    tracks (ByteTrack's low-score association), so a person half hidden stays tracked while a
    person-like sign that scores 0.4-0.56 all day never becomes one.
    nms_iou: boxes overlapping a higher-scoring one by more than this IoU are dropped.
    runtime: "auto" (onnxruntime when installed, else OpenCV), "onnxruntime" or "opencv".
    threads: onnxruntime intra-op threads (0: its default, one per core).
    detect_every: run the model on every N-th frame of each source; the tracker predicts the boxes of
    the frames in between (1: every frame).
    """

    has_masks = False

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        models_dir: str | None = None,
        input_size: int = 416,
        score_threshold: float = 0.3,
        start_threshold: float = 0.6,
        nms_iou: float = 0.45,
        runtime: str = "auto",
        threads: int = 1,
        detect_every: int = 1,
    ) -> None:
        if input_size <= 0 or input_size % max(STRIDES):
            raise ValueError(f"input_size must be a positive multiple of {max(STRIDES)}, got {input_size}")
        if not 0 < score_threshold <= start_threshold < 1:
            raise ValueError(
                f"need 0 < score_threshold <= start_threshold < 1, got {score_threshold}, {start_threshold}"
            )
        path = resolve_model_path(model, models_dir)
        if not path.is_file():
            raise ModelFileError(
                path, "not found", "put the YOLOX ONNX export there or set GAITSCOPE_MODELS / detect.models_dir"
            )
        self.path = path
        self.input_size = int(input_size)
        self.score_threshold = float(score_threshold)
        self.start_threshold = float(start_threshold)
        self.nms_iou = float(nms_iou)
        self.schedule = DetectionSchedule(detect_every)
        self._net = open_onnx(path, runtime, threads)
        self.runtime = self._net.name
        self._check_shapes()

    def _check_shapes(self) -> None:
        """A YOLOX export of the configured size: input (1|N, 3, S, S), output (., A, 5 + C) (one dry run)."""
        shape = self._net.input_shape
        if shape and (len(shape) != 4 or shape[1] != 3 or tuple(shape[2:]) != (self.input_size, self.input_size)):
            if len(shape) == 4 and shape[1] == 3 and isinstance(shape[2], int) and shape[2] == shape[3]:
                fix = f"set input_size: {shape[2]}"
            else:
                fix = "give a YOLOX ONNX export (input (1, 3, S, S))"
            raise ModelFileError(
                self.path, f"input shape {list(shape)} is not (1, 3, {self.input_size}, {self.input_size})", fix
            )
        probe = np.full((1, 3, self.input_size, self.input_size), PAD_VALUE, dtype=np.float32)
        try:
            output = self._net.forward(probe)
        except Exception as exc:
            raise ModelFileError(
                self.path,
                f"does not run at input {self.input_size}x{self.input_size} ({_first_line(exc)})",
                "check input_size against the export",
            ) from exc
        expected = len(grid_cells(self.input_size)[0])
        if output.ndim != 3 or output.shape[1] != expected or output.shape[2] < 6:
            raise ModelFileError(
                self.path,
                f"output shape {list(output.shape)} is not a YOLOX head at "
                f"{self.input_size}x{self.input_size} ([1, {expected}, 5 + classes])",
                "give a YOLOX ONNX export without its decoder, or fix input_size",
            )

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        """Person detections for each (H, W, 3) uint8 BGR image, in frame pixels."""
        if not images:
            return []
        prepared = [letterbox(image, self.input_size) for image in images]
        raw = self._net.forward(np.stack([tensor for tensor, _ in prepared]))
        return [
            person_detections(
                out, self.input_size, scale, image.shape[:2], self.score_threshold, self.nms_iou, self.start_threshold
            )
            for out, (_, scale), image in zip(raw, prepared, images)
        ]

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        return self.schedule.run(batch, self.detect)

    def end_source(self, source_id: str) -> list[FrameResult]:
        self.schedule.end_source(source_id)
        return []
