"""Loading gait weights: this project's checkpoints and OpenGait's.

This project's files hold ``{'model': state_dict, 'config': GaitBaseConfig dict, ...}``; OpenGait's
hold ``{'model': state_dict, 'optimizer': ..., 'scheduler': ..., 'iteration': ...}`` and no config,
so the architecture is read back from the parameter shapes (strides and the stem max-pool leave no
trace in the weights: they default to GaitBase's 1/2/2/1 without max-pool).
"""

from __future__ import annotations

import collections
from pathlib import Path

import torch

from stages.checkpoints import sha256_of
from stages.gait.model import GaitBase, GaitBaseConfig

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "gar_site.pt"


def config_from_state_dict(
    state: dict[str, torch.Tensor], strides: tuple[int, ...] = (1, 2, 2, 1), maxpool: bool = False
) -> GaitBaseConfig:
    """Architecture of an OpenGait Baseline/ResNet9 state_dict, read from its parameter shapes."""
    prefix = "Backbone.forward_block."
    if prefix + "conv1.conv.weight" not in state or "FCs.fc_bin" not in state:
        raise ValueError(
            "not a GaitBase (OpenGait Baseline + ResNet9) state_dict: "
            "Backbone.forward_block.conv1.conv.weight / FCs.fc_bin missing"
        )
    stem = state[prefix + "conv1.conv.weight"]
    channels, layers = [], []
    prev = int(stem.shape[0])
    for i in range(1, 5):
        blocks = sorted({int(k.split(".")[3]) for k in state if k.startswith(f"{prefix}layer{i}.")})
        layers.append(len(blocks))
        if blocks:
            prev = int(state[f"{prefix}layer{i}.0.conv1.weight"].shape[0])
        channels.append(prev)
    parts, _, embed_dim = (int(s) for s in state["FCs.fc_bin"].shape)
    class_num = int(state["BNNecks.fc_bin"].shape[2]) if "BNNecks.fc_bin" in state else 1
    ratio = "RatioAttention.conv.weight" in state
    return GaitBaseConfig(
        channels=tuple(channels),
        layers=tuple(layers),
        strides=strides,
        maxpool=maxpool,
        in_channels=int(stem.shape[1]),
        parts=parts,
        embed_dim=embed_dim,
        class_num=class_num,
        ratio_attention=ratio,
        ratio_kernel=int(state["RatioAttention.conv.weight"].shape[-1]) if ratio else 3,
    )


def load_checkpoint(path: str | Path) -> dict:
    """A checkpoint dict, read with ``weights_only=True`` (OpenGait's scheduler state holds a Counter)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"gait weights not found: {path} "
            "(train them with python -m training.gait, or pass an OpenGait GaitBase checkpoint)"
        )
    with torch.serialization.safe_globals([collections.Counter]):
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(ckpt, dict) or "model" not in ckpt:
        raise ValueError(f"{path} is not a gait checkpoint: expected a dict with a 'model' state_dict")
    return ckpt


def load_gait_model(path: str | Path = DEFAULT_WEIGHTS) -> tuple[GaitBase, str]:
    """(model in eval mode, version string "<file stem>@<sha256[:12]>") from a checkpoint file."""
    ckpt = load_checkpoint(path)
    state = ckpt["model"]
    cfg = GaitBaseConfig.from_dict(ckpt["config"]) if "config" in ckpt else config_from_state_dict(state)
    model = GaitBase(cfg)
    model.load_state_dict(state, strict=True)
    model.eval()
    return model, f"{Path(path).stem}@{sha256_of(path)[:12]}"
