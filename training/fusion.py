"""Fit the gallery's calibrated score fusion on rendered multi-camera sites.

    python -m training.fusion --config configs/train/fusion.yaml

Each fitting site is rendered and run through the chain up to the embeddings (cached; see
training.site_windows). Every track is then a query against the identities formed by the other
tracks of its site, exactly as the gallery matcher sees them after auto-enrolment: the query is the
track's pooled embeddings, an identity's entries are all windows of its other tracks. From these:

1. per modality, scorer (gait: the plain metric and each re-scorer of ``rescorers``, CarGait
   checkpoints or discriminant projections; appearance: cosine) and aggregate
   (``best`` entry / ``mean`` of entries), a distance -> log-likelihood-ratio logistic fit on the
   query-identity distances (genuine vs impostor, classes weighted equally);
2. per gait scorer and aggregate, the fusion: logistic regression of same-person on the
   per-modality LLRs (agreement / disagreement / missing terms), fitted on the same pairs, where
   people come back in other clothes so appearance disagreement is learned to be weak evidence;
3. per mode (fused, gait, appearance), gait scorer and aggregate, the open-set threshold on the
   fused log-odds at ``target_far`` of the queries' nearest impostor identities;
4. for the default decision (fused, mean), the auto-enrol linking and consolidation thresholds with
   the best link F1 when the gallery matcher itself replays the fitting sites, trying each of
   ``replay_thresholds`` (default ``REPLAY_THRESHOLDS``) and the track-pair simulation's choice;
   each site is replayed as emitted and in ``replay_orders`` (``count``, ``max_offset_s``, ``seed``)
   orders with shifted camera clocks, and the mean over all of them decides (``replay_choice``:
   which of the pairs tied for best, ``ReplayChoice``); a recipe's ``replay_min_enrol_frames``
   (the fewest frames of a track that may start an identity) is chosen with them from its list.

The held-out sites (``eval_sites``) are scored with the fitted parameters: closed-set Rank-1
(same / changed outfit), open-set detection-and-identification rate at the target false-accept
rate. Parameters go to ``out`` (JSON) with a manifest beside it (``<stem minus .params>.json``):
sha256, this command, the data, the models and the measured accuracy.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import itertools
import json
import logging
import os
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.identity.runs import EnrolOrders, clock_shifted_order
from pipeline.config import read_yaml
from pipeline.messages import merged_names
from stages.gait.distance import part_distance
from stages.gallery.consolidation import HANDOVER_OVERLAP, overlap_share
from stages.gallery.matching import SourceCentring, appearance_spread, pool
from stages.gallery.scoring import (
    AGGREGATES,
    CONSOLIDATE,
    ENROL_FRAMES,
    MIXED_SPREAD,
    MODALITIES,
    Fusion,
    ModalityScore,
    ScoreModel,
    threshold_at_far,
)
from stages.gallery.stage import DEFAULT_MIN_ENROL_FRAMES, DEFAULT_RERANKER
from stages.model_files import ENV_VAR as MODELS_ENV
from training.site_windows import SiteWindows, detector_in_use, embedding_versions, site_fps, site_windows

log = logging.getLogger(__name__)
PROJECT_ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Track:
    """One labelled track: per modality its windows' embeddings; label = (site, identity)."""

    site: str
    camera: str
    track_id: int
    label: tuple[str, int]
    outfit: int
    windows: dict[str, np.ndarray]  # modality -> (W, ...) embeddings (W may be 0)
    n_windows: int
    start: float  # seconds: first frame of the track
    end: float  # seconds: when the track ended (its final decision)
    purity: float = 1.0  # share of the track's frames on its labelled walker
    spread: float = 0.0  # appearance spread of its raw windows (stages.gallery.matching.appearance_spread)

    def query(self, modality: str) -> np.ndarray | None:
        w = self.windows[modality]
        return pool(modality, list(w)) if len(w) else None


def tracks_of(site: SiteWindows, source_prior: float | None = 20.0, min_windows: int = 1) -> list[Track]:
    """Labelled tracks of a site; appearance centred per camera as the matcher does (None: raw)."""
    appearance = site.appearance
    if source_prior is not None:
        centring = SourceCentring(prior=source_prior)
        for camera in dict.fromkeys(site.camera.tolist()):
            rows = (site.camera == camera) & site.has_appearance
            centring.add(camera, site.appearance[rows])
        appearance = centring.centre(site.appearance, site.camera.tolist())
    out = []
    for camera, track_id in site.track_keys():
        rows = np.flatnonzero((site.camera == camera) & (site.track_id == track_id))
        identity = int(site.identity[rows[0]])
        if identity < 0 or len(rows) < min_windows:
            continue
        out.append(Track(
            site=site.site, camera=camera, track_id=track_id, label=(site.site, identity), outfit=int(site.outfit[rows[0]]),
            windows={"gait": site.gait[rows[site.has_gait[rows]]], "appearance": appearance[rows[site.has_appearance[rows]]]},
            n_windows=len(rows), start=float(site.t_start[rows].min()), end=float(site.t_end[rows].max()),
            purity=float(site.purity[rows[0]]),
            spread=appearance_spread(list(site.appearance[rows[site.has_appearance[rows]]]),
                                     [(float(site.t_start[r]), float(site.t_end[r])) for r in rows[site.has_appearance[rows]]]),
        ))
    return out


def spread_stats(tracks: list[Track], threshold: float, pure: float = 0.9, impure: float = 0.6) -> dict:
    """How many single-person tracks (purity >= ``pure``) and mixed tracks (purity < ``impure``), each
    with at least two disjoint windows, have an appearance spread above ``threshold``."""
    single = np.array([t.spread for t in tracks if t.purity >= pure and t.spread > 0])
    mixed = np.array([t.spread for t in tracks if t.purity < impure and t.spread > 0])
    return {"threshold": threshold, "single_tracks": len(single), "single_flagged": int((single > threshold).sum()),
            "mixed_tracks": len(mixed), "mixed_flagged": int((mixed > threshold).sum())}


def fit_mixed_spread(tracks: list[Track], quantile: float, pure: float = 0.9) -> dict:
    """The appearance spread above which a track is taken to show more than one person: the
    ``quantile`` of single-person tracks' spreads (purity >= ``pure``, two disjoint windows or more)."""
    single = np.array([t.spread for t in tracks if t.purity >= pure and t.spread > 0])
    if len(single) == 0:
        raise ValueError("no single-person track with two disjoint windows to fit the mixed-track spread on")
    return {**spread_stats(tracks, float(np.quantile(single, quantile)), pure), "quantile": quantile}


def modality_distance(modality: str, query: np.ndarray, entries: np.ndarray, metric: str, aggregate: str,
                      reranker=None) -> float:
    """Distance of a pooled query to an identity's entries (best entry, or the pooled entries)."""
    if aggregate == "mean":
        entries = pool(modality, list(entries))[None]
    if modality == "appearance":
        unit = entries / np.maximum(np.linalg.norm(entries, axis=1, keepdims=True), 1e-12)
        return float((1.0 - unit @ query).min())
    if reranker is not None:
        return float(reranker.pair_distances(np.repeat(query[None], len(entries), 0), entries.astype(np.float32)).min())
    return float(part_distance(query[None], entries, metric)[0].min())


@dataclass
class QueryScores:
    """For one site: per query track and candidate identity, per distance key, the distance (NaN: absent)."""

    queries: list[Track]
    identities: list[tuple[str, int]]
    distances: dict[str, np.ndarray]  # "<modality>/<scorer>/<aggregate>" -> (Q, I)
    genuine: np.ndarray  # (Q, I) bool
    changed_outfit: np.ndarray  # (Q,) bool: the query's outfit differs from every other track of its identity


def query_scores(tracks: list[Track], scorers: dict[str, object], top_k: int) -> QueryScores:
    """Every track against the identities of the other tracks of its site (leave the query's track out).

    scorers: gait scorer name -> re-ranker (None for the plain metric "euc"). CarGait scores only
    the ``top_k`` identities nearest by the plain gait metric, as the matcher does; the others keep NaN
    and fall back to the plain LLR when scored.
    """
    labels = sorted({t.label for t in tracks})
    index = {lab: i for i, lab in enumerate(labels)}
    q, n = len(tracks), len(labels)
    keys = [f"appearance/cos/{a}" for a in AGGREGATES] + [f"gait/{s}/{a}" for s in scorers for a in AGGREGATES]
    dist = {k: np.full((q, n), np.nan) for k in keys}
    genuine = np.zeros((q, n), bool)
    changed = np.zeros(q, bool)
    for qi, track in enumerate(tracks):
        others: dict[tuple[str, int], list[Track]] = {}
        for t in tracks:
            if t is not track and t.site == track.site:
                others.setdefault(t.label, []).append(t)
        same = others.get(track.label, [])
        changed[qi] = bool(same) and all(t.outfit != track.outfit for t in same)
        plain_gait: dict[str, float] = {}
        for label, members in others.items():
            ii = index[label]
            genuine[qi, ii] = label == track.label
            for modality in MODALITIES:
                query = track.query(modality)
                entries = [t.windows[modality] for t in members if len(t.windows[modality])]
                if query is None or not entries:
                    continue
                stack = np.concatenate(entries)
                for aggregate in AGGREGATES:
                    if modality == "appearance":
                        dist[f"appearance/cos/{aggregate}"][qi, ii] = modality_distance(modality, query, stack, "cos", aggregate)
                        continue
                    dist[f"gait/euc/{aggregate}"][qi, ii] = modality_distance(modality, query, stack, "euc", aggregate)
                    plain_gait[label] = dist["gait/euc/best"][qi, ii]
        for scorer, reranker in scorers.items():
            if reranker is None:
                continue
            nearest = sorted(plain_gait, key=plain_gait.get)[:top_k]
            for label in nearest:
                stack = np.concatenate([t.windows["gait"] for t in others[label] if len(t.windows["gait"])])
                for aggregate in AGGREGATES:
                    dist[f"gait/{scorer}/{aggregate}"][qi, index[label]] = modality_distance(
                        "gait", track.query("gait"), stack, "euc", aggregate, reranker)
    return QueryScores(tracks, labels, dist, genuine, changed)


@dataclass
class TrackPairs:
    """For one site: per distance key, (T, T) distances of each track's pooled query to each other
    track's windows (NaN: absent or self), the tracks' truth labels and their end order."""

    labels: list[tuple[str, int]]
    order: np.ndarray
    distances: dict[str, np.ndarray]
    conflict: np.ndarray  # (T, T) bool: same camera at the same time, beyond a handover (cannot be one person)
    mixed: np.ndarray | None = None  # (T,) bool: tracks the matcher identifies but never enrols


def track_pairs(tracks: list[Track], scorers: dict[str, object], top_k: int) -> TrackPairs:
    """Track-vs-track distances as the matcher measures a finished track against an enrolled one."""
    t = len(tracks)
    keys = [f"appearance/cos/{a}" for a in AGGREGATES] + [f"gait/{s}/{a}" for s in scorers for a in AGGREGATES]
    dist = {k: np.full((t, t), np.nan) for k in keys}
    for i, q in enumerate(tracks):
        for j, g in enumerate(tracks):
            if i == j:
                continue
            for modality in MODALITIES:
                query = q.query(modality)
                if query is None or not len(g.windows[modality]):
                    continue
                for aggregate in AGGREGATES:
                    scorer = "cos" if modality == "appearance" else "euc"
                    dist[f"{modality}/{scorer}/{aggregate}"][i, j] = modality_distance(
                        modality, query, g.windows[modality], scorer, aggregate)
        for scorer, reranker in scorers.items():
            if reranker is None or q.query("gait") is None:
                continue
            row = dist["gait/euc/best"][i]
            for j in [j for j in np.argsort(np.where(np.isfinite(row), row, np.inf))[:top_k] if np.isfinite(row[j])]:
                for aggregate in AGGREGATES:
                    dist[f"gait/{scorer}/{aggregate}"][i, j] = modality_distance(
                        "gait", q.query("gait"), tracks[j].windows["gait"], "euc", aggregate, reranker)

    def seen_beside(q: Track, g: Track) -> bool:
        # as the matcher: tracks sharing only their edges may be one person handed over by the tracker
        share = overlap_share(q.start, q.end, g.start, g.end)
        return q is not g and q.camera == g.camera and share is not None and share > HANDOVER_OVERLAP

    conflict = np.array([[seen_beside(q, g) for g in tracks] for q in tracks], bool).reshape(t, t)
    order = np.argsort([tr.end for tr in tracks], kind="stable")
    return TrackPairs([tr.label for tr in tracks], order, dist, conflict)


def simulate_auto_enrol(fused: np.ndarray, order: np.ndarray, threshold: float, enrol_below: float,
                        conflict: np.ndarray | None = None, merge_above: float | None = None,
                        mixed: np.ndarray | None = None) -> list[int]:
    """Identity of each track after auto-enrolment in end order (-1: left unnamed): a track joins
    the identity with the highest score over its member tracks when above ``threshold`` (never one
    with a member it conflicts with), becomes a new identity at most ``enrol_below``; a second
    identity above ``merge_above`` is merged in. A ``mixed`` track is named but neither joins nor
    creates an identity (the matcher never enrols one)."""
    identity = [-1] * len(fused)
    members: dict[int, list[int]] = {}
    for i in order:
        scored = sorted(((max(fused[i, j] for j in m), c) for c, m in members.items()
                         if conflict is None or not conflict[i, m].any()), reverse=True)
        if mixed is not None and mixed[i]:
            identity[i] = scored[0][1] if scored and scored[0][0] > threshold else -1
            continue
        if scored and scored[0][0] > threshold:
            c = scored[0][1]
            members[c].append(i)
            identity[i] = c
            if merge_above is not None and len(scored) > 1 and scored[1][0] > merge_above:
                absorbed = scored[1][1]
                for j in members.pop(absorbed):
                    identity[j] = c
                    members[c].append(j)
        elif not scored or scored[0][0] <= enrol_below:
            identity[i] = max(members, default=-1) + 1
            members[identity[i]] = [i]
    return identity


def link_f1(labels: list, identity: list[int]) -> dict:
    """Pairwise link precision / recall / F1 of predicted identities (-1: unnamed) against truth labels."""
    tp = fp = fn = 0
    for a in range(len(labels)):
        for b in range(a + 1, len(labels)):
            same = labels[a] == labels[b]
            linked = identity[a] >= 0 and identity[a] == identity[b]
            tp += same and linked
            fp += linked and not same
            fn += same and not linked
    p, r = tp / max(tp + fp, 1), tp / max(tp + fn, 1)
    return {"precision": round(p, 4), "recall": round(r, 4), "f1": round(2 * p * r / max(p + r, 1e-12), 4),
            "identities": len({i for i in identity if i >= 0}), "truth": len(set(labels)),
            "unnamed": int(sum(i < 0 for i in identity))}


def _replay(site: SiteWindows, fps: float, model: ScoreModel, options: dict, folder: Path, batch: int) -> dict:
    """The gallery matcher auto-enrolling the site's windows in emission order into a new gallery in
    ``folder`` (no consolidation); returns each finished track's identity, the one its final window
    got or, for a track that finished unnamed, the one the matcher gave it on a second look (as the
    pipeline's records and the identity benchmark read a run's decisions)."""
    from stages.gallery.stage import GalleryMatcher
    from training.site_windows import replayed_track_ends, track_windows

    windows = track_windows(site, fps)
    params = folder / "scores.params.json"
    model.save(params)
    matcher = GalleryMatcher(gallery=str(folder / "gallery"), scores=str(params), auto_enrol=True, consolidate=False,
                             **options)
    try:
        for start in range(0, len(windows), batch):
            matcher.process(windows[start : start + batch])
        # the replayed windows carry no boxes: the tracks' end boxes, for consolidating handovers in place
        for (camera, track_id), ends in replayed_track_ends(site).items():
            matcher.gallery.record_track_ends(camera, track_id, ends)
    finally:
        matcher.close()
    decided = {(w.source_id, int(w.track_id)): (w.identity.identity if w.identity is not None else None)
               for w in windows if w.is_final}
    decided.update({(late.source, int(late.track_id)): late.identity for late in matcher.named_late})
    return decided


def _consolidated(folder: Path, threshold: float | None, options: dict) -> list[dict]:
    """Every merge recorded in the replayed gallery, oldest first, after consolidating it in place at
    ``threshold`` (None: no consolidation); those from the consolidation carry the pair's score in
    ``evidence["consolidated"]``."""
    from stages.gallery.stage import GalleryMatcher

    matcher = GalleryMatcher(gallery=str(folder / "gallery"), scores=str(folder / "scores.params.json"),
                             auto_enrol=True, consolidate=False, consolidate_above=threshold, **options)
    try:
        if threshold is not None:
            matcher.consolidate_identities({s.name for s in matcher.gallery.identities()})
        return matcher.gallery.merges()
    finally:
        matcher.close()


def merges_at_threshold(merges: list[dict], threshold: float | None) -> list[dict]:
    """The merges a consolidation at ``threshold`` (None: none) makes, from those of one at a lower
    threshold: it picks the same best pairs in the same order and stops at the first that does not
    clear its threshold. Online merges (not from consolidation) are all kept."""
    out = []
    for m in merges:
        score = m["evidence"].get("consolidated")
        if score is not None and (threshold is None or score <= threshold):
            break
        out.append(m)
    return out


def _links(site: SiteWindows, decided: dict, merges: list[dict]) -> dict:
    renamed = merged_names(merges)
    label = {(str(c), int(t)): int(i) for c, t, i in zip(site.camera, site.track_id, site.identity)}
    keys = [k for k in decided if label.get(k, -1) >= 0]
    final = {k: renamed.get(decided[k], decided[k]) for k in keys}
    names = {n: i for i, n in enumerate(sorted(set(final.values()) - {None}))}
    return link_f1([label[k] for k in keys], [names.get(final[k], -1) for k in keys])


def replay_auto_enrol(site: SiteWindows, fps: float, model: ScoreModel, options: dict, batch: int = 8,
                      consolidate: tuple[float | None, ...] = (None,)) -> list[dict]:
    """Link scores of the gallery matcher itself auto-enrolling the site's windows in emission order
    (what a run over the site's cameras would decide), against the tracks' truth labels: one result
    per consolidation threshold (None: identities not consolidated at the end), tracks named by the
    identity they live on in after every merge."""
    import tempfile

    with tempfile.TemporaryDirectory(prefix="gaitscope-fusion-") as tmp:
        decided = _replay(site, fps, model, options, Path(tmp), batch)
        # one consolidation at the lowest threshold gives every higher one's merges (a prefix)
        merges = _consolidated(Path(tmp), min((t for t in consolidate if t is not None), default=None), options)
        return [_links(site, decided, merges_at_threshold(merges, t)) for t in consolidate]


def replay_options(reranker: str, source_prior: float | None) -> dict:
    """The gallery matcher's settings for replaying the default decision (fused, mean): its re-ranker
    ("none": the plain metric) and per-camera appearance centring (None: raw embeddings)."""
    return {"modalities": "fused", "aggregate": "mean", "reranker": reranker,
            "source_centring": source_prior is not None,
            "source_prior": float(source_prior if source_prior is not None else 20.0)}


REPLAY_THRESHOLDS = (0.0, 0.5, 1.0, 1.5, 2.0)
CONSOLIDATE_THRESHOLDS = (None, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 2.0)


@dataclass(frozen=True)
class ReplayTrial:
    """One pair of thresholds (and the fewest frames that may start an identity) replayed on the
    fitting sites: the mean over the replays (a site in one order) of the link F1 and of
    |identities - people|, and each replay's link stats."""

    f1: float
    identity_error: float
    threshold: float
    consolidate: float | None
    stats: list
    min_enrol_frames: int = DEFAULT_MIN_ENROL_FRAMES

    @classmethod
    def of(cls, stats: list[dict], threshold: float, consolidate: float | None,
           min_enrol_frames: int = DEFAULT_MIN_ENROL_FRAMES) -> ReplayTrial:
        f1 = float(np.mean([x["f1"] for x in stats]))
        error = float(np.mean([abs(x["identities"] - x["truth"]) for x in stats]))
        return cls(f1, error, threshold, consolidate, stats, min_enrol_frames)


PREFERENCES = ("cautious", "identities")


@dataclass(frozen=True)
class ReplayChoice:
    """How the replay picks among threshold pairs (a recipe's ``replay_choice``): the pairs within
    ``tolerance`` of the best mean link F1 count as tied; of those, ``prefer: identities`` takes the one
    whose identity count is nearest the people's (auto-enrolment's second measure), then the most
    cautious; ``prefer: cautious`` the most cautious alone: the highest linking threshold, then the
    highest consolidation threshold (none above all), because a wrong link mixes two people for good
    while a missed one can still be consolidated later; then the fewest frames to start an identity: a
    track too short to start one is decided again on the second look, at the linking threshold, so
    more frames are not more cautious (on the centre detector's fitting sites 60 frames linked less
    than 40 at every threshold, with as many identities).

    F1 differences of 0.01 are within enrolment-order noise: one fitting site replayed in five orders
    (camera clocks shifted by up to 3 s) spans 0.77-0.84 with the same thresholds."""

    tolerance: float = 0.005
    prefer: str = "cautious"

    def __post_init__(self) -> None:
        if self.tolerance < 0 or self.prefer not in PREFERENCES:
            raise ValueError(f"replay_choice: tolerance must not be negative and prefer one of {PREFERENCES} "
                             f"(got {self.tolerance}, {self.prefer!r})")

    @staticmethod
    def from_dict(data: dict) -> ReplayChoice:
        unknown = sorted(set(data) - {"tolerance", "prefer"})
        if unknown:
            raise ValueError(f"replay_choice: unknown key(s) {unknown}; expected tolerance, prefer")
        default = ReplayChoice()
        return ReplayChoice(float(data.get("tolerance", default.tolerance)), str(data.get("prefer", default.prefer)))

    def best(self, trials: list[ReplayTrial]) -> ReplayTrial:
        top = max(x.f1 for x in trials)
        tied = [x for x in trials if x.f1 >= top - self.tolerance]

        def cautious(x: ReplayTrial) -> tuple[float, float, int]:
            return (-x.threshold, -np.inf if x.consolidate is None else -x.consolidate, x.min_enrol_frames)

        if self.prefer == "identities":
            return min(tied, key=lambda x: (round(x.identity_error, 6), *cautious(x)))
        return min(tied, key=cautious)


def fit_link_by_replay(sites: list[tuple[SiteWindows, float]], model: ScoreModel, key: str, options: dict,
                       candidates: tuple[float, ...], consolidate: tuple[float | None, ...] = CONSOLIDATE_THRESHOLDS,
                       orders: EnrolOrders = EnrolOrders(), choice: ReplayChoice = ReplayChoice(),
                       min_enrol_frames: tuple[int, ...] = (DEFAULT_MIN_ENROL_FRAMES,)) -> dict:
    """The linking threshold (new identities at or below it), the consolidation threshold (None:
    none) and the fewest frames of a track that may start an identity (of ``min_enrol_frames``) with
    the best mean link F1 when the matcher itself replays the fitting sites, in their emitted order and
    in ``orders.count`` orders with shifted camera clocks (online enrolment depends on which sighting
    of a person comes first, and one order's F1 surface is flat enough for that to pick the winner).
    Of the settings tied for best, ``choice`` picks one; the choice on the emitted order alone is
    recorded beside it."""
    replays = []  # (site in one order, fps, whether it is the emitted order)
    for site, fps in sites:
        replays.append((site, fps, True))
        for offsets in orders.shifts(site.camera.tolist()):
            replays.append((site.in_order(clock_shifted_order(site.t_end, site.camera, offsets)), fps, False))

    def emitted(stats: list[dict]) -> list[dict]:
        return [x for x, (*_, first) in zip(stats, replays) if first]

    trials, emitted_trials = [], []
    for t, frames in itertools.product(sorted(set(candidates)), sorted(set(min_enrol_frames))):
        trial = dataclasses.replace(model, thresholds={**model.thresholds, f"link:{key}": t, f"enrol:{key}": t})
        trial_options = {**options, "min_enrol_frames": int(frames)}
        per_replay = [replay_auto_enrol(site, fps, trial, trial_options, consolidate=consolidate)
                      for site, fps, _ in replays]
        for i, c in enumerate(consolidate):
            stats = [runs[i] for runs in per_replay]
            trial_scores = ReplayTrial.of(stats, float(t), c, int(frames))
            log.info("replay %s threshold %.2f, consolidate %s, %d frames to enrol: link F1 %.3f, identities off by "
                     "%.1f, over %d orders", key, t, c, frames, trial_scores.f1, trial_scores.identity_error,
                     orders.count + 1)
            trials.append(trial_scores)
            emitted_trials.append(ReplayTrial.of(emitted(stats), float(t), c, int(frames)))
    chosen = choice.best(trials)
    emitted_choice = choice.best(emitted_trials)
    return {"threshold": round(chosen.threshold, 4), "enrol_below": round(chosen.threshold, 4),
            "consolidate": None if chosen.consolidate is None else round(chosen.consolidate, 4),
            "min_enrol_frames": chosen.min_enrol_frames,
            "fit_sites": emitted(chosen.stats), "method": "replay",
            "orders": {**dataclasses.asdict(orders), "mean_f1": round(chosen.f1, 4)},
            "emitted_order_choice": {"threshold": emitted_choice.threshold, "consolidate": emitted_choice.consolidate,
                                     "min_enrol_frames": emitted_choice.min_enrol_frames,
                                     "mean_f1": round(emitted_choice.f1, 4)}}


ENROL_MARGINS = (0.0, 0.5, 1.0, 2.0, 3.0)  # how far below the linking threshold a confident unknown must score


def fit_link_threshold(fused: list[np.ndarray], pairs: list[TrackPairs], merge_above: float | None, grid: int = 40,
                       margins: tuple[float, ...] = ENROL_MARGINS) -> dict:
    """The auto-enrol thresholds with the best mean link F1 over sites: a track joins an identity above
    ``threshold``, becomes a new one at or below ``enrol_below`` (a confident unknown) and stays unnamed
    in between (identities linked by a track above ``merge_above`` merged, as the matcher does)."""
    values = np.concatenate([f[np.isfinite(f)] for f in fused])
    best = None
    for t in np.unique(np.quantile(values, np.linspace(0.5, 0.999, grid))):
        for margin in margins:
            stats = [link_f1(p.labels, simulate_auto_enrol(f, p.order, t, t - margin, p.conflict, merge_above, p.mixed))
                     for f, p in zip(fused, pairs)]
            f1 = float(np.mean([x["f1"] for x in stats]))
            if best is None or f1 > best[0] + 1e-9:  # ties: the higher threshold, then the smaller margin
                best = (f1, float(t), float(t - margin), stats)
    return {"threshold": round(best[1], 4), "enrol_below": round(best[2], 4), "fit_sites": best[3]}


def fit_scores(sets: list[QueryScores]) -> dict[str, ModalityScore]:
    keys = sets[0].distances.keys()
    out = {}
    for key in keys:
        d = np.concatenate([s.distances[key].reshape(-1) for s in sets])
        g = np.concatenate([s.genuine.reshape(-1) for s in sets])
        ok = np.isfinite(d)
        out[key] = ModalityScore.fit(d[ok & g], d[ok & ~g])
    return out


def llr_matrices(s: QueryScores | TrackPairs, scores: dict[str, ModalityScore], gait_scorer: str, aggregate: str) -> dict[str, np.ndarray]:
    """Per modality, (Q, I) LLRs as the matcher computes them (NaN: modality absent)."""
    app = scores[f"appearance/cos/{aggregate}"].llr(s.distances[f"appearance/cos/{aggregate}"])
    gait = scores[f"gait/euc/{aggregate}"].llr(s.distances[f"gait/euc/{aggregate}"])
    if gait_scorer != "euc":
        rescored = s.distances[f"gait/{gait_scorer}/{aggregate}"]
        gait = np.where(np.isfinite(rescored), scores[f"gait/{gait_scorer}/{aggregate}"].llr(rescored), gait)
    return {"gait": gait, "appearance": app}


def fused_matrix(s: QueryScores | TrackPairs, scores, fusion: Fusion, gait_scorer: str, aggregate: str, mode: str) -> np.ndarray:
    llr = llr_matrices(s, scores, gait_scorer, aggregate)
    if mode != "fused":
        llr = {m: (v if m == mode else np.full_like(v, np.nan)) for m, v in llr.items()}
    shape = llr["gait"].shape
    f = fusion.score({m: v.reshape(-1) for m, v in llr.items()}).reshape(shape)
    # an identity with no comparable evidence at all is no candidate
    any_evidence = np.zeros(shape, bool)
    for v in llr.values():
        any_evidence |= np.isfinite(v)
    return np.where(any_evidence, f, -np.inf)


def open_set_stats(s_list: list[QueryScores], fused: list[np.ndarray], threshold: float | None, target_far: float) -> dict:
    """Closed-set Rank-1 (same / changed outfit) and open-set DIR at the threshold (or at target_far when None)."""
    top_hit, changed, impostor_max, genuine_best, genuine_is_top = [], [], [], [], []
    for s, f in zip(s_list, fused):
        for qi in range(len(s.queries)):
            g = s.genuine[qi]
            imp = np.where(~g, f[qi], -np.inf).max() if (~g).any() else -np.inf
            impostor_max.append(imp)
            if not g.any():
                continue  # the person was seen only once: nothing to find
            gbest = np.where(g, f[qi], -np.inf).max()
            genuine_best.append(gbest)
            hit = gbest > imp
            genuine_is_top.append(hit)
            top_hit.append(hit)
            changed.append(s.changed_outfit[qi])
    impostor_max = np.asarray(impostor_max)
    thr = threshold if threshold is not None else threshold_at_far(impostor_max[np.isfinite(impostor_max)], target_far)
    top_hit, changed = np.asarray(top_hit), np.asarray(changed)
    genuine_best, genuine_is_top = np.asarray(genuine_best), np.asarray(genuine_is_top)
    dir_ = float(np.mean(genuine_is_top & (genuine_best > thr))) if len(genuine_best) else 0.0
    return {
        "threshold": round(float(thr), 4),
        "rank1_same_outfit": _mean(top_hit[~changed]), "rank1_changed_outfit": _mean(top_hit[changed]),
        "queries_same_outfit": int((~changed).sum()), "queries_changed_outfit": int(changed.sum()),
        "far": _mean(impostor_max > thr), "dir_at_far": round(dir_, 4),
    }


def _mean(x: np.ndarray) -> float | None:
    return round(float(np.mean(x)), 4) if len(x) else None


def fit(config: dict, config_path: str) -> dict:
    from stages.gallery.search import load_gait_rescorer

    t0 = time.time()
    cache = config.get("cache", "~/.cache/gaitscope/fusion_sites")
    if "reranker" in config:
        raise ValueError("fusion config key 'reranker' is now 'rescorers', a list of CarGait checkpoints or projections")
    rescorer_paths = config.get("rescorers", [str(DEFAULT_RERANKER.relative_to(PROJECT_ROOT))])  # the matcher's
    top_k = int(config.get("top_k", 10))
    target_far = float(config.get("target_far", 0.01))
    replay_thresholds = tuple(float(t) for t in config.get("replay_thresholds", REPLAY_THRESHOLDS))
    replay_orders = EnrolOrders.from_dict(config.get("replay_orders") or {}, "replay_orders")
    replay_choice = ReplayChoice.from_dict(config.get("replay_choice") or {})
    # the fewest frames of a track that may start an identity, chosen with the linking threshold where the
    # recipe lists several; a recipe without the key keeps the matcher's default and stores none
    enrol_frames = tuple(int(n) for n in config.get("replay_min_enrol_frames", (DEFAULT_MIN_ENROL_FRAMES,)))
    if not enrol_frames or min(enrol_frames) < 0:
        raise ValueError(f"replay_min_enrol_frames must list frame counts >= 0, got {list(enrol_frames)}")
    overrides = [str(o) for o in config.get("overrides") or []]  # pipeline settings of the embedding models
    current = embedding_versions(overrides)  # windows cached from other models are embedded again
    fit_sites = [site_windows(PROJECT_ROOT / p, cache, current, overrides) for p in config["sites"]]
    eval_sites = [site_windows(PROJECT_ROOT / p, cache, current, overrides) for p in config.get("eval_sites", [])]
    versions = fit_sites[0].versions
    for s in fit_sites + eval_sites:
        if s.versions != versions:
            raise ValueError(f"site {s.site} was embedded by {s.versions}, {fit_sites[0].site} by {versions}: clear the cache")
    rescorer_files: dict[str, str] = {}  # scorer name -> file, for the replay's matcher
    scorers: dict[str, object] = {"euc": None}
    for path in rescorer_paths:
        rescorer = load_gait_rescorer(PROJECT_ROOT / path)
        if rescorer.gait_model_version != versions.get("gait"):
            log.warning("re-scorer %s belongs to gait model %s, sites embedded by %s: it is not calibrated",
                        path, rescorer.gait_model_version, versions.get("gait"))
            continue
        scorers[rescorer.scorer] = rescorer
        rescorer_files[rescorer.scorer] = str(PROJECT_ROOT / path)
    prior = config.get("source_prior", 20.0)
    fit_sets = [query_scores(tracks_of(s, prior), scorers, top_k) for s in fit_sites]
    eval_sets = [query_scores(tracks_of(s, prior), scorers, top_k) for s in eval_sites]
    scores = fit_scores(fit_sets)
    fusions, thresholds, measured = {}, {}, {}
    # spreads of raw (uncentred) windows, as the matcher measures them (Track.spread)
    spread = fit_mixed_spread([t for s in fit_sites for t in tracks_of(s, None)], float(config.get("mixed_quantile", 0.98)))
    thresholds[MIXED_SPREAD] = spread["threshold"]
    measured[MIXED_SPREAD] = {"fit_sites": spread, "held_out_sites": spread_stats(
        [t for s in eval_sites for t in tracks_of(s, None)], spread["threshold"]) if eval_sites else None}

    def pairs_of(site: SiteWindows) -> TrackPairs:
        tracks = tracks_of(site, prior)
        pairs = track_pairs(tracks, scorers, top_k)
        pairs.mixed = np.array([t.spread > spread["threshold"] for t in tracks])
        return pairs

    fit_pairs = [pairs_of(s) for s in fit_sites]
    eval_pairs = [pairs_of(s) for s in eval_sites]
    for scorer in scorers:
        for aggregate in AGGREGATES:
            llr = [llr_matrices(s, scores, scorer, aggregate) for s in fit_sets]
            same = np.concatenate([s.genuine.reshape(-1) for s in fit_sets])
            stacked = {m: np.concatenate([x[m].reshape(-1) for x in llr]) for m in MODALITIES}
            keep = np.isfinite(stacked["gait"]) | np.isfinite(stacked["appearance"])
            fusion = Fusion.fit({m: v[keep] for m, v in stacked.items()}, same[keep])
            fusions[f"{scorer}/{aggregate}"] = fusion
            for mode in ("fused", "gait", "appearance"):
                f = fusion if mode == "fused" else Fusion.single(mode)
                key = ScoreModel.threshold_key(mode, scorer if mode != "appearance" else "-", aggregate)
                fitted = open_set_stats(fit_sets, [fused_matrix(s, scores, f, scorer, aggregate, mode) for s in fit_sets],
                                        None, target_far)
                thresholds[key] = fitted["threshold"]
                held = (open_set_stats(eval_sets, [fused_matrix(s, scores, f, scorer, aggregate, mode) for s in eval_sets],
                                       fitted["threshold"], target_far) if eval_sets else None)
                link = fit_link_threshold([fused_matrix(p, scores, f, scorer, aggregate, mode) for p in fit_pairs], fit_pairs,
                                          fitted["threshold"])
                thresholds["link:" + key] = link["threshold"]
                thresholds["enrol:" + key] = link["enrol_below"]
                if eval_pairs:
                    link["held_out_sites"] = [link_f1(p.labels, simulate_auto_enrol(
                        fused_matrix(p, scores, f, scorer, aggregate, mode), p.order, link["threshold"], link["enrol_below"],
                        p.conflict, fitted["threshold"], p.mixed))
                        for p in eval_pairs]
                measured[key] = {"fit_sites": fitted, "held_out_sites": held, "auto_enrol": link}
    model = ScoreModel(
        scores=scores,
        fusions=fusions,
        thresholds=thresholds,
        target_far=target_far,
        models={"gait": versions.get("gait", ""), "appearance": versions.get("reid", "")},
        source_prior=prior,
    )
    # The default decision (fused, mean): linking threshold by replaying the matcher itself on the
    # fitting sites; the track-pair simulation above ignores pooled identities and is kept for the others.
    fps = {Path(p).stem: site_fps(PROJECT_ROOT / p) for p in [*config["sites"], *config.get("eval_sites", [])]}
    for scorer in scorers:
        key = ScoreModel.threshold_key("fused", scorer, "mean")
        options = replay_options(rescorer_files.get(scorer, "none"), prior)
        link = fit_link_by_replay([(s, fps[s.site]) for s in fit_sites], model, key, options,
                                  (*replay_thresholds, thresholds["link:" + key]), orders=replay_orders,
                                  choice=replay_choice, min_enrol_frames=enrol_frames)
        model.thresholds["link:" + key] = thresholds["link:" + key] = link["threshold"]
        model.thresholds["enrol:" + key] = thresholds["enrol:" + key] = link["enrol_below"]
        if link["consolidate"] is not None:
            model.thresholds[f"{CONSOLIDATE}:{key}"] = thresholds[f"{CONSOLIDATE}:{key}"] = link["consolidate"]
        if "replay_min_enrol_frames" in config:
            model.thresholds[f"{ENROL_FRAMES}:{key}"] = thresholds[f"{ENROL_FRAMES}:{key}"] = link["min_enrol_frames"]
        held_options = {**options, "min_enrol_frames": link["min_enrol_frames"]}
        link["held_out_sites"] = [replay_auto_enrol(s, fps[s.site], model, held_options,
                                                    consolidate=(link["consolidate"],))[0] for s in eval_sites]
        measured[key]["auto_enrol"] = {**link, "simulated": measured[key]["auto_enrol"]}
    return {"model": model, "measured": measured, "seconds": round(time.time() - t0, 1),
            "sites": [s.site for s in fit_sites], "eval_sites": [s.site for s in eval_sites],
            "tracks": {s.site: len(tracks_of(s)) for s in fit_sites + eval_sites}}


def fit_command(config: str, out: str | None) -> str:
    """The command that reproduces a fit, with the models directory when one is set in the environment
    (``detect: auto`` picks its detector from the files there)."""
    models = os.environ.get(MODELS_ENV)
    return (f"{MODELS_ENV}={shlex.quote(models)} " if models else "") + f"python -m training.fusion --config {config}" \
        + (f" --out {out}" if out else "")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.fusion", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True, help="fitting recipe (configs/train/fusion.yaml)")
    parser.add_argument("--out", default=None, help="override the recipe's output path")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    import torch

    torch.set_num_threads(1)
    config = read_yaml(args.config)
    result = fit(config, args.config)
    out = PROJECT_ROOT / (args.out or config.get("out", "weights/score_fusion.params.json"))
    digest = result["model"].save(out)
    manifest = {
        "file": out.name,
        "sha256": digest,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "command": fit_command(args.config, args.out),
        "config": config,
        "detector": detector_in_use([str(o) for o in config.get("overrides") or []]),
        "data": {"fit_sites": result["sites"], "held_out_sites": result["eval_sites"], "tracks": result["tracks"],
                 "description": "rendered multi-camera sites (synth.scene), tracks labelled by ground-truth box overlap"},
        "models": result["model"].models,
        "seconds": result["seconds"],
        "measured": result["measured"],
    }
    manifest_path = out.with_name(out.name.replace(".params.json", ".json"))
    manifest_path.write_text(json.dumps(manifest, indent=1) + "\n")
    key = ScoreModel.threshold_key("fused", "euc", "mean")
    print(json.dumps({"out": str(out), "manifest": str(manifest_path), key: result["measured"][key]}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
