"""Shared test helpers: where the real data lives, and skipping cleanly without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (PROJECT_ROOT / ".." / "shared" / "data").resolve()
VIDEOS = SHARED_DATA / "videos"
CASIA_B = SHARED_DATA / "casia-b"


def require(path: Path) -> Path:
    """Skip the calling test with a clear message when a piece of the shared data is absent."""
    if not path.exists():
        pytest.skip(f"shared data not found: {path} (tests read ../shared/data next to the project)")
    return path


SHARED_MODELS = (PROJECT_ROOT / ".." / "shared" / "models").resolve()


def require_model(relative: str) -> Path:
    """A third-party model file from ../shared/models, or skip with a message naming it."""
    path = SHARED_MODELS / relative
    if not path.exists():
        pytest.skip(f"shared model not found: {path} (tests read ../shared/models next to the project)")
    return path


def video_frames(path: Path, indices: list[int]) -> dict[int, np.ndarray]:
    """The frames at ``indices`` of a video, (H, W, 3) uint8 BGR, decoded in order."""
    import av

    wanted, frames = set(indices), {}
    with av.open(str(require(path))) as container:
        for index, frame in enumerate(container.decode(video=0)):
            if index in wanted:
                frames[index] = frame.to_ndarray(format="bgr24")
            if index >= max(wanted):
                break
    return frames
