"""Detection stage: person boxes (and masks where the backend gives them) for each frame.

Backends: ``classic`` (background subtraction, no weights, static cameras), ``centre`` (background
subtraction read by a small learned centre detector, shipped weights, static cameras), ``yolox`` (YOLOX
ONNX exports), ``yolo`` (ultralytics: ``.pt`` weights or exported OpenVINO / ONNX models) and
``openvino`` (SSD person detectors in OpenVINO IR such as Intel's pedestrian-detection-adas-0002).
`build_auto_detector` is ``backend: auto``: the best third-party detector whose model file is found,
else the shipped centre detector, else the classic one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.model_files import find_model

_LOG = logging.getLogger(__name__)

# Learned detectors ``auto`` looks for in the models directory, best first: YOLOX-Nano (Apache-2.0,
# 44 of ~46 campus people at score 0.3, fast on onnxruntime or cv2.dnn), the Ultralytics YOLOv8n
# OpenVINO export (as good, but AGPL-3.0 and needs openvino + ultralytics), Intel's SSD pedestrian
# detector (Apache-2.0, misses small people: 36 of 46, false hits indoors).
LEARNED_MODELS: tuple[tuple[str, str, str, str], ...] = (
    ("yolox", "model", "yolox_nano/yolox_nano.onnx", "YOLOX-Nano ONNX, Apache-2.0"),
    ("yolo", "weights", "yolov8n_int8_openvino", "Ultralytics YOLOv8n OpenVINO export, AGPL-3.0"),
    (
        "openvino",
        "model",
        "pedestrian_detection_adas_0002/pedestrian-detection-adas-0002.xml",
        "Intel pedestrian-detection-adas-0002, Apache-2.0",
    ),
)
AUTO_BRANCHES = ("yolox", "yolo", "openvino", "centre", "classic")


@dataclass(frozen=True)
class DetectorChoice:
    """A detector backend ``auto`` may build, why, and the options that choice implies."""

    backend: str
    reason: str
    options: dict[str, object] = field(default_factory=dict)


def detector_candidates(weights: str | None, models_dir: str | None) -> list[DetectorChoice]:
    """The detectors ``auto`` tries, in order: the configured YOLO weights, the learned models found in
    the models directory (`LEARNED_MODELS` order), the shipped centre detector, and the classic detector
    last (always there)."""
    from stages.detect.centre import DEFAULT_WEIGHTS as CENTRE_WEIGHTS

    candidates = []
    if weights:
        path = Path(weights).expanduser()
        if path.exists():
            candidates.append(DetectorChoice("yolo", f"weights {path} configured", {"weights": str(path)}))
        else:
            _LOG.warning("detector: configured weights %s not found (no download at run time)", weights)
    for backend, key, relative, what in LEARNED_MODELS:
        found = find_model(relative, models_dir)
        if found is not None:
            options: dict[str, object] = {key: str(found)}
            if backend != "yolo" and models_dir is not None:
                options["models_dir"] = models_dir
            candidates.append(DetectorChoice(backend, f"{what}, found at {found}", options))
    if CENTRE_WEIGHTS.is_file():
        candidates.append(DetectorChoice("centre", "no third-party model found: the shipped centre detector"
                                         if not candidates else "the shipped centre detector"))
    candidates.append(
        DetectorChoice(
            "classic",
            "no learned detector model found" if len(candidates) == 0 else "every learned detector failed to load",
        )
    )
    return candidates


def build_auto_detector(params: Mapping[str, Any]) -> tuple[str, Any]:
    """``detect: {backend: auto, ...}`` -> (backend name, built detector); see `choose_detector`."""
    choice, detector = choose_detector(params)
    return choice.backend, detector


def choose_detector(params: Mapping[str, Any]) -> tuple[DetectorChoice, Any]:
    """``detect: {backend: auto, weights, models_dir, yolox: {...}, yolo: {...}, openvino: {...},
    classic: {...}}`` -> (the choice, with every option the detector was built with; the detector).

    Tries `detector_candidates` in order; a candidate whose model is corrupt, of the wrong shape or
    lacks its runtime is one warning line and the next is tried; configured weights refused as unsafe
    stop the run (one line), so a hostile file is never quietly replaced by another detector. Logs once which detector was chosen
    and why. Every branch's options are validated first, so a typo in a branch not taken is reported.
    """
    from pipeline.config import ConfigError, build, check_arguments
    from stages.catalog import DETECTORS
    from stages.checkpoints import UnsafeCheckpointError

    params = dict(params)
    weights = params.pop("weights", None)
    models_dir = params.pop("models_dir", None)
    branches = {name: params.pop(name, None) or {} for name in AUTO_BRANCHES}
    if params:
        accepted = ", ".join(("weights", "models_dir", *AUTO_BRANCHES))
        raise ConfigError(f"detect: unknown key {next(iter(params))!r} for backend auto (accepted: {accepted})")
    for name, options in branches.items():
        if not isinstance(options, dict):
            raise ConfigError(f"detect.{name}: expected a mapping of {name} options")
        check_arguments(DETECTORS.load(name), options, f"detect.{name}")
    *learned, classic = detector_candidates(weights, models_dir)
    for choice in learned:
        options = {**branches[choice.backend], **choice.options}
        try:
            detector = build(DETECTORS.load(choice.backend), options, f"detect.{choice.backend}")
        except (ConfigError, UnsafeCheckpointError):  # a hostile weights file is refused, never passed over
            raise
        except Exception as exc:  # noqa: BLE001 - a broken model or missing runtime: say so, try the next one
            lines = str(exc).strip().splitlines() or [type(exc).__name__]
            _LOG.warning("detector: cannot use %s: %s", choice.backend, lines[0])
            continue
        _LOG.info("detector: %s (%s)", choice.backend, choice.reason)
        return DetectorChoice(choice.backend, choice.reason, options), detector
    _LOG.info("detector: classic (%s)", classic.reason)
    chosen = DetectorChoice("classic", classic.reason, dict(branches["classic"]))
    return chosen, build(DETECTORS.load("classic"), chosen.options, "detect.classic")
