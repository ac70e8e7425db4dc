"""The attribute models' training recipe (``configs/train/clip_gar.yaml``) as typed objects.

Shared by :mod:`training.attributes` (what to train) and :mod:`evaluation.attributes` (held-out data,
CASIA-B subjects, where the weights are).
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import yaml

from training.attributes_data import SynthSpec

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class ModelConfig:
    channels: tuple[int, ...] = (16, 16, 32, 64)
    parts: int = 8
    embed_dim: int = 128
    frame_stride: int = 2


@dataclass(frozen=True)
class FusionModelConfig:
    heads: int = 4
    ff_mult: int = 2
    dropout: float = 0.1


@dataclass(frozen=True)
class TextConfig:
    backend: str = "minilm"
    model_name: str = ""
    checkpoint: str = ""


@dataclass(frozen=True)
class OptimConfig:
    """Adam with cosine decay; training stops at ``iterations`` or after ``time_budget_s`` seconds,
    whichever comes first (the decay follows whichever is nearer its end)."""

    iterations: int = 400
    batch_size: int = 16
    lr: float = 1e-3
    weight_decay: float = 2e-5
    time_budget_s: float = 0.0  # 0: no time limit


@dataclass(frozen=True)
class TrainConfig:
    seed: int = 0
    threads: int = 1
    clip_frames: int = 30
    output: str = "weights/clip_gar.pt"
    baseline_output: str = "weights/clip_gar_baseline.pt"
    model: ModelConfig = field(default_factory=ModelConfig)
    fusion_model: FusionModelConfig = field(default_factory=FusionModelConfig)
    text: TextConfig = field(default_factory=TextConfig)
    train_data: SynthSpec = field(default_factory=lambda: SynthSpec(0, 8, 4, 40, ("nm", "bg"), (0.0, 90.0)))
    test_data: SynthSpec = field(default_factory=lambda: SynthSpec(100000, 4, 3, 40, ("nm", "bg", "cl"), (45.0,)))
    align: OptimConfig = field(default_factory=OptimConfig)
    fusion: OptimConfig = field(default_factory=lambda: OptimConfig(iterations=1500, batch_size=64, lr=5e-4))
    baseline: OptimConfig = field(default_factory=OptimConfig)
    casia_subjects: tuple[str, ...] = ("075", "076", "077", "078", "079", "080", "081", "082", "083", "084")
    casia_views: tuple[str, ...] = ("036", "090", "144")


_NESTED = {
    "model": ModelConfig,
    "fusion_model": FusionModelConfig,
    "text": TextConfig,
    "train_data": SynthSpec,
    "test_data": SynthSpec,
    "align": OptimConfig,
    "fusion": OptimConfig,
    "baseline": OptimConfig,
}


def _build(cls: type, values: dict, where: str):
    if not isinstance(values, dict):
        raise TypeError(f"{where}: expected a mapping, got {type(values).__name__}")
    names = {f.name for f in fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {', '.join(unknown)}; valid: {', '.join(sorted(names))}")
    out = {}
    for key, value in values.items():
        if where == "config" and key in _NESTED:
            out[key] = _build(_NESTED[key], value, f"{where}.{key}")
        elif isinstance(value, list):
            out[key] = tuple(tuple(v) if isinstance(v, list) else v for v in value)
        else:
            out[key] = value
    return cls(**out)


def load_config(path: str | Path) -> TrainConfig:
    """The YAML recipe as a TrainConfig; unknown keys are a one-line error naming them."""
    with open(path) as f:
        return _build(TrainConfig, yaml.safe_load(f) or {}, "config")


def project_path(path: str) -> Path:
    """A recipe path: absolute, or relative to the project root."""
    p = Path(path)
    return p if p.is_absolute() else PROJECT_ROOT / p
