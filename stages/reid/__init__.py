"""Appearance ReID: an embedding of RGB person crops, pooled over a track's frames.

Backends: ``appearance`` (the project's own CNN, shipped weights) and ``onnx`` (OSNet-style ONNX
exports from the models directory). `build_auto_reid` is ``backend: auto``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stages.auto_choice import AutoCandidates, BackendCandidate, build_first_usable, split_options
from stages.model_files import resolve_model_path

OSNET_MODEL = "osnet_x0_25_msmt17/osnet_x0_25_msmt17.onnx"


def build_auto_reid(params: Mapping[str, Any]) -> tuple[str, Any]:
    """``reid: {backend: auto, models_dir, allow_research_weights, onnx: {...}, appearance: {...}}``
    -> (backend name, built ReID stage): the first of `reid_candidates` that works here."""
    from pipeline.config import ConfigError
    from stages.catalog import REID

    own, branches = split_options("reid", REID, params, ("models_dir", "allow_research_weights"))
    allow = own.get("allow_research_weights", False)
    if not isinstance(allow, bool):
        raise ConfigError(f"reid.allow_research_weights: expected true or false, got {allow!r}")
    return build_first_usable("reid", REID, reid_candidates(own.get("models_dir"), branches, allow))


def reid_candidates(
    models_dir_override: str | None, branches: dict[str, dict[str, Any]], allow_research_weights: bool = False
) -> AutoCandidates:
    """``auto`` ReID, best first: an ONNX OSNet when the user allows research-use weights and the file
    is there, then the project's own appearance model.

    The published OSNet weights are trained on MSMT17, whose licence allows research use only, so
    they are never chosen without ``allow_research_weights``.
    """
    found = AutoCandidates()
    options = {"model": OSNET_MODEL, **branches.get("onnx", {})}
    path = resolve_model_path(options["model"], models_dir_override)
    if not path.is_file():
        found.skip(f"no ONNX ReID model {path}")
    elif not allow_research_weights:
        found.skip(
            f"{path} found but its weights are for research use only; set reid.allow_research_weights=true to use it"
        )
    else:
        found.add(BackendCandidate("onnx", {**options, "model": str(path)}, f"OSNet ONNX {path}"))
    found.add(
        BackendCandidate("appearance", dict(branches.get("appearance", {})), "the project's own appearance model")
    )
    return found
