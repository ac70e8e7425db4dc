"""Per-part gait features of a labelled set of sequences: extracted from CASIA-B with a gait model,
saved as ``.npz``, read back as a :class:`FeatureSet` (the re-ranker's training and test data, the
gallery's calibration data).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from stages.gait.embedding import embed_sequences, spread_positions
from stages.gait.model import GaitBase
from training.casia_b import CasiaB, SequenceKey

if TYPE_CHECKING:
    from evaluation.gait_sites import SiteWalks

FEATURES_DIR = Path("~/.cache/gaitscope/features").expanduser()


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

    @classmethod
    def concatenate(cls, sets: list[FeatureSet]) -> FeatureSet:
        """One set of several made by the same gait model."""
        versions = {fs.model_version for fs in sets}
        if len(versions) != 1:
            raise ValueError(f"feature sets of different gait models cannot be joined: {sorted(versions)}")
        arrays = (np.concatenate([getattr(fs, k) for fs in sets]) for k in ("features", "subjects", "types", "views"))
        return cls(*arrays, versions.pop())

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
        as written by ``save`` or by :func:`extract_casia_features`. ``model_version``
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


@dataclass(frozen=True)
class WalkerSource:
    """Rendered walkers of one kind (``evaluation.gait_sites.render_site_walks``): ``segmenter`` None for
    surveillance cameras through the segmentation-error model (``mask_noise``), else the identity
    benchmark's cameras through that segmenter (``pose_crop``, or ``exact`` rendered masks)."""

    identities: int = 1500
    seed: int = 31
    frames: int = 40
    mask_noise: float = 1.0
    segmenter: str | None = None

    @property
    def masks(self) -> str:
        return self.segmenter or "noise"


def walker_sources(walkers: dict | list, held_out_seed: int, **defaults) -> list[WalkerSource]:
    """A recipe's ``walkers``: one mapping of ``WalkerSource`` fields or a list of them (walkers seen
    another way; the same seed and identity is the same person in every source); ``defaults``: the
    recipe kind's own defaults for fields an entry leaves out."""
    entries = walkers if isinstance(walkers, list) else [walkers]
    if not entries or not all(isinstance(e, dict) for e in entries):
        raise ValueError("walkers must be a mapping or a non-empty list of mappings")
    valid = {f.name for f in fields(WalkerSource)}
    sources = []
    for entry in entries:
        unknown = set(entry) - valid
        if unknown:
            raise ValueError(f"unknown walkers keys {sorted(unknown)}; valid: {', '.join(sorted(valid))}")
        source = WalkerSource(**{**defaults, **entry})
        if source.seed == held_out_seed:
            raise ValueError(f"walkers.seed {source.seed} is the gait report's held-out seed; pick another")
        sources.append(source)
    return sources


def walker_features(model: GaitBase, version: str, identities: int, seed: int, frames: int = 40,
                    mask_noise: float = 1.0, segmenter: str | None = None) -> tuple[FeatureSet, SiteWalks]:
    """Rendered walkers (``evaluation.gait_sites``; ``segmenter`` as there) embedded by the gait model, and the
    walks: subjects "w<id>", types "<condition>-<outfit>", views the camera's view angle in degrees."""
    from evaluation.gait_sites import render_site_walks

    walks = render_site_walks(identities, frames, seed, mask_noise, segmenter)
    features = embed_sequences(model, list(zip(walks.silhouettes, walks.ratios)))
    fs = FeatureSet(features, np.array([f"w{i:05d}" for i in walks.identity]),
                    np.array([f"{c}-{o}" for c, o in zip(walks.condition, walks.outfit)]),
                    np.array([f"{v:.0f}" for v in walks.view_deg]), version)
    return fs, walks


def sequence_seed(name: str) -> int:
    """A stable per-sequence seed (the corruption protocol draws the same noise for every model)."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:4], "little")


def extract_casia_features(
    model: GaitBase,
    reader: CasiaB,
    keys: list[SequenceKey],
    max_frames: int | None,
    out_path: Path | None = None,
    batch_frames: int = 1024,
    progress: bool = True,
    corruption: str | None = None,
    flip_test: str | None = None,
) -> dict[str, np.ndarray]:
    """Embeddings of CASIA-B sequences: {"embeddings" (N, P, C), "labels", "types", "views"}
    (string arrays), saved as npz at ``out_path`` when given.

    corruption: a level of ``training.augment.CORRUPTION_LEVELS`` applied to the frames that are
    embedded, seeded per sequence (the same noise for every model). flip_test: see embed_sequences.
    """
    from tqdm import tqdm

    from training.augment import corrupt_fixed

    done: list[SequenceKey] = []

    def frames() -> Iterator[tuple[np.ndarray, None]]:
        for seq in tqdm(
            reader.iter_sequences(keys), total=len(keys), desc="embed", mininterval=10, disable=not progress
        ):
            done.append(seq.key)
            sils = seq.silhouettes[spread_positions(len(seq), max_frames)]
            if corruption is not None:
                sils = corrupt_fixed(sils, corruption, seed=sequence_seed(seq.key.name))
            yield sils, None

    emb = embed_sequences(model, frames(), batch_frames, flip_test)
    result = {
        "embeddings": emb,
        "labels": np.array([k.subject for k in done]),
        "types": np.array([k.type for k in done]),
        "views": np.array([k.view for k in done]),
    }
    if out_path is not None:
        out_path.parent.mkdir(parents=True, exist_ok=True)
        tmp = out_path.with_name(out_path.name + ".tmp.npz")
        np.savez(tmp, **result)
        tmp.replace(out_path)
    return result
