"""Appearance ReID stage: one L2-normalised embedding per track window from its RGB crops."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from pipeline.messages import SilhouetteSequence, TrackWindow
from stages.reid.model import AppearanceConfig, AppearanceNet, pool_track

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "reid_clothes.pt"


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
    """Embed ``sequence.crops`` of every window (or only of those routed to appearance).

    Sets ``window.appearance_embedding`` (D,) float32, L2-normalised (mean of the frames'
    normalised embeddings, renormalised) and ``window.model_versions["reid"]``. Windows without
    crops are skipped.

    weights: checkpoint (default: the shipped weights/reid_clothes.pt). routes: "all" (every window:
    the gallery fuses appearance with gait) or "appearance" (only windows the gait detector sent to
    appearance). max_frames: at most this many crops
    per window, spread evenly. batch: crops per forward pass.
    """

    def __init__(
        self, weights: str = str(DEFAULT_WEIGHTS), routes: str = "all", max_frames: int = 16, batch: int = 128
    ) -> None:
        check_routes(routes)
        self.model, self.version = load_appearance_model(weights)
        self.routes = routes
        self.max_frames = max_frames if max_frames > 0 else None
        self.batch = batch

    def process(self, batch: list[TrackWindow]) -> list[TrackWindow]:
        def embed(crops: np.ndarray) -> np.ndarray:
            return self.model.embed_crops(crops, self.batch)

        return embed_windows(batch, self.routes, self.max_frames, embed, self.version)


def check_routes(routes: str) -> None:
    if routes not in ("appearance", "all"):
        raise ValueError(f"routes must be 'appearance' or 'all', got {routes!r}")


def embed_windows(
    batch: list[TrackWindow],
    routes: str,
    max_frames: int | None,
    embed_crops: Callable[[np.ndarray], np.ndarray],
    version: str,
) -> list[TrackWindow]:
    """Set ``appearance_embedding`` and ``model_versions["reid"]`` on the windows that want one.

    A window wants one when it has crops and ``routes`` is "all" or the gait detector sent it to
    appearance. ``embed_crops``: (n, 128, 64, 3) uint8 BGR -> (n, D) L2-normalised; one call for
    the crops of all windows (at most ``max_frames`` per window, spread evenly); a window's
    embedding is the renormalised mean of its frames'. Frames whose box the tracker cut out of a box
    around several people (``sequence.group_parts``) show the others too: they are left out when the
    window has any other frame.
    """
    todo = [w for w in batch if _wants_embedding(w, routes)]
    if not todo:
        return batch
    own = [_own_crops(w.sequence) for w in todo]
    picks = [crops[spread(len(crops), max_frames)] for crops in own]
    frames = embed_crops(np.concatenate(picks))
    start = 0
    for window, crops in zip(todo, picks):
        window.appearance_embedding = pool_track(frames[start : start + len(crops)])
        window.model_versions["reid"] = version
        start += len(crops)
    return batch


def _own_crops(sequence: SilhouetteSequence) -> np.ndarray:
    """The crops of the frames that show the person alone (all of them when none does)."""
    parts = sequence.group_parts
    if parts is None or parts.all():
        return sequence.crops
    return sequence.crops[~parts]


def _wants_embedding(window: TrackWindow, routes: str) -> bool:
    if window.sequence.crops is None or len(window.sequence) == 0:
        return False
    if routes == "all":
        return True
    return window.gait is not None and window.gait.route == "appearance"
