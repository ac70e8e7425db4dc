"""Appearance ReID: an embedding of RGB person crops, pooled over a track's frames.

Backends: ``appearance`` (the project's own CNN, shipped weights) and ``onnx`` (OSNet-style ONNX
exports from the models directory). `reid_candidates` lists what ``auto`` may use, best first.
"""

from __future__ import annotations

from typing import Any

from stages.model_files import AutoCandidates, BackendCandidate, resolve_model_path

OSNET_MODEL = "osnet_x0_25_msmt17/osnet_x0_25_msmt17.onnx"


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
