"""Consolidating identities: merging identities that turn out to be one person.

Auto-enrol decides each track once, as it ends, on what the gallery holds at that moment: a person's
first short sighting becomes an identity, and their later tracks, each scored against that thin
evidence, may fall just short of the linking threshold and become identities of their own. Once
the tracks are in, every identity has more evidence than any single track had, so the identities
are compared with each other: an identity's entries pooled per modality (as a track's windows are)
are scored against the other identities by the gallery's own scorer (calibrated, fused, CarGait
re-ranked), and two identities are merged when each scores the other above a threshold (fitted with
the score fusion, ``consolidate:<key>``), best pair first, re-scoring the merged identity before
the next merge (average linkage on the fused log-odds).

Two identities that one camera shows at the same moment on different tracks are different people,
unless the two tracks share only their edges: a tracker that loses a person and picks them up on a
new track often runs both for a moment (a handover). Tracks of one camera that overlap by at most
``handover_overlap`` of the shorter one may be one person, and two identities seen together only
that way merge when they score each other above the linking threshold (``handover_above``), not the
lower consolidation threshold, unless every such pair of tracks hands over in place: the new track's
first boxes and the old one's last boxes coincide on every frame they share (``handover_cover``),
the detector having found the one person twice for a moment (two people passing each other seldom keep
one box inside the other on every such frame). Those merge at the consolidation threshold. Seen together for longer, they merge only on overwhelming evidence
(``together_above``): a track that wandered from its person onto someone else carries its identity
into the other person's time, and the two look like two people seen at once. Two identities named by a
user (not auto-enrolled) are never merged with each other; an auto-enrolled one merges into a named
one. Every merge is recorded in the gallery with its scores (``Gallery.merges``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from stages.gallery.matching import IdentityScorer, SourceCentring, pool
from stages.gallery.store import MODALITIES, Gallery, IdentitySummary, TrackEnds
from stages.track_groups import inside_fraction

log = logging.getLogger(__name__)

# Tracks of one camera that overlap by at most this share of the shorter one may be one person handed
# over between tracks: on the rendered fitting sites, same-person identities seen together this briefly
# scored far above two-person ones; 0.5 rather than 0.3 linked more of them on the benchmark with as
# many wrong links (docs/gallery.md, "Handovers").
HANDOVER_OVERLAP = 0.5

# Share of the smaller box inside the other on every frame two tracks of a handover share, above which the
# new track picked the person up where the old one left them. On eight rendered sites that are not the
# identity benchmark's, 12 of 78 one-person handovers read 0.8 to 1.0, and 2 of 1333 two-person ones (a
# track that had jumped to someone else as it ended; their scores kept them apart), the rest of those at
# most 0.72 (docs/gallery.md, "Handovers in place").
HANDOVER_COVER = 0.75

# Fused log-odds above which two identities one camera showed together (beyond a handover) still
# merge: on the rendered fitting sites and the quick benchmark site every such pair above 5 was one
# person (5.3 to 7.7; a track of theirs had wandered onto someone else), the highest two-person pair
# scored 4.1 (docs/gallery.md, "Seen together").
TOGETHER_ABOVE = 5.0


@dataclass(frozen=True)
class Sighting:
    """Where and when an identity was seen: one of its tracks, from its source, over its time span
    (seconds), with its boxes on its first and last frames where they are known."""

    source: str
    track_id: int | None
    t_start: float | None
    t_end: float | None
    ends: TrackEnds = TrackEnds()


@dataclass(frozen=True)
class IdentityEvidence:
    """An identity's entries pooled per modality (None: no entry of it) and where it was seen."""

    name: str
    query: dict[str, np.ndarray | None]
    sightings: frozenset[Sighting]


@dataclass(frozen=True)
class Merge:
    """``absorbed`` was merged into ``kept``; ``score``: the pair's fused log-odds (the lower direction)."""

    kept: str
    absorbed: str
    score: float
    entries: int

    def as_dict(self) -> dict:
        return {"kept": self.kept, "absorbed": self.absorbed, "score": round(self.score, 4), "entries": self.entries}


def identity_evidence(gallery: Gallery, name: str, used: tuple[str, ...], centring: SourceCentring | None) -> IdentityEvidence:
    """One identity's pooled query, built like a track's (appearance centred by each entry's source)."""
    entries = gallery.entries(name)
    features = gallery.features([e.entry_id for e in entries if e.modality in used])
    query: dict[str, np.ndarray | None] = {}
    for modality in MODALITIES:
        mine = [e for e in entries if e.modality == modality and e.entry_id in features]
        if modality not in used or not mine:
            query[modality] = None
            continue
        stack = np.stack([features[e.entry_id] for e in mine])
        if modality == "appearance" and centring is not None:
            stack = centring.centre(stack, [e.source for e in mine])
        query[modality] = pool(modality, list(stack))
    # a track is seen from its first window's start to its last window's end
    spans: dict[tuple[str, int | None], tuple[float, float]] = {}
    for e in entries:
        if e.t_start is not None and e.t_end is not None:
            lo, hi = spans.get((e.source, e.track_id), (e.t_start, e.t_end))
            spans[(e.source, e.track_id)] = (min(lo, e.t_start), max(hi, e.t_end))
    ends = gallery.track_ends(spans)
    sightings = frozenset(Sighting(source, track, lo, hi, ends.get((source, track), TrackEnds()))
                          for (source, track), (lo, hi) in spans.items())
    return IdentityEvidence(name, query, sightings)


def overlap_share(a_start: float, a_end: float, b_start: float, b_end: float) -> float | None:
    """How much two time spans overlap, as a share of the shorter one (0 to 1; a span of no length
    inside the other: 1); None when they do not overlap."""
    if a_start > b_end or b_start > a_end:
        return None
    shorter = min(a_end - a_start, b_end - b_start)
    return 1.0 if shorter <= 0 else min((min(a_end, b_end) - max(a_start, b_start)) / shorter, 1.0)


def seen_together(a: Iterable[Sighting], b: Iterable[Sighting]) -> list[tuple[Sighting, Sighting, float]]:
    """The pairs of tracks, one of each, that one camera showed at the same moment, with their ``overlap_share``."""
    b = [s for s in b if s.t_start is not None and s.t_end is not None]
    pairs = [(x, y, overlap_share(x.t_start, x.t_end, y.t_start, y.t_end)) for x in a if x.t_start is not None
             and x.t_end is not None for y in b if x.source == y.source and x.track_id != y.track_id]
    return [(x, y, share) for x, y, share in pairs if share is not None]


def handed_over_in_place(a: Sighting, b: Sighting, min_cover: float) -> bool:
    """Whether, of two overlapping tracks of one camera, the later one starts where the earlier one ends:
    on every frame the earlier one's last boxes and the later one's first boxes share (at least one),
    the smaller box lies inside the other by at least ``min_cover`` of its area."""
    earlier, later = sorted((a, b), key=lambda s: (s.t_start, s.t_end))
    last = {row[0]: row[1:] for row in earlier.ends.last}
    shared = [(np.asarray(last[row[0]]), np.asarray(row[1:])) for row in later.ends.first if row[0] in last]
    return bool(shared) and all(_cover(x, y) >= min_cover for x, y in shared)


def _cover(x: np.ndarray, y: np.ndarray) -> float:
    """Share of the smaller of two xyxy boxes that lies inside the other."""
    smaller, larger = (x, y) if (x[2] - x[0]) * (x[3] - x[1]) <= (y[2] - y[0]) * (y[3] - y[1]) else (y, x)
    return float(inside_fraction(smaller[None], larger)[0])


class Consolidator:
    """Merges identities of ``gallery`` that score each other above ``threshold`` (see the module docstring).

    scorer: the gallery matcher's identity scorer (its modalities, aggregate, calibration, re-ranker).
    centring: the per-source appearance centring the scorer's queries use (None: raw embeddings).
    handover_overlap: tracks of one camera overlapping by at most this share of the shorter one may be
        one person handed over between tracks (0: any overlap means two people; default as the matcher).
    handover_above: the score two identities seen together only across handovers must exceed (None:
        ``threshold``).
    handover_cover: two identities seen together only across handovers that all hand over in place
        (``handed_over_in_place`` at this cover) need only ``threshold`` (None: they need ``handover_above``).
    together_above: the score two identities seen together for longer must exceed (None: they never merge).
    """

    def __init__(self, gallery: Gallery, scorer: IdentityScorer, threshold: float,
                 centring: SourceCentring | None = None, handover_overlap: float = HANDOVER_OVERLAP,
                 handover_above: float | None = None, handover_cover: float | None = HANDOVER_COVER,
                 together_above: float | None = TOGETHER_ABOVE) -> None:
        self.gallery = gallery
        self.scorer = scorer
        self.threshold = float(threshold)
        self.centring = centring
        self.handover_overlap = float(handover_overlap)
        self.handover_above = self.threshold if handover_above is None else max(float(handover_above), self.threshold)
        self.handover_cover = None if handover_cover is None else float(handover_cover)
        self.together_above = None if together_above is None else max(float(together_above), self.handover_above)
        self._evidence: dict[str, IdentityEvidence] = {}
        self._scores: dict[str, dict[str, float]] = {}
        self._summaries: dict[str, IdentitySummary] = {}

    def _identity(self, name: str) -> IdentityEvidence:
        if name not in self._evidence:
            self._evidence[name] = identity_evidence(self.gallery, name, self.scorer.used, self.centring)
        return self._evidence[name]

    def _row(self, name: str) -> dict[str, float]:
        """Fused log-odds of ``name``'s pooled evidence for each shortlisted other identity."""
        if name not in self._scores:
            evidence = self._identity(name)
            ranked = self.scorer.score(evidence.query, exclude={name}) if any(
                q is not None for q in evidence.query.values()) else []
            self._scores[name] = {c.identity: c.fused for c in ranked}
        return self._scores[name]

    def _pair(self, a: str, b: str) -> float | None:
        """The pair's score (the lower of both directions), or None when they may not merge."""
        forward, backward = self._row(a).get(b), self._row(b).get(a)
        if forward is None or backward is None:
            return None
        if not (self._summaries[a].auto or self._summaries[b].auto):
            return None
        score = min(forward, backward)
        together = seen_together(self._identity(a).sightings, self._identity(b).sightings)
        if together:
            if max(share for _, _, share in together) > self.handover_overlap:
                above = self.together_above
            elif self.handover_cover is not None and all(
                    handed_over_in_place(x, y, self.handover_cover) for x, y, _ in together):
                above = self.threshold
            else:
                above = self.handover_above
            if above is None or score <= above:
                return None
        return score

    def run(self, names: Iterable[str] | None = None) -> list[Merge]:
        """Merge until no allowed pair clears the threshold; ``names``: only pairs with at least one of
        these identities are considered (None: every identity). Returns the merges, in order."""
        self._summaries = {s.name: s for s in self.gallery.identities()}
        active = set(self._summaries) if names is None else {n for n in names if n in self._summaries}
        merges: list[Merge] = []
        while active:
            best: tuple[float, str, str] | None = None
            for a in sorted(active):
                for b in sorted(self._row(a)):
                    if b == a or b not in self._summaries:
                        continue
                    score = self._pair(a, b)
                    if score is not None and score > self.threshold and (best is None or score > best[0]):
                        best = (score, a, b)
            if best is None:
                break
            score, a, b = best
            kept, absorbed = sorted((a, b), key=self._keep_order)
            moved = self.gallery.merge_identities(kept, absorbed, {"consolidated": score})
            log.info("gallery: consolidated %s into %s (%d entries, fused log-odds %.2f)", absorbed, kept, moved, score)
            merges.append(Merge(kept, absorbed, score, moved))
            self._summaries.pop(absorbed)
            active.discard(absorbed)
            active.add(kept)
            # the merged identity's evidence and every score involving either side are stale
            for name in (kept, absorbed):
                self._evidence.pop(name, None)
                self._scores.pop(name, None)
            for name in [n for n, row in self._scores.items() if kept in row or absorbed in row]:
                self._scores.pop(name)
        return merges

    def _keep_order(self, name: str) -> tuple[bool, float, str]:
        # a user's name outlives an automatic one; of two automatic ones the older stays
        summary = self._summaries[name]
        return (summary.auto, summary.created, name)
