"""GADER gait detector as a track-level stage: finds full-body walking stretches and routes them."""

from __future__ import annotations

from pathlib import Path

from pipeline.messages import GaitDetection, GaitSegment, TrackWindow
from stages.gait_detector.checkpoint import DEFAULT_WEIGHTS, load_checkpoint
from stages.gait_detector.detect import DetectorParams, detect_segments
from stages.gait_detector.dhs import extract_dhs
from stages.gait_detector.route import RoutingParams, route


class GaitDetectorStage:
    """Sets ``window.gait`` (segments, walking fraction, route) and ``model_versions["gait_detector"]``.

    weights: checkpoint path; None means the shipped ``weights/gader_dhs.pt``.
    window_lengths, stride_fraction, score_threshold, nms_iou, merge_gap: see ``DetectorParams``
    (lengths in frames, so they depend on the frame rate: the defaults suit 10-25 fps).
    min_gait_frames, min_walking_fraction, min_appearance_frames: see ``RoutingParams``.
    every_window: skip detection and send every whole window to gait recognition (the baseline
        that GADER's routing is measured against: gait on every frame, standing and partial ones too).
    """

    name = "gait_detector"

    def __init__(
        self,
        weights: str | None = None,
        window_lengths: tuple[int, ...] = (20, 30, 45),
        stride_fraction: float = 0.25,
        score_threshold: float = 0.5,
        nms_iou: float = 0.5,
        merge_gap: int = 4,
        min_gait_frames: int = 20,
        min_walking_fraction: float = 0.0,
        min_appearance_frames: int = 1,
        every_window: bool = False,
    ) -> None:
        self.model, self.dhs_config, self.version = load_checkpoint(Path(weights) if weights else DEFAULT_WEIGHTS)
        self.params = DetectorParams(
            window_lengths=tuple(window_lengths),
            stride_fraction=stride_fraction,
            score_threshold=score_threshold,
            nms_iou=nms_iou,
            merge_gap=merge_gap,
        )
        self.routing = RoutingParams(
            min_gait_frames=min_gait_frames,
            min_walking_fraction=min_walking_fraction,
            min_appearance_frames=min_appearance_frames,
        )
        self.every_window = every_window

    def process(self, batch: list[TrackWindow]) -> list[TrackWindow]:
        for window in batch:
            silhouettes = window.sequence.silhouettes
            if self.every_window:
                window.gait = whole_window_gait(len(silhouettes))
                window.model_versions[self.name] = f"{self.version}+every_window"
                continue
            dhs = extract_dhs(silhouettes, self.dhs_config)
            window.gait = route(detect_segments(self.model, dhs, self.params), len(silhouettes), self.routing)
            window.model_versions[self.name] = self.version
        return batch


def whole_window_gait(num_frames: int) -> GaitDetection:
    """The whole window as one gait segment (score 1): routing switched off."""
    return GaitDetection(segments=[GaitSegment(0, num_frames, 1.0)], walking_fraction=1.0, route="gait")
