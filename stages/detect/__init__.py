"""Detection stage: person boxes (and masks where the backend gives them) for each frame.

Backends: ``classic`` (background subtraction, no weights, static cameras) and ``yolo``
(ultralytics, detection or -seg models). `choose_detector` picks between them for ``auto``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

_LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorChoice:
    """Which detector backend to build, why, and the options that choice implies."""

    backend: str  # "yolo" or "classic"
    reason: str
    options: dict[str, object] = field(default_factory=dict)


def choose_detector(weights: str | None) -> DetectorChoice:
    """``auto`` detection: YOLO when its weights file exists, the classic detector otherwise.

    Logs one line saying which backend was chosen and why.
    """
    if weights and Path(weights).expanduser().is_file():
        path = str(Path(weights).expanduser())
        choice = DetectorChoice("yolo", f"weights file {path} exists", {"weights": path})
    elif weights:
        choice = DetectorChoice("classic", f"weights file {weights} not found (no download at run time)")
    else:
        choice = DetectorChoice("classic", "no detector weights configured")
    _LOG.info("detector: %s (%s)", choice.backend, choice.reason)
    return choice
