"""Gait recognition stage: per-part GAR embeddings for the gait stretches of track windows."""

from __future__ import annotations

import numpy as np
import torch

from pipeline.messages import TrackWindow
from stages.gait.embedding import FLIP_COMBINE, embed_sequences, spread_positions, steady_rate_positions
from stages.gait.model import MOTION_FRAME_RATE
from stages.gait.weights import DEFAULT_WEIGHTS, load_gait_model


def gait_frames(window: TrackWindow) -> np.ndarray:
    """Positions of the frames inside the window's gait segments, in order (segments may be empty)."""
    if window.gait is None:
        return np.zeros(0, np.int64)
    parts = [np.arange(s.start, s.stop) for s in window.gait.segments if s.stop > s.start]
    if not parts:
        return np.zeros(0, np.int64)
    return np.unique(np.concatenate(parts)).clip(0, len(window.sequence) - 1)


class GaitRecognizer:
    """Embed the gait segments of windows routed to gait (``window.gait.route == "gait"``).

    Sets ``window.gait_embedding`` (P, C) float32 (not normalised; OpenGait's per-part metrics
    apply) and ``window.model_versions["gait"]``. Windows of all calls are packed along time into
    one forward pass of at most ``batch_frames`` frames. Ratios (box height / 64) feed the ratio
    attention when the model has it.

    weights: checkpoint of this project or an OpenGait GaitBase checkpoint (default: the shipped
    ``stages.gait.weights.DEFAULT_WEIGHTS``). max_frames: at most this many frames per window, spread evenly over its
    gait frames (0: all); a model with a motion profile instead gets the gait frames resampled by their times
    to the rate it was trained at (``MOTION_FRAME_RATE``) and at most ``max_frames`` consecutive ones of them.
    min_frames: windows with fewer gait frames get no embedding.
    flip_test: ``"mean"`` or ``"max"`` also embeds the window mirrored left-right and combines the
    two (the embedding no longer depends on the walking direction; twice the compute); ``""``: off.
    """

    def __init__(
        self,
        weights: str = str(DEFAULT_WEIGHTS),
        device: str = "cpu",
        max_frames: int = 120,
        min_frames: int = 8,
        batch_frames: int = 1024,
        flip_test: str = "",
    ) -> None:
        if flip_test not in ("", *FLIP_COMBINE):
            raise ValueError(f"gait.flip_test must be one of {('', *FLIP_COMBINE)}, got {flip_test!r}")
        self.flip_test = flip_test or None
        self.model, self.version = load_gait_model(weights)
        self.device = torch.device(device)
        self.model.to(self.device)
        self.reads_order = self.model.config.motion_lags > 0
        self.max_frames = max_frames if max_frames > 0 else None
        self.min_frames = min_frames
        self.batch_frames = batch_frames

    def process(self, batch: list[TrackWindow]) -> list[TrackWindow]:
        todo: list[TrackWindow] = []
        inputs: list[tuple[np.ndarray, np.ndarray]] = []
        for window in batch:
            if window.gait is None or window.gait.route != "gait":
                continue
            pos = gait_frames(window)
            if len(pos) < self.min_frames:
                continue
            seq = window.sequence
            if self.reads_order:
                pos = pos[steady_rate_positions(seq.pts_s[pos], MOTION_FRAME_RATE, self.max_frames)]
            else:
                pos = pos[spread_positions(len(pos), self.max_frames)]
            inputs.append((seq.silhouettes[pos], seq.ratios[pos].astype(np.float32)))
            todo.append(window)
        if not todo:
            return batch
        embeddings = embed_sequences(self.model, inputs, self.batch_frames, self.flip_test)
        for window, emb in zip(todo, embeddings):
            window.gait_embedding = emb
            window.model_versions["gait"] = self.version
        return batch
