"""Identity metrics on plain records: closed-set rank-1 / mAP, open-set DIR at a FAR, pairwise links.

A probe's ranking is its gallery items, nearest first, each with the ground-truth identity of the
item and its distance (smaller = more alike). Probes that got no embedding have an empty ranking:
they count as not identified (rank-1 miss, AP 0) and, in the open set, as rejected.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from itertools import combinations

import numpy as np


@dataclass(frozen=True)
class ProbeRanking:
    """One probe track against one gallery.

    identity: the probe's ground-truth identity. changed_clothes: no gallery item of that identity
    wears the probe's clothes. gallery_identities: identity of each ranked gallery item, nearest
    first; distances: their distances (same length). relevant: gallery items of the probe's identity
    in the whole gallery (ranked or not), the denominator of AP.
    """

    identity: int
    changed_clothes: bool
    gallery_identities: tuple[int, ...]
    distances: tuple[float, ...]
    relevant: int

    def without(self, identities: set[int]) -> ProbeRanking:
        """The ranking against the same gallery with those identities' items removed."""
        keep = [i for i, g in enumerate(self.gallery_identities) if g not in identities]
        relevant = 0 if self.identity in identities else self.relevant
        return ProbeRanking(self.identity, self.changed_clothes, tuple(self.gallery_identities[i] for i in keep),
                            tuple(self.distances[i] for i in keep), relevant)


def average_precision(hits: Sequence[bool], relevant: int) -> float:
    """AP of a ranked list: mean over all ``relevant`` items of the precision at each one's rank
    (relevant items missing from the list count with precision 0)."""
    if relevant <= 0:
        return 0.0
    hits = np.asarray(hits, bool)
    ranks = np.flatnonzero(hits) + 1
    return float(np.sum(np.arange(1, len(ranks) + 1) / ranks) / relevant)


@dataclass(frozen=True)
class ClosedSetScores:
    """rank1: share of probes whose nearest gallery item is their identity; map: mean AP;
    coverage: share of probes with a non-empty ranking (an embedding to search with);
    rank1_covered: rank1 among those probes only (how good the embedding is where there is one);
    reachable: share of probes whose ranking holds an item of their identity (both sides have an
    embedding); rank1_reachable: rank1 among those (chance is about one in the number of people)."""

    probes: int
    rank1: float | None
    map: float | None
    coverage: float | None
    rank1_covered: float | None = None
    reachable: float | None = None
    rank1_reachable: float | None = None

    def as_dict(self) -> dict:
        return {"probes": self.probes, "rank1": rounded(self.rank1), "map": rounded(self.map),
                "coverage": rounded(self.coverage),
                "rank1_covered": rounded(self.rank1_covered), "reachable": rounded(self.reachable),
                "rank1_reachable": rounded(self.rank1_reachable)}


def closed_set(probes: Sequence[ProbeRanking]) -> ClosedSetScores:
    if not probes:
        return ClosedSetScores(0, None, None, None)
    rank1 = [bool(p.gallery_identities) and p.gallery_identities[0] == p.identity for p in probes]
    aps = [average_precision([g == p.identity for g in p.gallery_identities], p.relevant) for p in probes]
    covered = [bool(p.gallery_identities) for p in probes]
    reachable = [p.identity in p.gallery_identities for p in probes]

    def among(which: list[bool]) -> float | None:
        hits = [r for r, w in zip(rank1, which) if w]
        return float(np.mean(hits)) if hits else None

    return ClosedSetScores(len(probes), float(np.mean(rank1)), float(np.mean(aps)), float(np.mean(covered)),
                           among(covered), float(np.mean(reachable)), among(reachable))


@dataclass(frozen=True)
class OpenSetScores:
    """Detection-and-identification rate at a false-accept rate (the open-set ROC point).

    A probe is accepted when its nearest gallery distance is under ``threshold``; the threshold is
    the largest that accepts at most ``floor(far * unknown)`` never-enrolled probes. dir: share of
    enrolled probes accepted with the right identity at rank 1; far_measured: share of
    never-enrolled probes accepted.
    """

    known: int
    unknown: int
    far: float
    threshold: float | None
    dir: float | None
    far_measured: float | None

    def as_dict(self) -> dict:
        threshold = None if self.threshold is None or not math.isfinite(self.threshold) else round(self.threshold, 5)
        return {"known": self.known, "unknown": self.unknown, "far": self.far, "threshold": threshold,
                "dir": rounded(self.dir), "far_measured": rounded(self.far_measured)}


def open_set(known: Sequence[ProbeRanking], unknown: Sequence[ProbeRanking], far: float = 0.01) -> OpenSetScores:
    """Known probes are ranked against galleries holding their identity, unknown ones against
    galleries that never enrolled theirs (see ``ProbeRanking.without``)."""
    if not known or not unknown:
        return OpenSetScores(len(known), len(unknown), far, None, None, None)
    impostor = np.sort([p.distances[0] if p.distances else np.inf for p in unknown])
    allowed = math.floor(far * len(impostor) + 1e-9)
    threshold = float(impostor[allowed]) if allowed < len(impostor) else np.inf  # accept d < threshold
    accepted = [bool(p.distances) and p.distances[0] < threshold for p in known]
    correct = [a and p.gallery_identities[0] == p.identity for a, p in zip(accepted, known)]
    false_accepts = float(np.mean([bool(p.distances) and p.distances[0] < threshold for p in unknown]))
    return OpenSetScores(len(known), len(unknown), far, threshold, float(np.mean(correct)), false_accepts)


@dataclass(frozen=True)
class LinkScores:
    """Pairwise linking of tracks into identities against the truth.

    Over all pairs of truth-matched tracks: a pair is linked when both got the same (non-empty)
    identity, and should be when both follow the same person. precision = right links / links,
    recall = right links / pairs that should be linked, f1 their harmonic mean (None when
    undefined). identities: distinct predicted identities; unnamed: tracks left without one.
    """

    tracks: int
    pairs_true: int
    pairs_linked: int
    pairs_right: int
    precision: float | None
    recall: float | None
    f1: float | None
    identities: int
    unnamed: int

    def as_dict(self) -> dict:
        return {"tracks": self.tracks, "pairs_true": self.pairs_true, "pairs_linked": self.pairs_linked,
                "pairs_right": self.pairs_right, "precision": rounded(self.precision), "recall": rounded(self.recall),
                "f1": rounded(self.f1), "identities": self.identities, "unnamed": self.unnamed}


def pairwise_links(truth: Sequence[object], predicted: Sequence[str | None]) -> LinkScores:
    """truth: each track's person; predicted: each track's identity name (None: unnamed)."""
    if len(truth) != len(predicted):
        raise ValueError(f"{len(truth)} truth labels for {len(predicted)} predictions")
    should = linked = right = 0
    for i, j in combinations(range(len(truth)), 2):
        same = truth[i] == truth[j]
        link = predicted[i] is not None and predicted[i] == predicted[j]
        should += same
        linked += link
        right += same and link
    precision = right / linked if linked else None
    recall = right / should if should else None
    if precision is None or recall is None:
        f1 = None if recall is None else 0.0
    else:
        f1 = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return LinkScores(len(truth), should, linked, right, precision, recall, f1,
                      len({p for p in predicted if p is not None}), sum(p is None for p in predicted))


def rounded(value: float | None, digits: int = 4) -> float | None:
    """Rounded for JSON; None for None, NaN and infinities."""
    return None if value is None or not math.isfinite(value) else round(float(value), digits)


@dataclass
class Pooled:
    """Probes pooled over sites and enrol cameras, per clothes split."""

    same: list[ProbeRanking] = field(default_factory=list)
    changed: list[ProbeRanking] = field(default_factory=list)

    def add(self, probe: ProbeRanking) -> None:
        (self.changed if probe.changed_clothes else self.same).append(probe)
