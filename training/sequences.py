"""In-memory gait sequence sets and OpenGait's samplers.

A :class:`SequenceSet` holds labelled sequences and cuts frame clips from them:

- ``fixed_unordered`` (OpenGait's training default): ``frames`` frames drawn at random, with
  replacement only when the sequence is shorter; order does not matter to temporal max-pooling.
- ``fixed_ordered``: one contiguous clip of ``frames`` frames (looped when too short); used when the
  model looks at the time axis (ratio attention's conv1d).
- ``all_ordered`` (test): every frame in order, optionally capped to the first ``max_frames``.

:class:`TripletSampler` yields batches of P identities x K sequences (OpenGait's TripletSampler):
identities without replacement per batch, sequences with replacement when an identity has fewer
than K. Given each sequence's view group, it can spread an identity's K sequences over its views
(``spread_views``), so that every identity in a batch brings positives seen from different sides.
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
    original names; ``keys`` optional metadata (CASIA-B SequenceKey) per sequence; ``view_groups``
    (N,) int, the index of each sequence's ``synth.realism.VIEW_GROUPS`` group, -1 where unknown.
    """

    def __init__(
        self,
        silhouettes: Sequence[np.ndarray],
        identities: Sequence[str],
        packed: bool = False,
        ratios: Sequence[np.ndarray] | None = None,
        rgb: Sequence[np.ndarray] | None = None,
        keys: Sequence[SequenceKey] | None = None,
        view_groups: Sequence[int] | None = None,
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
        groups = np.full(len(self.silhouettes), -1) if view_groups is None else np.asarray(view_groups)
        if groups.shape != (len(self.silhouettes),):
            raise ValueError("one view group per sequence is needed")
        self.view_groups = groups.astype(np.int64)

    @classmethod
    def from_casia(cls, reader: CasiaB, keys: Sequence[SequenceKey]) -> SequenceSet:
        packed = reader.load_packed(keys)
        present = [k for k in keys if k in packed]
        return cls([packed[k] for k in present], [k.subject for k in present], packed=True, keys=present,
                   view_groups=[view_group_index(float(k.view)) for k in present])

    @classmethod
    def concat(cls, sets: Sequence[SequenceSet]) -> SequenceSet:
        """One set holding every sequence of ``sets`` (identities with the same name merge). Ratios
        and RGB are kept only when every part has them."""
        out = cls(
            [x for s in sets for x in s.silhouettes],
            [x for s in sets for x in s.identities],
            ratios=None if any(s.ratios is None for s in sets) else [x for s in sets for x in s.ratios],
            rgb=None if any(s.rgb is None for s in sets) else [x for s in sets for x in s.rgb],
            view_groups=np.concatenate([s.view_groups for s in sets]),
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


def view_group_index(view_deg: float) -> int:
    """Index of the ``synth.realism.VIEW_GROUPS`` group nearest to a viewing angle in degrees."""
    from synth.realism import VIEW_GROUPS, view_group  # the renderer's module: imported when used

    return list(VIEW_GROUPS).index(view_group(view_deg))


class TripletSampler:
    """Endless batches of indices: P identities x K sequences each (OpenGait's TripletSampler).

    With ``view_groups`` (one per sequence, -1 unknown) an identity's K sequences are spread over its
    view groups: the groups are visited in random order, one sequence from each in turn, so that
    a head-on walk and a side-on walk of one person meet in the batch whenever the person has both
    (drawn at random they often do not, and then the triplet loss never asks the two to be close).
    """

    def __init__(
        self,
        labels: np.ndarray,
        identities_per_batch: int,
        sequences_per_identity: int,
        seed: int = 0,
        view_groups: np.ndarray | None = None,
    ) -> None:
        self.by_label: dict[int, np.ndarray] = {int(c): np.flatnonzero(labels == c) for c in np.unique(labels)}
        if identities_per_batch > len(self.by_label):
            raise ValueError(f"P={identities_per_batch} identities per batch but only {len(self.by_label)} in the set")
        if view_groups is not None and len(view_groups) != len(labels):
            raise ValueError("one view group per sequence is needed")
        self.p = identities_per_batch
        self.k = sequences_per_identity
        self.rng = np.random.default_rng(seed)
        self.view_groups = None if view_groups is None else np.asarray(view_groups)

    def _sequences(self, members: np.ndarray) -> np.ndarray:
        if self.view_groups is None:
            return self.rng.choice(members, size=self.k, replace=len(members) < self.k)
        groups = self.view_groups[members]
        by_group = [self.rng.permutation(members[groups == g]) for g in self.rng.permutation(np.unique(groups))]
        # Round robin over the groups: the first of each group, then the second of each, ...
        order = [seq[i] for i in range(max(len(seq) for seq in by_group)) for seq in by_group if i < len(seq)]
        return np.resize(np.array(order), self.k)

    def __iter__(self) -> Iterator[np.ndarray]:
        labels = np.array(sorted(self.by_label))
        while True:
            chosen = self.rng.choice(labels, size=self.p, replace=False)
            yield np.concatenate([self._sequences(self.by_label[int(c)]) for c in chosen])


class MixedTripletSampler:
    """P x K batches drawn from two groups of identities (e.g. CASIA-B and synthetic walkers):
    ``round(P * second_fraction)`` identities of each batch come from ``second``, the rest from
    ``first``; within each group, as :class:`TripletSampler` (with ``view_groups`` if given)."""

    def __init__(
        self,
        labels: np.ndarray,
        second: np.ndarray,
        identities_per_batch: int,
        sequences_per_identity: int,
        second_fraction: float,
        seed: int = 0,
        view_groups: np.ndarray | None = None,
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
            views = None if view_groups is None else np.asarray(view_groups)[member]
            sub = TripletSampler(labels[member], p, sequences_per_identity, seed=seed + len(self.groups),
                                 view_groups=views)
            self.groups.append((sub, idx[member]))

    def __iter__(self) -> Iterator[np.ndarray]:
        iters = [(iter(sub), index) for sub, index in self.groups]
        while True:
            yield np.concatenate([index[next(it)] for it, index in iters])
