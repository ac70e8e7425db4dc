"""Appearance ReID stage: one L2-normalised embedding per track window from its RGB crops."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from pipeline.messages import TrackWindow
from stages.reid.model import AppearanceConfig, AppearanceNet, pool_track

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "reid_mars.pt"


def spread(n: int, cap: int | None) -> np.ndarray:
    """Positions of all ``n`` items, or of ``cap`` of them spread evenly."""
    if cap is None or n <= cap:
        return np.arange(n)
    return np.unique(np.linspace(0, n - 1, cap).round().astype(np.int64))


def load_appearance_model(path: str | Path = DEFAULT_WEIGHTS) -> tuple[AppearanceNet, str]:
    """(model in eval mode, version "<stem>@<sha256[:12]>") from ``{'model', 'config'}``."""
    from stages.checkpoints import sha256_of

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"appearance ReID weights not found: {path} (train them with python -m training.reid)"
        )
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt or "config" not in ckpt:
        raise ValueError(f"{path} is not an appearance ReID checkpoint: expected {{'model', 'config'}}")
    model = AppearanceNet(AppearanceConfig.from_dict(ckpt["config"]))
    model.load_state_dict(ckpt["model"], strict=True)
    model.eval()
    return model, f"{path.stem}@{sha256_of(path)[:12]}"


class AppearanceReID:
    """Embed ``sequence.crops`` of windows routed to appearance (or of every window).

    Sets ``window.appearance_embedding`` (D,) float32, L2-normalised (mean of the frames'
    normalised embeddings, renormalised) and ``window.model_versions["reid"]``. Windows without
    crops are skipped.

    weights: checkpoint (default: the shipped weights/reid_mars.pt). routes: "appearance" (only
    windows the gait detector sent to appearance) or "all". max_frames: at most this many crops
    per window, spread evenly. batch: crops per forward pass.
    """

    def __init__(
        self, weights: str = str(DEFAULT_WEIGHTS), routes: str = "appearance", max_frames: int = 16, batch: int = 128
    ) -> None:
        if routes not in ("appearance", "all"):
            raise ValueError(f"routes must be 'appearance' or 'all', got {routes!r}")
        self.model, self.version = load_appearance_model(weights)
        self.routes = routes
        self.max_frames = max_frames if max_frames > 0 else None
        self.batch = batch

    def _wanted(self, window: TrackWindow) -> bool:
        if window.sequence.crops is None or len(window.sequence) == 0:
            return False
        if self.routes == "all":
            return True
        return window.gait is not None and window.gait.route == "appearance"

    def process(self, batch: list[TrackWindow]) -> list[TrackWindow]:
        todo = [w for w in batch if self._wanted(w)]
        if not todo:
            return batch
        picks = [w.sequence.crops[spread(len(w.sequence), self.max_frames)] for w in todo]
        frames = self.model.embed_crops(np.concatenate(picks), self.batch)
        start = 0
        for window, crops in zip(todo, picks):
            window.appearance_embedding = pool_track(frames[start : start + len(crops)])
            window.model_versions["reid"] = self.version
            start += len(crops)
        return batch
