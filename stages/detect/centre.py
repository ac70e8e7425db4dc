"""Learned person detector for static cameras: the classic detector's background subtraction feeding a
small CenterNet (`stages.detect.centre_net`) trained on rendered multi-camera sites, shipped in
``weights/person_centrenet.pt`` (no third-party model file).

Per source: MOG2 foreground (as `stages.detect.classic`) -> the network reads the frame and the
foreground -> one box per person-centre peak. Two people walking one behind the other make one
foreground blob and two peaks. Each detection carries the foreground inside its box as its mask.
People are kept out of the background model while they stand (selective update), as in the classic
detector.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import supervision as sv
import torch

from pipeline.messages import FrameResult
from stages.checkpoints import sha256_of
from stages.detect.background import BackgroundModel, no_people
from stages.detect.centre_net import CentreNetConfig, PersonCentreNet, decode_centres, network_input
from stages.model_files import ModelFileError

FORMAT = "gaitscope.person_centrenet/1"
NMS_IOU = 0.5  # between the boxes of the full-size and the half-size pass
_RETRAIN = ("restore weights/person_centrenet.pt or train it: "
            "python -m training.person_detector --config configs/train/person_detector.yaml")
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "person_centrenet.pt"
# The background model's settings the network was trained with (the classic detector's defaults).
BACKGROUND = {
    "history": 500,
    "var_threshold": 16.0,
    "learning_rate": -1.0,
    "work_width": 640,
    "open_px": 3,
    "close_px": 7,
    "global_change_fraction": 0.35,
    "protect_frames": 50,
}


@dataclass(frozen=True)
class LoadedDetector:
    """A checkpoint's network (eval mode), version string ``person_centrenet@<sha256[:12]>`` and the
    score threshold chosen for it on held-out sites."""

    model: PersonCentreNet
    version: str
    score_threshold: float


def save_detector(path: str | Path, model: PersonCentreNet, score_threshold: float) -> str:
    """Write the weights, architecture and score threshold to ``path``; returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": FORMAT,
            "model_config": model.config.to_dict(),
            "background": BACKGROUND,
            "score_threshold": float(score_threshold),
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        path,
    )
    return sha256_of(path)


def load_detector(path: str | Path) -> LoadedDetector:
    """The checkpoint at ``path``. A missing, unreadable or foreign file is a one-line
    `ModelFileError` (``detect: auto`` then moves on to the classic detector)."""
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(path, "person detector weights not found", _RETRAIN)
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises several types for files that are not its checkpoints
        raise ModelFileError(path, f"not a readable torch checkpoint ({type(exc).__name__})", _RETRAIN) from exc
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ModelFileError(path, f"not a gaitscope person detector checkpoint (format {FORMAT})", _RETRAIN)
    if data.get("background") != BACKGROUND:
        raise ModelFileError(path, f"trained with background settings {data.get('background')}, this code uses "
                             f"{BACKGROUND}", _RETRAIN)
    threshold = data.get("score_threshold")
    if not isinstance(threshold, float) or not 0.0 < threshold < 1.0:
        raise ModelFileError(path, f"no valid score threshold (got {threshold!r})", _RETRAIN)
    model = PersonCentreNet(CentreNetConfig.from_dict(data["model_config"]))
    try:
        model.load_state_dict(data["state_dict"])
    except (RuntimeError, KeyError) as exc:
        raise ModelFileError(path, "its tensors do not fit the network it names", _RETRAIN) from exc
    model.eval()
    return LoadedDetector(model, f"person_centrenet@{sha256_of(path)[:12]}", threshold)


class CentreNetDetector:
    """Person boxes and masks from background subtraction read by a learned centre detector.

    weights: the network's checkpoint (default: the shipped ``weights/person_centrenet.pt``).
    score_threshold: least centre-heatmap probability of a person (default: the checkpoint's, chosen for
    the best F1 on held-out sites).
    warmup_frames: frames per source used only to learn the background (no detections).
    min_height: boxes shorter than this (frame pixels) are dropped.
    large_from: people at least this share of the frame's height tall are found at half size (`people`).
    threads: torch CPU threads (0: leave torch's setting).
    """

    def __init__(
        self,
        *,
        weights: str | None = None,
        score_threshold: float | None = None,
        warmup_frames: int = 20,
        min_height: float = 16.0,
        large_from: float = 0.4,
        threads: int = 1,
    ) -> None:
        if score_threshold is not None and not 0.0 < score_threshold < 1.0:
            raise ValueError(f"score_threshold must be in (0, 1), got {score_threshold}")
        if warmup_frames < 0:
            raise ValueError(f"warmup_frames must be >= 0, got {warmup_frames}")
        loaded = load_detector(weights or DEFAULT_WEIGHTS)
        self.model, self.version = loaded.model, loaded.version
        self.score_threshold = loaded.score_threshold if score_threshold is None else score_threshold
        self.warmup_frames = warmup_frames
        self.min_height = min_height
        self.large_from = large_from
        self.threads = threads
        self._models: dict[str, BackgroundModel] = {}

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        return [
            FrameResult(item.frame, self.detect(item.frame.source_id, item.frame.image), item.ended_track_ids)
            for item in batch
        ]

    def end_source(self, source_id: str) -> list[FrameResult]:
        """The source ended: forget its background model."""
        self._models.pop(source_id, None)
        return []

    def detect(self, source_id: str, image: np.ndarray) -> sv.Detections:
        """People in one frame of a source: xyxy (N, 4) float32, mask (N, H, W) bool, confidence."""
        model = self._models.get(source_id)
        if model is None:
            model = self._models[source_id] = BackgroundModel(**BACKGROUND)
        foreground = model.foreground(image)
        frame_size = (int(image.shape[0]), int(image.shape[1]))
        if model.frames_seen <= self.warmup_frames:
            model.learn()
            return no_people(frame_size)
        small = cv2.resize(image, foreground.shape[::-1], interpolation=cv2.INTER_AREA) if model.scale != 1.0 else image
        boxes, scores = self.people(small[..., ::-1], foreground)
        protect = np.zeros(foreground.shape, dtype=bool)
        for x1, y1, x2, y2 in boxes.astype(int):
            protect[max(y1, 0) : max(y2, 0), max(x1, 0) : max(x2, 0)] = True
        model.learn(protect)
        if not len(boxes):
            return no_people(frame_size)
        boxes = boxes * np.float32(model.scale)
        boxes[:, [0, 2]] = boxes[:, [0, 2]].clip(0, frame_size[1])
        boxes[:, [1, 3]] = boxes[:, [1, 3]].clip(0, frame_size[0])
        tall = (boxes[:, 3] - boxes[:, 1] >= self.min_height) & (boxes[:, 2] > boxes[:, 0])
        boxes, scores = boxes[tall], scores[tall]
        if not len(boxes):
            return no_people(frame_size)
        full = cv2.resize(foreground.view(np.uint8), frame_size[::-1], interpolation=cv2.INTER_NEAREST) > 0
        masks = np.zeros((len(boxes), *frame_size), dtype=bool)
        for i, (x1, y1, x2, y2) in enumerate(np.round(boxes).astype(int)):
            masks[i, y1:y2, x1:x2] = full[y1:y2, x1:x2]
        return sv.Detections(xyxy=boxes.astype(np.float32), mask=masks, confidence=scores,
                             class_id=np.zeros(len(boxes), dtype=int))

    def people(self, image_rgb: np.ndarray, foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Boxes (K, 4) xyxy at the working size and scores (K,) in one frame and its foreground.

        The network learnt people up to about 250 px tall (its training windows); a second pass on the
        frame at half size finds people taller than ``large_from`` of the frame's height (close to the
        camera), and the two passes' boxes go through one NMS."""
        if self.threads > 0 and torch.get_num_threads() != self.threads:
            torch.set_num_threads(self.threads)
        boxes, scores = self._pass(image_rgb, foreground)
        height, width = foreground.shape
        half = (max(1, width // 2), max(1, height // 2))
        half_foreground = cv2.resize(foreground.view(np.uint8), half, interpolation=cv2.INTER_NEAREST) > 0
        large, large_scores = self._pass(cv2.resize(image_rgb, half, interpolation=cv2.INTER_AREA), half_foreground)
        large = large * np.float32(2.0)
        keep = large[:, 3] - large[:, 1] >= self.large_from * height
        boxes, scores = np.concatenate([boxes, large[keep]]), np.concatenate([scores, large_scores[keep]])
        if len(boxes) > 1:
            xywh = np.concatenate([boxes[:, :2], boxes[:, 2:] - boxes[:, :2]], axis=1)
            kept = np.asarray(cv2.dnn.NMSBoxes(xywh.tolist(), scores.tolist(), 0.0, NMS_IOU), dtype=int).reshape(-1)
            boxes, scores = boxes[kept], scores[kept]
        return boxes.reshape(-1, 4), scores

    def _pass(self, image_rgb: np.ndarray, foreground: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        x = torch.from_numpy(network_input(image_rgb, foreground))[None]
        with torch.inference_mode():
            heatmap, size, offset = self.model(x)
        return decode_centres(torch.sigmoid(heatmap)[0, 0].numpy(), size[0].numpy(), offset[0].numpy(),
                              self.score_threshold)
