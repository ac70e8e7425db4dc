"""Saving and loading GADER classifier weights: state_dict plus the DHS and architecture settings."""

from __future__ import annotations

from pathlib import Path

import torch

from stages.checkpoints import sha256_of
from stages.gait_detector.dhs import DHSConfig
from stages.gait_detector.model import ClassifierConfig, DHSClassifier

DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "gader_dhs.pt"


def save_checkpoint(path: str | Path, model: DHSClassifier, dhs: DHSConfig) -> str:
    """Write weights and settings to ``path``; returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": "gaitscope.gader_dhs/1",
            "model_config": model.config.to_dict(),
            "dhs_config": {"knee_height": dhs.knee_height, "band_rows": dhs.band_rows},
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        path,
    )
    return sha256_of(path)


def load_checkpoint(path: str | Path) -> tuple[DHSClassifier, DHSConfig, str]:
    """Model in eval mode, its DHS settings and a version string ``gader_dhs@<sha256[:12]>``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"GADER weights not found at {path}; train them with "
            "`python -m training.gait_detector --config configs/train/gader.yaml`"
        )
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != "gaitscope.gader_dhs/1":
        raise ValueError(f"{path} is not a gaitscope GADER DHS checkpoint (format gaitscope.gader_dhs/1)")
    model = DHSClassifier(ClassifierConfig.from_dict(data["model_config"]))
    model.load_state_dict(data["state_dict"])
    model.eval()
    return model, DHSConfig(**data["dhs_config"]), f"gader_dhs@{sha256_of(path)[:12]}"
