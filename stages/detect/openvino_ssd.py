"""SSD person detectors in OpenVINO IR (Intel Open Model Zoo, e.g. pedestrian-detection-adas-0002).

The model takes one ``(1, 3, H, W)`` BGR image, 0..255, the frame resized to the input size without
keeping its aspect (as the zoo's models were trained), and gives ``(1, 1, N, 7)`` rows of
``[image_id, label, confidence, x_min, y_min, x_max, y_max]`` with coordinates in 0..1; a negative
image_id ends the list. Needs the ``openvino`` package (an optional extra).
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np
import supervision as sv

from pipeline.messages import FrameResult
from stages.detect.schedule import DetectionSchedule
from stages.model_files import ModelFileError, resolve_model_path

DEFAULT_MODEL = "pedestrian_detection_adas_0002/pedestrian-detection-adas-0002.xml"


def ssd_detections(
    rows: np.ndarray, frame_size: tuple[int, int], score_threshold: float, label: int | None
) -> sv.Detections:
    """SSD output rows (N, 7) -> detections in frame pixels (class 0 = person)."""
    rows = rows.reshape(-1, 7)
    ended = np.flatnonzero(rows[:, 0] < 0)
    rows = rows[: ended[0]] if len(ended) else rows
    keep = rows[:, 2] >= score_threshold
    if label is not None:
        keep &= rows[:, 1] == label
    rows = rows[keep]
    height, width = frame_size
    xyxy = (rows[:, 3:7] * np.array([width, height, width, height], dtype=np.float32)).astype(np.float32)
    xyxy[:, [0, 2]] = xyxy[:, [0, 2]].clip(0, width)
    xyxy[:, [1, 3]] = xyxy[:, [1, 3]].clip(0, height)
    return sv.Detections(
        xyxy=xyxy.reshape(-1, 4), confidence=rows[:, 2].astype(np.float32), class_id=np.zeros(len(rows), dtype=int)
    )


class OpenVinoSsdDetector:
    """Person boxes from an OpenVINO SSD detector, no masks.

    model: the ``.xml`` file (its ``.bin`` beside it), absolute or relative to the models directory.
    models_dir: the models directory (default ``$GAITSCOPE_MODELS`` or ``~/.cache/gaitscope/models``).
    score_threshold: least confidence to keep a box.
    label: the output label of people (None: every label; the zoo's person detectors have one class).
    threads: OpenVINO inference threads (0: its default).
    detect_every: run the model on every N-th frame of each source; the tracker predicts the boxes of
    the frames in between (1: every frame).
    """

    has_masks = False

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        models_dir: str | None = None,
        score_threshold: float = 0.5,
        label: int | None = None,
        threads: int = 1,
        detect_every: int = 1,
    ) -> None:
        if not 0 < score_threshold < 1:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        path = resolve_model_path(model, models_dir)
        if not path.is_file() or not path.with_suffix(".bin").is_file():
            raise ModelFileError(
                path,
                "not found (or its .bin is missing)",
                "put the OpenVINO IR pair there or set GAITSCOPE_MODELS / detect.models_dir",
            )
        try:
            import openvino
        except ImportError:
            raise ModelFileError(
                path, "needs the openvino package, which is not installed", "pip install openvino"
            ) from None
        core = openvino.Core()
        try:
            network = core.read_model(str(path))
            config = {"INFERENCE_NUM_THREADS": threads} if threads > 0 else {}
            self._compiled = core.compile_model(network, "CPU", config)
        except Exception as exc:  # openvino raises RuntimeError subclasses of its own for bad IR
            text = str(exc).strip().splitlines()
            raise ModelFileError(
                path,
                f"OpenVINO cannot load it ({text[0][:160] if text else type(exc).__name__})",
                "replace the .xml/.bin pair with the publisher's files",
            ) from exc
        shape = network.inputs[0].get_partial_shape()
        output = network.outputs[0].get_partial_shape()
        if shape.rank.get_length() != 4 or shape.is_dynamic or shape[1].get_length() != 3:
            raise ModelFileError(path, f"input shape {shape} is not (1, 3, H, W)", "give an SSD detector IR")
        if output.rank.get_length() != 4 or output[-1].get_length() != 7:
            raise ModelFileError(path, f"output shape {output} is not SSD's [1, 1, N, 7]", "give an SSD detector IR")
        self.path = path
        self.input_size = (shape[2].get_length(), shape[3].get_length())  # (height, width)
        self.score_threshold = float(score_threshold)
        self.label = label
        self.schedule = DetectionSchedule(detect_every)
        self._request = self._compiled.create_infer_request()

    def detect(self, images: Sequence[np.ndarray]) -> list[sv.Detections]:
        """Person detections for each (H, W, 3) uint8 BGR image, in frame pixels."""
        height, width = self.input_size
        found = []
        for image in images:  # the zoo's IR has a fixed batch of 1
            blob = cv2.resize(image, (width, height), interpolation=cv2.INTER_LINEAR).transpose(2, 0, 1)[None]
            rows = self._request.infer([blob.astype(np.float32)])[self._compiled.outputs[0]]
            found.append(ssd_detections(np.asarray(rows), image.shape[:2], self.score_threshold, self.label))
        return found

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        return self.schedule.run(batch, self.detect)

    def end_source(self, source_id: str) -> list[FrameResult]:
        self.schedule.end_source(source_id)
        return []
