"""Saving and loading CarGait checkpoints (cross-attention weights + the gait model they belong to)."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import torch

from stages.rerank.model import CarGait

FORMAT = "gaitscope-cargait-1"


@dataclass(frozen=True)
class RerankerInfo:
    """What a CarGait checkpoint was trained on: the gait model's version and feature shape."""

    gait_model_version: str
    parts: int
    channels: int
    metric: str
    rerank_k: int


def save_reranker(model: CarGait, path: Path, gait_model_version: str, metric: str, rerank_k: int) -> None:
    """Write the inference part of ``model`` (the classifier is a training-only regulariser)."""
    state = {k: v.detach().clone() for k, v in model.state_dict().items() if not k.startswith("classifier.")}
    blob = {
        "format": FORMAT,
        "state_dict": state,
        "parts": model.parts,
        "channels": model.channels,
        "hidden": model.cross.q.out_features,
        "heads": model.cross.heads,
        "gait_model_version": gait_model_version,
        "metric": metric,
        "rerank_k": rerank_k,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(blob, tmp)
    os.replace(tmp, path)


def load_reranker(path: str | Path) -> tuple[CarGait, RerankerInfo]:
    """CarGait in eval mode and its provenance; a clear error when the file is missing or foreign."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"CarGait checkpoint not found: {path} (train one: python -m training.rerank --config configs/train/cargait.yaml)")
    blob = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(blob, dict) or blob.get("format") != FORMAT:
        raise ValueError(f"{path} is not a CarGait checkpoint (expected format {FORMAT!r})")
    model = CarGait(blob["parts"], blob["channels"], 0, blob["hidden"], blob["heads"])
    model.load_state_dict(blob["state_dict"])
    info = RerankerInfo(str(blob["gait_model_version"]), int(blob["parts"]), int(blob["channels"]), str(blob["metric"]), int(blob["rerank_k"]))
    return model.eval(), info
