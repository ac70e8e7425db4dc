"""A compact appearance CNN for 128x64 person crops (trainable on CPU), with a BNNeck.

Input: ``[n, 3, 128, 64]`` float RGB normalised with ImageNet mean/std (:func:`crops_to_tensor`
converts BGR uint8 crops). Output: ``[n, embed_dim]`` features after the BNNeck (what retrieval
uses; L2-normalise them) and class logits at training time.
"""

from __future__ import annotations

import itertools
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class AppearanceConfig:
    """widths: channels of the stem and of each of the three residual stages; embed_dim: D."""

    widths: tuple[int, ...] = (32, 64, 128, 256)
    embed_dim: int = 256
    num_classes: int = 1

    def to_dict(self) -> dict:
        d = asdict(self)
        d["widths"] = list(self.widths)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> AppearanceConfig:
        unknown = set(d) - set(cls.__dataclass_fields__)
        if unknown:
            raise ValueError(f"unknown appearance model keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


def crops_to_tensor(crops_bgr: np.ndarray) -> torch.Tensor:
    """(n, 128, 64, 3) uint8 BGR -> [n, 3, 128, 64] float normalised RGB."""
    x = torch.from_numpy(np.ascontiguousarray(crops_bgr[..., ::-1])).permute(0, 3, 1, 2).float().div_(255.0)
    mean = torch.tensor(MEAN).view(1, 3, 1, 1)
    std = torch.tensor(STD).view(1, 3, 1, 1)
    return (x - mean) / std


class ResidualStage(nn.Module):
    """conv3x3/2 + conv3x3 with a 1x1/2 projection shortcut: halves h and w."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, 2, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, 2, bias=False), nn.BatchNorm2d(cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x), inplace=True)


class AppearanceNet(nn.Module):
    """Stem (conv3x3/2) + 3 residual stages (128x64 -> 8x4), GAP + GMP, linear to D, BNNeck."""

    def __init__(self, config: AppearanceConfig) -> None:
        super().__init__()
        self.config = config
        w = config.widths
        self.stem = nn.Sequential(nn.Conv2d(3, w[0], 3, 2, 1, bias=False), nn.BatchNorm2d(w[0]), nn.ReLU(inplace=True))
        self.stages = nn.Sequential(*[ResidualStage(a, b) for a, b in itertools.pairwise(w)])
        self.embed = nn.Linear(2 * w[-1], config.embed_dim)
        self.neck = nn.BatchNorm1d(config.embed_dim)
        self.neck.bias.requires_grad_(False)  # BNNeck: no shift before the classifier
        self.classifier = nn.Linear(config.embed_dim, config.num_classes, bias=False)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """-> (features before the neck [n, D] for the triplet loss, after the neck [n, D], logits)."""
        f = self.stages(self.stem(x))
        pooled = torch.cat([f.mean((2, 3)), f.amax((2, 3))], 1)
        feat = self.embed(pooled)
        neck = self.neck(feat)
        return feat, neck, self.classifier(neck)

    @torch.inference_mode()
    def embed_crops(self, crops_bgr: np.ndarray, batch: int = 128) -> np.ndarray:
        """(n, 128, 64, 3) uint8 BGR -> (n, D) float32 L2-normalised (flip-averaged)."""
        self.eval()
        out = []
        for i in range(0, len(crops_bgr), batch):
            x = crops_to_tensor(crops_bgr[i : i + batch])
            f = self(x)[1] + self(x.flip(3))[1]
            out.append(F.normalize(f, dim=1).numpy())
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0, self.config.embed_dim), np.float32)


def pool_track(frame_embeddings: np.ndarray) -> np.ndarray:
    """(T, D) L2-normalised frame embeddings -> (D,) L2-normalised track embedding (mean)."""
    m = frame_embeddings.mean(0)
    return (m / max(float(np.linalg.norm(m)), 1e-12)).astype(np.float32)
