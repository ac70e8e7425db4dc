"""Segmentation stage: a full-frame boolean mask for every tracked person.

Backends: ``pose_crop`` (MediaPipe BlazePose's person segmentation on a square crop around each
tracked box), ``paddleseg`` (a PP-HumanSeg / PP-LiteSeg exported inference model run on each person
crop), ``detector`` (the detector's own masks, e.g. YOLO-seg or the classic detector, with a
fallback for detections that have none) and ``foreground`` (background subtraction inside each box,
for detectors without masks on static cameras). After this stage ``detections.mask`` is
(N, H, W) bool and False outside each detection's box. `build_auto_segmenter` is ``backend: auto``:
the best learned segmenter whose model file is found, else the detector's masks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stages.auto_choice import AutoCandidates, BackendCandidate, build_first_usable, split_options
from stages.model_files import models_dir, resolve_model_path

POSE_MODEL = "mediapipe_pose/pose_landmark_full.tflite"
PADDLESEG_MODEL = "pp_humanseg_v1_lite_192"
INSTALL_HINT = "scripts/install.sh puts the MediaPipe files into the models directory"


def build_auto_segmenter(params: Mapping[str, Any]) -> tuple[str, Any]:
    """``segment: {backend: auto, models_dir, pose_crop: {...}, paddleseg: {...}, detector: {...}}``
    -> (backend name, built segmenter): the first of `segmenter_candidates` that works here."""
    from stages.catalog import SEGMENTERS

    own, branches = split_options("segment", SEGMENTERS, params, ("models_dir",))
    return build_first_usable("segment", SEGMENTERS, segmenter_candidates(own.get("models_dir"), branches))


def segmenter_candidates(models_dir_override: str | None, branches: dict[str, dict[str, Any]]) -> AutoCandidates:
    """``auto`` segmentation, best first: BlazePose crops, PP-HumanSeg crops, the detector's own masks.

    A learned segmenter is a candidate when its model file is in the models directory (or where
    its branch options put it); the detector's masks (boxes-only detectors: the moving foreground
    inside each box) are always last. Measured on a rendered site (``python -m evaluation.front_end``),
    BlazePose crops give the best masks.
    """
    found = AutoCandidates()
    where = models_dir(models_dir_override)
    for backend, key, default, what in (
        ("pose_crop", "model", POSE_MODEL, "BlazePose person segmentation on tracked crops"),
        ("paddleseg", "model_dir", PADDLESEG_MODEL, "PP-HumanSeg-Lite on person crops"),
    ):
        options = {key: default, **branches.get(backend, {})}
        path = resolve_model_path(options[key], models_dir_override)
        if path.exists():
            found.add(BackendCandidate(backend, {**options, key: str(path)}, f"{what}, {path}"))
        else:
            found.skip(f"no {path.relative_to(where) if path.is_relative_to(where) else path} in {where}")
    if not any(c.backend == "pose_crop" for c in found.candidates):
        found.skip(INSTALL_HINT)
    found.add(BackendCandidate("detector", dict(branches.get("detector", {})), "the detector's own masks"))
    return found
