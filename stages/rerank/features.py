"""Per-part gait features of a labelled set of sequences, and OpenGait's distances between them."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


@dataclass(frozen=True)
class FeatureSet:
    """Embeddings of labelled gait sequences.

    features: (N, P, C) float32, per-part, not normalised (the gait model's output).
    subjects, types, views: (N,) str, e.g. "075", "nm-05", "090" for CASIA-B.
    model_version: the gait model that produced the features.
    """

    features: np.ndarray
    subjects: np.ndarray
    types: np.ndarray
    views: np.ndarray
    model_version: str = ""

    def __post_init__(self) -> None:
        if self.features.ndim != 3:
            raise ValueError(f"features must be (N, P, C), got {self.features.shape}")
        n = len(self.features)
        for name in ("subjects", "types", "views"):
            if len(getattr(self, name)) != n:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n} features")

    def __len__(self) -> int:
        return len(self.features)

    def select(self, mask: np.ndarray) -> "FeatureSet":
        return FeatureSet(
            self.features[mask], self.subjects[mask], self.types[mask], self.views[mask], self.model_version
        )

    def save(self, path: Path) -> None:
        np.savez(
            path,
            features=self.features,
            subjects=self.subjects.astype(str),
            types=self.types.astype(str),
            views=self.views.astype(str),
            model_version=np.array(self.model_version),
        )

    @classmethod
    def load(cls, path: Path) -> "FeatureSet":
        """Read an ``.npz`` with arrays features, subjects, types, views (and model_version)."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"feature file not found: {path}")
        with np.load(path, allow_pickle=False) as z:
            missing = {"features", "subjects", "types", "views"} - set(z.files)
            if missing:
                raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {z.files})")
            version = str(z["model_version"]) if "model_version" in z.files else ""
            return cls(
                z["features"].astype(np.float32),
                z["subjects"].astype(str),
                z["types"].astype(str),
                z["views"].astype(str),
                version,
            )


def part_euclidean(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> np.ndarray:
    """OpenGait's "euc" metric: mean over parts of the Euclidean distance. (N, P, C), (M, P, C) -> (N, M)."""
    x = torch.as_tensor(x, dtype=torch.float32).transpose(0, 1)  # (P, N, C)
    y = torch.as_tensor(y, dtype=torch.float32).transpose(0, 1)
    return torch.cdist(x, y).mean(0).numpy()


def part_cosine(x: np.ndarray | torch.Tensor, y: np.ndarray | torch.Tensor) -> np.ndarray:
    """OpenGait's "cos" metric: 1 - mean over parts of the cosine similarity. -> (N, M)."""
    x = torch.nn.functional.normalize(torch.as_tensor(x, dtype=torch.float32), dim=-1).transpose(0, 1)
    y = torch.nn.functional.normalize(torch.as_tensor(y, dtype=torch.float32), dim=-1).transpose(0, 1)
    return (1.0 - torch.bmm(x, y.transpose(1, 2)).mean(0)).numpy()


def pair_distance(x: np.ndarray, y: np.ndarray, metric: str) -> np.ndarray:
    """Distance matrix under ``metric`` ("euc" or "cos")."""
    if metric == "euc":
        return part_euclidean(x, y)
    if metric == "cos":
        return part_cosine(x, y)
    raise ValueError(f"unknown metric {metric!r}; use 'euc' or 'cos'")
