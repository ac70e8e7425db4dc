"""Shared test helpers: where the real data lives, and skipping cleanly without it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

PROJECT_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = (PROJECT_ROOT / ".." / "shared" / "data").resolve()
VIDEOS = SHARED_DATA / "videos"
CASIA_B = SHARED_DATA / "casia-b"


def load_script(name: str):
    """The module ``scripts/<name>.py`` (scripts are not a package), imported from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, PROJECT_ROOT / "scripts" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


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


def write_clip(path: Path, frames: int = 60, size: tuple[int, int] = (120, 160), fps: int = 10) -> Path:
    """A small H.264 clip of a bright upright blob walking right (the classic detector tracks it)."""
    import av
    import numpy as np

    height, width = size
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast"})
        stream.height, stream.width, stream.pix_fmt = height, width, "yuv420p"
        for i in range(frames):
            image = np.full((height, width, 3), 90, np.uint8)
            x = 10 + (2 * i) % max(1, width - 30)
            image[height // 4 : height - 20, x : x + 18] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="bgr24")):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    return path
