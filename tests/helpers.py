"""Shared test helpers: where the real data lives, and skipping cleanly without it."""

from __future__ import annotations

from pathlib import Path

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
