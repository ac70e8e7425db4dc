"""Per-part gait features of a labelled set of sequences (the re-ranker's training and test data)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


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

    def select(self, mask: np.ndarray) -> FeatureSet:
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
    def load(cls, path: str | Path, model_version: str = "") -> FeatureSet:
        """Read an ``.npz`` with arrays features (or embeddings), subjects (or labels), types, views,
        as written by ``save`` or by ``evaluation.features.extract_casia_features``. ``model_version``
        is used when the file does not record one."""
        path = Path(path).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"feature file not found: {path}")
        with np.load(path, allow_pickle=False) as z:
            names = set(z.files)
            feats = "features" if "features" in names else "embeddings"
            subjects = "subjects" if "subjects" in names else "labels"
            missing = {feats, subjects, "types", "views"} - names
            if missing:
                raise ValueError(f"{path}: missing arrays {sorted(missing)} (has {sorted(names)})")
            version = str(z["model_version"]) if "model_version" in names else model_version
            return cls(
                z[feats].astype(np.float32),
                z[subjects].astype(str),
                z["types"].astype(str),
                z["views"].astype(str),
                version,
            )
