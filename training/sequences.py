"""In-memory gait sequence sets and OpenGait's samplers.

A :class:`SequenceSet` holds labelled sequences and cuts frame clips from them:

- ``fixed_unordered`` (OpenGait's training default): ``frames`` frames drawn at random, with
  replacement only when the sequence is shorter; order does not matter to temporal max-pooling.
- ``fixed_ordered``: one contiguous clip of ``frames`` frames (looped when too short); used when the
  model looks at the time axis (ratio attention's conv1d).
- ``all_ordered`` (test): every frame in order, optionally capped to the first ``max_frames``.

:class:`TripletSampler` yields batches of P identities x K sequences (OpenGait's TripletSampler):
identities without replacement per batch, sequences with replacement when an identity has fewer
than K.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np

from training.casia_b import CasiaB, SequenceKey, unpack_sequence

SampleType = Literal["fixed_unordered", "fixed_ordered", "all_ordered"]


@dataclass(frozen=True)
class Clip:
    """Frames cut from one sequence. silhouettes: (f, 64, 44) uint8 0/255; ratios: (f,) float32
    box height / 64 or None; rgb: (f, H, W, 3) uint8 RGB or None; label: training class index."""

    silhouettes: np.ndarray
    ratios: np.ndarray | None
    rgb: np.ndarray | None
    label: int


def frame_positions(
    length: int, frames: int, sample_type: SampleType, rng: np.random.Generator, max_frames: int | None = None
) -> np.ndarray:
    """Positions of the frames to take from a sequence of ``length`` frames."""
    if length <= 0:
        raise ValueError("cannot sample from an empty sequence")
    if sample_type == "all_ordered":
        stop = length if max_frames is None else min(length, max_frames)
        return np.arange(stop)
    if sample_type == "fixed_unordered":
        return rng.choice(length, size=frames, replace=length < frames)
    if sample_type == "fixed_ordered":
        start = int(rng.integers(0, max(1, length - frames + 1)))
        return (start + np.arange(frames)) % length
    raise ValueError(f"unknown sample_type {sample_type!r}")


class SequenceSet:
    """Labelled sequences kept in memory.

    Sequences are stored as callables-free arrays: CASIA-B ones bit-packed (T, 64, 8) (8x smaller),
    unpacked per clip. ``labels`` are dense class indices 0..num_classes-1; ``identities`` the
    original names; ``keys`` optional metadata (CASIA-B SequenceKey) per sequence.
    """

    def __init__(
        self,
        silhouettes: Sequence[np.ndarray],
        identities: Sequence[str],
        packed: bool = False,
        ratios: Sequence[np.ndarray] | None = None,
        rgb: Sequence[np.ndarray] | None = None,
        keys: Sequence[SequenceKey] | None = None,
    ) -> None:
        if len(silhouettes) != len(identities):
            raise ValueError("one identity per sequence is needed")
        self.silhouettes = list(silhouettes)
        self.packed = [bool(packed)] * len(self.silhouettes)  # per sequence: concatenated sets mix both
        self.ratios = None if ratios is None else list(ratios)
        self.rgb = None if rgb is None else list(rgb)
        self.identities = list(identities)
        self.classes = sorted(set(self.identities))
        index = {c: i for i, c in enumerate(self.classes)}
        self.labels = np.array([index[i] for i in self.identities], dtype=np.int64)
        self.keys = None if keys is None else list(keys)

    @classmethod
    def from_casia(cls, reader: CasiaB, keys: Sequence[SequenceKey]) -> SequenceSet:
        packed = reader.load_packed(keys)
        present = [k for k in keys if k in packed]
        return cls([packed[k] for k in present], [k.subject for k in present], packed=True, keys=present)

    @classmethod
    def concat(cls, sets: Sequence[SequenceSet]) -> SequenceSet:
        """One set holding every sequence of ``sets`` (identities with the same name merge). Ratios
        and RGB are kept only when every part has them."""
        out = cls(
            [x for s in sets for x in s.silhouettes],
            [x for s in sets for x in s.identities],
            ratios=None if any(s.ratios is None for s in sets) else [x for s in sets for x in s.ratios],
            rgb=None if any(s.rgb is None for s in sets) else [x for s in sets for x in s.rgb],
        )
        out.packed = [x for s in sets for x in s.packed]
        return out

    def __len__(self) -> int:
        return len(self.silhouettes)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def length(self, i: int) -> int:
        return len(self.silhouettes[i])

    def clip(
        self, i: int, frames: int, sample_type: SampleType, rng: np.random.Generator, max_frames: int | None = None
    ) -> Clip:
        pos = frame_positions(self.length(i), frames, sample_type, rng, max_frames)
        sil = self.silhouettes[i][pos]
        if self.packed[i]:
            sil = unpack_sequence(sil)
        return Clip(
            silhouettes=sil,
            ratios=None if self.ratios is None else self.ratios[i][pos].astype(np.float32),
            rgb=None if self.rgb is None else self.rgb[i][pos],
            label=int(self.labels[i]),
        )


class TripletSampler:
    """Endless batches of indices: P identities x K sequences each (OpenGait's TripletSampler)."""

    def __init__(
        self, labels: np.ndarray, identities_per_batch: int, sequences_per_identity: int, seed: int = 0
    ) -> None:
        self.by_label: dict[int, np.ndarray] = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
        if identities_per_batch > len(self.by_label):
            raise ValueError(f"P={identities_per_batch} identities per batch but only {len(self.by_label)} in the set")
        self.p = identities_per_batch
        self.k = sequences_per_identity
        self.rng = np.random.default_rng(seed)

    def __iter__(self) -> Iterator[np.ndarray]:
        labels = np.array(sorted(self.by_label))
        while True:
            chosen = self.rng.choice(labels, size=self.p, replace=False)
            batch = [
                self.rng.choice(self.by_label[int(c)], size=self.k, replace=len(self.by_label[int(c)]) < self.k)
                for c in chosen
            ]
            yield np.concatenate(batch)


class MixedTripletSampler:
    """P x K batches drawn from two groups of identities (e.g. CASIA-B and synthetic walkers):
    ``round(P * second_fraction)`` identities of each batch come from ``second``, the rest from
    ``first``; within each group, as :class:`TripletSampler`."""

    def __init__(
        self,
        labels: np.ndarray,
        second: np.ndarray,
        identities_per_batch: int,
        sequences_per_identity: int,
        second_fraction: float,
        seed: int = 0,
    ) -> None:
        if not 0.0 <= second_fraction <= 1.0:
            raise ValueError(f"second_fraction must be in [0, 1], got {second_fraction}")
        second = np.asarray(second, dtype=bool)
        if second.shape != labels.shape:
            raise ValueError("one group flag per sequence is needed")
        self.p_second = int(round(identities_per_batch * second_fraction))
        self.p_first = identities_per_batch - self.p_second
        idx = np.arange(len(labels))
        self.groups = []
        for p, member in ((self.p_first, ~second), (self.p_second, second)):
            if p == 0:
                continue
            sub = TripletSampler(labels[member], p, sequences_per_identity, seed=seed + len(self.groups))
            self.groups.append((sub, idx[member]))

    def __iter__(self) -> Iterator[np.ndarray]:
        iters = [(iter(sub), index) for sub, index in self.groups]
        while True:
            yield np.concatenate([index[next(it)] for it, index in iters])
