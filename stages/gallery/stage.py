"""Track-level gallery stage: identifies each track against the persistent gallery (open set).

Each window adds its embeddings (gait and appearance) to its track's evidence; the track's pooled
evidence is scored against every candidate identity through all its entries (stages.gallery.matching),
the per-modality distances calibrated to log-likelihood ratios and fused (stages.gallery.scoring),
and the best candidate accepted when its fused log-odds clear the open-set threshold. Every window
of a track therefore reports the track's decision so far, and the final window the decision on the
whole track. In auto-enrol mode a finished track adds all its embeddings, with their provenance, to
the identity it matched, or becomes a new identity when it matched nobody with confidence; a track
that links two identities strongly merges them (the merge is recorded in the gallery). When the run
ends, the identities it created or joined are consolidated: two that score each other above the
fitted threshold on all their evidence are merged (stages.gallery.consolidation); then the tracks
that ended without an identity are decided once more against the consolidated gallery.
"""

from __future__ import annotations

import dataclasses
import logging
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from pipeline.domains import NonNegativeFloat, NonNegativeInt, UnitFloat
from pipeline.messages import IdentityMatch, RankedCandidate, TrackWindow
from stages.gallery.consolidation import (HANDOVER_COVER, HANDOVER_OVERLAP, TOGETHER_ABOVE, Consolidator, Merge,
                                         overlap_share)
from stages.gallery.index import IndexSpec
from stages.gallery.matching import (
    CandidateScore,
    IdentityScorer,
    SourceCentring,
    appearance_spread,
    final_stretch_start,
    pool,
)
from stages.gallery.scoring import AGGREGATES, CONSOLIDATE, ENROL_FRAMES, MIXED_SPREAD, MODES, ScoreModel
from stages.gallery.search import GaitRescorer, load_gait_rescorer
from stages.gallery.store import FORMAT, MODALITIES, BoxAt, EntryMeta, Gallery, TrackEnds

log = logging.getLogger(__name__)

WEIGHTS = Path(__file__).resolve().parents[2] / "weights"
DEFAULT_RERANKER = WEIGHTS / "cargait_site.pt"
DEFAULT_SCORES = WEIGHTS / "score_fusion.params.json"
DEFAULT_MIN_ENROL_FRAMES = 20  # where the score fusion has no fitted value
EMBEDDING_FIELD = {"gait": "gait_embedding", "appearance": "appearance_embedding"}
# Boxes kept of a track's first and of its last frames: enough to cover the few frames two tracks of a
# handover share (stages.gallery.consolidation).
TRACK_END_FRAMES = 8


def window_meta(window: TrackWindow, identity: str) -> EntryMeta:
    """Provenance of a window's embedding: source, track, time span, predicted attributes."""
    pts = window.sequence.pts_s
    attributes = {k: v.label for k, v in (window.attributes or {}).items()}
    return EntryMeta(
        identity=identity,
        source=window.source_id,
        track_id=int(window.track_id),
        t_start=float(pts[0]) if len(pts) else None,
        t_end=float(pts[-1]) if len(pts) else None,
        attributes=attributes,
    )


def box_rows(times: np.ndarray, boxes: np.ndarray) -> list[BoxAt]:
    """(t, x0, y0, x1, y1) of each frame that has a box (windows replayed without boxes have none), as
    the gallery keeps a track's end boxes."""
    return [(round(float(t), 6), *(round(float(v), 2) for v in box))
            for t, box in zip(times, boxes) if box[2] > box[0] and box[3] > box[1]]


@dataclass(frozen=True)
class LateName:
    """A track that ended without an identity and was given one later, against the gallery as a
    consolidation left it; ``score``: its fused log-odds for that identity."""

    source: str
    track_id: int
    identity: str
    score: float

    def as_dict(self) -> dict:
        return {"source": self.source, "track_id": self.track_id, "identity": self.identity, "score": round(self.score, 4)}


@dataclass
class TrackEvidence:
    """What one track has shown so far: per modality its windows' embeddings and their provenance
    (kept without the windows themselves, whose crops are large)."""

    embeddings: dict[str, list[np.ndarray]] = field(default_factory=lambda: {m: [] for m in MODALITIES})
    metas: dict[str, list[EntryMeta]] = field(default_factory=lambda: {m: [] for m in MODALITIES})
    versions: dict[str, str] = field(default_factory=dict)
    windows: int = 0
    frames: int = 0  # frames that showed the person (windows overlap: each frame counted once)
    last_frame: int = -1  # the index of the last frame counted
    source: str = ""
    track_id: int = -1
    t_start: float | None = None
    t_end: float | None = None
    announced: str | None = None  # the identity the track's last window was given
    group_share: float | None = None  # share of its boxes that hold several people (None: not judged)
    first_boxes: list[BoxAt] = field(default_factory=list)  # on its first frames (TRACK_END_FRAMES)
    last_boxes: deque[BoxAt] = field(default_factory=lambda: deque(maxlen=TRACK_END_FRAMES))  # on its last ones

    def add(self, window: TrackWindow, stages: dict[str, str]) -> None:
        self.windows += 1
        self.source, self.track_id = window.source_id, int(window.track_id)
        pts = window.sequence.pts_s
        if len(pts):
            self.t_start = float(pts[0]) if self.t_start is None else min(self.t_start, float(pts[0]))
            self.t_end = float(pts[-1]) if self.t_end is None else max(self.t_end, float(pts[-1]))
        indices = window.sequence.frame_indices
        if len(indices):  # a track's frame indices only grow: those after the last one counted are new
            new = indices > self.last_frame
            self.frames += int(np.sum(new))
            self._keep_boxes(window.sequence.pts_s[new], window.sequence.boxes[new])
            self.last_frame = max(self.last_frame, int(indices[-1]))
        for modality in MODALITIES:
            e = getattr(window, EMBEDDING_FIELD[modality])
            if e is not None:
                self.embeddings[modality].append(np.asarray(e, np.float32))
                self.metas[modality].append(window_meta(window, ""))
                self.versions.setdefault(modality, window.model_versions.get(stages[modality], ""))

    def _keep_boxes(self, times: np.ndarray, boxes: np.ndarray) -> None:
        for row in box_rows(times, boxes):
            if len(self.first_boxes) < TRACK_END_FRAMES:
                self.first_boxes.append(row)
            self.last_boxes.append(row)

    def ends(self) -> TrackEnds:
        """The track's boxes on its first and last frames so far."""
        return TrackEnds(tuple(self.first_boxes), tuple(self.last_boxes))

    def appearance_spread(self) -> float:
        """Largest appearance distance between two of the track's windows that share no frames."""
        return appearance_spread(self.embeddings["appearance"], [(m.t_start, m.t_end) for m in self.metas["appearance"]])

    def final_stretch(self, max_spread: float) -> TrackEvidence:
        """A mixed track's evidence since the person in its box last changed (``final_stretch_start``);
        itself where no stretch stands out. Windows are kept by start time, the gait windows with them."""
        start = final_stretch_start(self.embeddings["appearance"],
                                    [(m.t_start, m.t_end) for m in self.metas["appearance"]], max_spread)
        if start is None:
            return self
        keep = {m: [i for i, meta in enumerate(self.metas[m]) if meta.t_start is None or meta.t_start >= start]
                for m in MODALITIES}
        return dataclasses.replace(self, embeddings={m: [self.embeddings[m][i] for i in keep[m]] for m in MODALITIES},
                                   metas={m: [self.metas[m][i] for i in keep[m]] for m in MODALITIES})

    def query(self, used: tuple[str, ...], centring: SourceCentring | None) -> dict[str, np.ndarray | None]:
        """The track's pooled embeddings per modality (appearance centred per source when asked)."""
        out: dict[str, np.ndarray | None] = {}
        for m in MODALITIES:
            items = self.embeddings[m]
            if m not in used or not items:
                out[m] = None
            elif m == "appearance" and centring is not None:
                out[m] = pool(m, list(centring.centre(np.stack(items), [meta.source for meta in self.metas[m]])))
            else:
                out[m] = pool(m, items)
        return out


class GalleryMatcher:
    """Sets ``window.identity`` (IdentityMatch, track-level) and ``model_versions["gallery"]``.

    gallery: gallery directory (created empty when absent).
    modalities: "fused" (gait and appearance), "gait" or "appearance": the evidence that decides.
    scores: score-fusion parameters (distance calibrations, fusion, thresholds); "" = the shipped
        weights/score_fusion.params.json (fit with ``python -m training.fusion``).
    aggregate: "mean" (an identity scores by its pooled entries) or "best" (by its nearest entry).
    threshold: fused log-odds a match must exceed; None = fitted for this mode, gait scorer and
        aggregate: with auto_enrol the linking threshold (best link F1 on the fitting sites), else
        the open-set threshold at the target false-accept rate.
    reranker: gait re-scorer of the top_k identities' gait distances: a CarGait checkpoint or a
        discriminant projection (``.npz``, stages.gait.projection); "" = the shipped default, "none" =
        the plain metric only (a re-scorer of another gait model is skipped with a notice).
    metric: gait metric ("euc" or "cos"). shortlist: FAISS entries per modality per track.
    source_centring: remove each camera's mean appearance (shrunk by ``source_prior`` windows) before
        comparing appearance; the per-source statistics are kept in the gallery.
    auto_enrol: a finished track that matched joins its identity; one that matched nobody with
        fused log-odds at most ``enrol_below`` (a confident unknown; None = fitted with the linking
        threshold for the best link F1, or the threshold when not fitted or overridden) and
        seen in at least ``min_enrol_frames`` frames (None: the value fitted with the linking threshold,
        else 20) becomes a new identity ``<enrol_prefix>-NNNNN``.
    merge: in auto-enrol mode, merge the runner-up identity into the matched one when the finished
        track's fused log-odds for it also exceed ``merge_above`` (None: the open-set threshold, at
        the target false-accept rate: stricter than linking).
    consolidate: in auto-enrol mode, when the matcher closes (the run ends), merge identities created or
        joined in this run with any identity whose pooled entries and theirs score each other above
        ``consolidate_above`` and that no camera showed beside them at the same moment, beyond a
        handover, unless ``together_above`` says otherwise (``consolidate_above`` None: the
        threshold fitted with the score fusion; none fitted: no consolidation). The merges are
        recorded in the gallery and listed by ``outcome()`` (the run summary's ``outcomes.gallery.merged``).
    consolidate_every: also consolidate after every this many finished tracks (0: only when the run ends).
        A live stream never ends, so there it is what merges identities as evidence comes in; records
        already written keep the name they were given (the summary and ``gallery merges`` map it).
    second_look: in auto-enrol mode, after each consolidation (at the latest when the run ends), decide
        again the tracks that finished since the previous one without an identity (too short to start
        one, between the two thresholds, or mixed), against the gallery as it is now, at the same
        threshold: a person's first short sighting joins the identity their later tracks built. A
        track named so adds its embeddings to the identity (a mixed one does not) and is listed by
        ``outcome()`` (the run summary's ``outcomes.gallery.named``); its records keep ``null``.
    handover_overlap: two tracks of one camera overlapping in time by at most this share of the shorter
        one may be one person whom the tracker handed over to a new track, not two people: the
        identities of such a track stay candidates (at the linking threshold), and consolidation
        merges two identities seen together only that way when they score each other above the
        threshold rather than ``consolidate_above`` (default 0.5). 0: any overlap means two people.
    handover_above: the score two identities seen together only across such a handover must give
        each other to be consolidated (None: the linking threshold; never below ``consolidate_above``).
    handover_cover: two such tracks whose boxes coincide on every frame they share (of the first and
        last ``TRACK_END_FRAMES`` boxes of each, at least one frame; the smaller box lies inside the
        other by at least this share of its area) show one person picked up by a new track where the
        old one left them: identities seen together only that way are consolidated at
        ``consolidate_above``, not ``handover_above`` (None: never; default ``HANDOVER_COVER``).
    together_above: consolidation merges two identities that one camera showed together beyond a
        handover only when they score each other above this fused log-odds (default 5.0: on the
        fitting sites only one person split over a wandering track scores that high; None: never).
    mixed_spread: a track whose own windows lie further apart in appearance than this (cosine
        distance between windows that share no frames) shows more than one person, because the
        tracker switched people: it is identified but never enrolled (``identity.mixed``). None: the
        value fitted with the score fusion (a high quantile of single-person tracks); no fitted
        value: no check.
    group_share: a track whose boxes are too large for one person where they stand in at least this
        share of its judged frames (the windows' ``group_share``: taller or wider than one person at
        their foot row, by the camera's person size; ``stages.tracklets``) shows a group walking in
        one box: it is identified but never enrolled (``identity.group``), so it starts no identity
        of nobody. None: no check.
    switch_margin: a track given one identity moves to another only when that one's fused log-odds
        exceed the current one's by this much (1.0: about 2.7 times as likely) or the current one
        falls below the threshold; 0: every window takes the best candidate.
    index: "flat" (exact), "ivf" or "hnsw"; nlist/nprobe/hnsw_m/ef_search tune the approximate ones.
    gait_stage / appearance_stage: names under which those stages record their model versions.
    """

    name = "gallery"

    def __init__(
        self,
        gallery: str = "~/.cache/gaitscope/gallery",
        modalities: str = "fused",
        scores: str = "",
        aggregate: str = "mean",
        threshold: float | None = None,
        reranker: str = "",
        metric: str = "euc",
        shortlist: int = 200,
        top_k: int = 10,
        source_centring: bool = True,
        source_prior: float = 20.0,
        auto_enrol: bool = False,
        enrol_below: float | None = None,
        min_enrol_frames: NonNegativeInt | None = None,
        merge: bool = True,
        merge_above: float | None = None,
        consolidate: bool = True,
        consolidate_above: float | None = None,
        consolidate_every: NonNegativeInt = 0,
        second_look: bool = True,
        handover_overlap: UnitFloat = HANDOVER_OVERLAP,
        handover_above: float | None = None,
        handover_cover: UnitFloat | None = HANDOVER_COVER,
        together_above: float | None = TOGETHER_ABOVE,
        mixed_spread: float | None = None,
        group_share: UnitFloat | None = 0.8,
        switch_margin: NonNegativeFloat = 1.0,
        enrol_prefix: str = "person",
        index: str = "flat",
        nlist: int = 1024,
        nprobe: int = 32,
        hnsw_m: int = 32,
        ef_search: int = 128,
        gait_stage: str = "gait",
        appearance_stage: str = "reid",
    ) -> None:
        if modalities not in MODES:
            raise ValueError(f"modalities must be one of {MODES}, got {modalities!r}")
        if aggregate not in AGGREGATES:
            raise ValueError(f"aggregate must be one of {AGGREGATES}, got {aggregate!r}")
        if metric not in ("euc", "cos"):
            raise ValueError(f"unknown metric {metric!r}; use 'euc' or 'cos'")
        self.score_model = ScoreModel.load(Path(scores).expanduser() if scores else DEFAULT_SCORES)
        self.gallery = Gallery(gallery, IndexSpec(kind=index, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search))
        self.modalities = modalities
        self.used = MODALITIES if modalities == "fused" else (modalities,)
        self.reranker_explicit = bool(reranker) and reranker.lower() != "none"
        self.reranker = self._load_reranker(reranker, metric) if "gait" in self.used else None
        if self.reranker is not None and self.score_model.modality_score("gait", self.reranker.scorer, aggregate) is None:
            problem = f"the score-fusion parameters have no calibration for re-ranker {self.reranker.scorer!r}"
            if self.reranker_explicit:
                raise ValueError(f"{problem}: refit them with python -m training.fusion or set gallery.reranker: none")
            # the shipped default re-ranker: said once, quietly (every default run would warn otherwise)
            log.info("gallery: %s; gait distances are not re-ranked", problem)
            self.reranker = None
        fitted = self.score_model.source_prior
        if (fitted is not None) != source_centring or (source_centring and fitted != source_prior):
            log.warning("gallery: the score-fusion parameters were fitted with source_prior %s, this matcher uses %s: "
                        "appearance scores are off their calibration", fitted, source_prior if source_centring else None)
        stored = self.gallery.source_sums("appearance")
        # Queries: each camera's statistics as stored plus its own windows of this run, which arrive in order,
        # so a track's decision never depends on how the cameras' windows interleave.
        self.centring = SourceCentring(stored, source_prior) if source_centring else None
        # Entries: with auto-enrol the same running statistics (cameras first seen in this run get centred);
        # against a fixed gallery the statistics it was stored with, so that reruns decide identically.
        self.entry_centring = (None if not source_centring else self.centring if auto_enrol
                               else SourceCentring(stored, source_prior))
        self._new_sums = SourceCentring(prior=source_prior)  # seen since the last write to the gallery
        options = {"modalities": modalities, "aggregate": aggregate, "metric": metric, "shortlist": shortlist,
                   "top_k": top_k, "centring": self.entry_centring}
        self.scorer = IdentityScorer(self.gallery, self.score_model, reranker=self.reranker, **options)
        self.plain_scorer = IdentityScorer(self.gallery, self.score_model, reranker=None, **options)
        self.threshold_override = threshold
        self.auto_enrol = auto_enrol
        self.enrol_below = enrol_below
        self.min_enrol_frames = min_enrol_frames
        self.merge = merge
        self.merge_above = merge_above
        self.consolidate = consolidate
        self.consolidate_above = consolidate_above
        self.consolidate_every = int(consolidate_every)
        self.second_look = second_look
        self.handover_overlap = float(handover_overlap)
        self.handover_above = handover_above
        self.handover_cover = handover_cover
        self.together_above = together_above
        self.switch_margin = float(switch_margin)
        self.mixed_spread = mixed_spread if mixed_spread is not None else self.score_model.thresholds.get(MIXED_SPREAD)
        self.group_share = group_share
        self.enrol_prefix = enrol_prefix
        self.stages = {"gait": gait_stage, "appearance": appearance_stage}
        rr = "none" if self.reranker is None else self.reranker.scorer
        self.version = f"{FORMAT}+{modalities}+{aggregate}+{metric}+{rr}" + ("+centred" if source_centring else "")
        self.tracks: dict[tuple[str, int], TrackEvidence] = {}
        self._single: dict[str, IdentityScorer] = {}  # one-modality scorers of ``match``
        self._notices: set[str] = set()
        self._touched: set[str] = set()  # identities created or added to since the last consolidation
        self._finished_since_consolidation = 0
        self.consolidated: list[Merge] = []  # this run's consolidation merges, in order
        self._unnamed: dict[tuple[str, int], TrackEvidence] = {}  # finished without an identity since the last consolidation
        self.named_late: list[LateName] = []  # this run's second-look decisions, in order

    @staticmethod
    def _load_reranker(path: str, metric: str) -> GaitRescorer | None:
        if path.lower() == "none":
            return None
        if not path and not DEFAULT_RERANKER.is_file():
            log.warning("gallery: no shipped CarGait weights at %s; gait shortlists are not re-ranked", DEFAULT_RERANKER)
            return None
        weights = Path(path).expanduser() if path else DEFAULT_RERANKER
        reranker = load_gait_rescorer(weights)
        if reranker.metric and reranker.metric != metric:
            raise ValueError(f"re-ranker {weights} works on the {reranker.metric!r} metric; set metric: {reranker.metric}")
        return reranker

    def _notice(self, key: str, message: str) -> None:
        if key not in self._notices:
            log.warning("gallery: %s", message)
            self._notices.add(key)

    def scorer_for(self, gait_version: str) -> IdentityScorer:
        """The re-ranking scorer, unless the re-ranker belongs to another gait model:
        then the shipped default is skipped with a notice, and an explicitly configured one is an error."""
        rr = self.reranker
        if rr is None or not gait_version:
            return self.scorer
        if gait_version == rr.gait_model_version:
            return self.scorer
        problem = f"re-ranker was trained on gait model {rr.gait_model_version!r}, embeddings come from {gait_version!r}"
        if self.reranker_explicit:
            raise ValueError(f"{problem}: set gallery.reranker to a matching checkpoint or 'none'")
        self._notice("rerank", f"{problem}; gait distances are not re-ranked")
        return self.plain_scorer

    def threshold(self, scorer: IdentityScorer) -> float | None:
        """Fused log-odds a match must exceed: the configured one, else (auto-enrol) the fitted linking
        threshold, else the fitted open-set threshold at the target false-accept rate."""
        if self.threshold_override is not None:
            return float(self.threshold_override)
        key = scorer.threshold_key()
        if self.auto_enrol and f"link:{key}" in self.score_model.thresholds:
            return self.score_model.thresholds[f"link:{key}"]
        return self.score_model.thresholds.get(key)

    def enrol_threshold(self, scorer: IdentityScorer) -> float | None:
        """Fused log-odds at or below which an unmatched track is a confident unknown (a new identity):
        the configured ``enrol_below``, else the fitted one (best link F1 on the fitting sites; between
        it and the linking threshold a track stays unnamed), else the threshold."""
        if self.enrol_below is not None:
            return float(self.enrol_below)
        fitted = self.score_model.thresholds.get(f"enrol:{scorer.threshold_key()}")
        if self.threshold_override is None and fitted is not None:
            return fitted
        return self.threshold(scorer)

    def enrol_min_frames(self, scorer: IdentityScorer) -> int:
        """The fewest frames of a confident unknown that may start an identity: the configured
        ``min_enrol_frames``, else the one fitted with the linking threshold, else DEFAULT_MIN_ENROL_FRAMES."""
        if self.min_enrol_frames is not None:
            return int(self.min_enrol_frames)
        fitted = self.score_model.thresholds.get(f"{ENROL_FRAMES}:{scorer.threshold_key()}")
        return int(fitted) if fitted is not None else DEFAULT_MIN_ENROL_FRAMES

    def open_set_threshold(self, scorer: IdentityScorer) -> float | None:
        """The fitted open-set threshold (target false-accept rate), or the configured threshold."""
        if self.threshold_override is not None:
            return float(self.threshold_override)
        return self.score_model.thresholds.get(scorer.threshold_key())

    def _check_models(self, versions: dict[str, str]) -> None:
        for modality, version in versions.items():
            self.gallery.check_model(modality, version)
            fitted = self.score_model.models.get(modality, "")
            if version and fitted and version != fitted and modality in self.used:
                self._notice(f"model:{modality}", f"the score-fusion parameters were fitted on {modality} model {fitted!r}, "
                                                  f"embeddings come from {version!r}: refit with python -m training.fusion")

    # -- identification ----------------------------------------------------------------------------
    def identify(self, evidence: TrackEvidence) -> tuple[IdentityMatch, list[CandidateScore]]:
        """The decision on a track's evidence so far (no enrolment)."""
        self._check_models(evidence.versions)
        scorer = self.scorer_for(evidence.versions.get("gait", ""))
        n_windows = evidence.windows
        mixed = self.mixed_spread is not None and evidence.appearance_spread() > self.mixed_spread
        group = self._shows_group(evidence)
        # a track whose person changed is decided on the person it shows now
        query = (evidence.final_stretch(self.mixed_spread) if mixed else evidence).query(self.used, self.centring)
        if all(v is None for v in query.values()):
            return (IdentityMatch(None, self.modalities, float("inf"), 0.0, windows=n_windows, mixed=mixed, group=group),
                    [])
        exclude = self._seen_beside(evidence)
        ranked = scorer.score(query, exclude)
        threshold = self.threshold(scorer)
        if threshold is None:
            self._notice("threshold", f"no fitted threshold for {scorer.threshold_key()!r}; set gallery.threshold")
        candidates = [RankedCandidate(c.identity, _primary_distance(c), c.initial_rank, c.entry_id, c.fused) for c in ranked]
        if not ranked:
            return (IdentityMatch(None, self.modalities, float("inf"), 0.0, candidates, windows=n_windows, mixed=mixed,
                                  group=group), ranked)
        kept = self._kept(evidence.announced, ranked, threshold)
        if kept is not None:  # the decided identity first: candidates, merges and enrolment follow the decision
            ranked = [kept, *(c for c in ranked if c is not kept)]
            candidates = [next(c for c in candidates if c.identity == kept.identity),
                          *(c for c in candidates if c.identity != kept.identity)]
        best = ranked[0]
        matched = threshold is not None and best.fused > threshold
        evidence.announced = best.identity if matched else None
        scores = {**best.llr, "fused": best.fused}
        return IdentityMatch(best.identity if matched else None, self.modalities, _primary_distance(best), best.confidence,
                             candidates, scores=scores, windows=n_windows, mixed=mixed, group=group), ranked

    def _shows_group(self, evidence: TrackEvidence) -> bool:
        share = evidence.group_share
        return self.group_share is not None and share is not None and share >= self.group_share

    def _seen_beside(self, evidence: TrackEvidence) -> set[str]:
        """Identities the track's camera showed beside it, on another track at the same time (one camera
        cannot show one person twice at once): not this track's. Tracks sharing no more than
        ``handover_overlap`` of the shorter one do not count (the tracker may have handed one person over)."""
        if not evidence.source or evidence.t_start is None or evidence.t_end is None:
            return set()
        t0, t1 = evidence.t_start, evidence.t_end
        return {name for name, lo, hi in self.gallery.tracks_seen_with(evidence.source, evidence.track_id, t0, t1)
                if (overlap_share(t0, t1, lo, hi) or 0.0) > self.handover_overlap}

    def _kept(self, announced: str | None, ranked: list[CandidateScore], threshold: float | None) -> CandidateScore | None:
        """The identity the track was last given, when it still clears the threshold and no other
        candidate beats it by ``switch_margin`` (so that a track does not flip between two close
        identities from window to window); else None."""
        if announced is None or threshold is None or ranked[0].identity == announced:
            return None
        current = next((c for c in ranked if c.identity == announced), None)
        if current is None or current.fused <= threshold or ranked[0].fused - current.fused >= self.switch_margin:
            return None
        return current

    def process(self, batch: list[TrackWindow]) -> list[TrackWindow]:
        for w in batch:
            key = (w.source_id, int(w.track_id))
            evidence = self.tracks.setdefault(key, TrackEvidence())
            evidence.add(w, self.stages)
            if w.group_share is not None:  # the share over the whole track so far
                evidence.group_share = w.group_share
            if self.centring is not None and w.appearance_embedding is not None:
                self.centring.add(w.source_id, w.appearance_embedding)
                self._new_sums.add(w.source_id, w.appearance_embedding)
            try:
                w.identity, ranked = self.identify(evidence)
                if w.is_final and self.auto_enrol:
                    self._enrol(w, evidence, ranked)
                    self._finished_since_consolidation += 1
                    if self.second_look and w.identity.identity is None and any(evidence.embeddings.values()):
                        self._unnamed[key] = evidence
            finally:
                if w.is_final:
                    self.tracks.pop(key, None)
            w.model_versions[self.name] = self.version
            if self.consolidate_every and self._finished_since_consolidation >= self.consolidate_every:
                self._consolidate_touched()
        self._save_source_sums()
        return batch

    def _save_source_sums(self) -> None:
        if self._new_sums.sums:
            self.gallery.add_to_source_sums("appearance", self._new_sums.sums)
            self._new_sums.sums = {}

    def match_track(self, embeddings: dict[str, list[np.ndarray]], versions: dict[str, str], source: str = "") -> IdentityMatch:
        """Open-set decision on a finished track's embeddings (per modality, one per window, seen from
        ``source``); no enrolment."""
        evidence = TrackEvidence(embeddings={m: [np.asarray(e, np.float32) for e in embeddings.get(m, [])] for m in MODALITIES},
                                 versions={m: v for m, v in versions.items() if embeddings.get(m)})
        evidence.metas = {m: [EntryMeta("", source) for _ in evidence.embeddings[m]] for m in MODALITIES}
        evidence.windows = max((len(v) for v in evidence.embeddings.values()), default=0)
        return self.identify(evidence)[0]

    def match(self, modality: str, embeddings: list[np.ndarray], model_version: str) -> list[IdentityMatch]:
        """Each embedding of ``modality`` alone (one window, its own calibrated score) against the gallery;
        no enrolment. Candidates carry that modality's distance and score."""
        self.gallery.check_model(modality, model_version)
        scorer = self._single.get(modality)
        if scorer is None:
            reranker = self.scorer_for(model_version).reranker if modality == "gait" else None
            scorer = IdentityScorer(self.gallery, self.score_model, modalities=modality, aggregate=self.scorer.aggregate,
                                    metric=self.scorer.metric, shortlist=self.scorer.shortlist, top_k=self.scorer.top_k,
                                    reranker=reranker, centring=self.entry_centring)
            self._single[modality] = scorer
        threshold = self.threshold(scorer)
        out = []
        for e in embeddings:
            query = {m: None for m in MODALITIES}
            query[modality] = pool(modality, [np.asarray(e, np.float32)])
            ranked = scorer.score(query)
            candidates = [RankedCandidate(c.identity, float(c.distances.get(modality, float("inf"))), c.initial_rank,
                                          c.entry_id, c.fused) for c in ranked]
            if not ranked:
                out.append(IdentityMatch(None, modality, float("inf"), 0.0, candidates))
                continue
            best = ranked[0]
            matched = threshold is not None and best.fused > threshold
            out.append(IdentityMatch(best.identity if matched else None, modality, candidates[0].distance, best.confidence,
                                     candidates, scores={**best.llr, "fused": best.fused}))
        return out

    # -- auto-enrolment ----------------------------------------------------------------------------
    def _enrol(self, window: TrackWindow, evidence: TrackEvidence, ranked: list[CandidateScore]) -> None:
        match = window.identity
        if not any(evidence.embeddings[m] for m in MODALITIES) or match.mixed or match.group:
            return
        if match.identity is None:
            scorer = self.scorer_for(evidence.versions.get("gait", ""))
            below = self.enrol_threshold(scorer)
            confident_unknown = not ranked or below is None or ranked[0].fused <= below
            if not confident_unknown or evidence.frames < self.enrol_min_frames(scorer):
                return
            name, _ = self.gallery.enrol_new_identity(self.enrol_prefix, self._batches(evidence, ""))
            self.gallery.record_track_ends(evidence.source, evidence.track_id, evidence.ends())
            self._touched.add(name)
            window.identity = dataclasses.replace(match, identity=name, enrolled=True)
            return
        self._add(evidence, match.identity, auto=True)
        self._touched.add(match.identity)
        if not self.merge or len(ranked) < 2:
            return
        limit = self.merge_above if self.merge_above is not None else self.open_set_threshold(
            self.scorer_for(evidence.versions.get("gait", "")))
        runner_up = ranked[1]
        if limit is not None and runner_up.fused > limit:
            moved = self.gallery.merge_identities(match.identity, runner_up.identity, {
                "source": window.source_id, "track_id": int(window.track_id),
                "scores": {match.identity: ranked[0].fused, runner_up.identity: runner_up.fused}})
            log.info("gallery: merged %s into %s (%d entries): track %s#%d matches both", runner_up.identity,
                     match.identity, moved, window.source_id, window.track_id)
            match.merged.append(runner_up.identity)

    @staticmethod
    def _batches(evidence: TrackEvidence, name: str) -> dict[str, tuple[list[np.ndarray], list[EntryMeta], str]]:
        """Every window's embeddings of the track, per modality, with provenance, under ``name``."""
        return {m: (evidence.embeddings[m], [dataclasses.replace(meta, identity=name) for meta in evidence.metas[m]],
                    evidence.versions.get(m, "")) for m in MODALITIES if evidence.embeddings[m]}

    def _add(self, evidence: TrackEvidence, name: str, auto: bool) -> None:
        for modality, (items, metas, version) in self._batches(evidence, name).items():
            self.gallery.add(modality, items, metas, version, auto=auto)
        self.gallery.record_track_ends(evidence.source, evidence.track_id, evidence.ends())

    def consolidation_threshold(self, scorer: IdentityScorer) -> float | None:
        """Fused log-odds two identities must give each other to be merged when the run ends: the
        configured ``consolidate_above``, else the fitted one for this decision, else None (no merging)."""
        if self.consolidate_above is not None:
            return float(self.consolidate_above)
        return self.score_model.thresholds.get(f"{CONSOLIDATE}:{scorer.threshold_key()}")

    def consolidate_identities(self, names: set[str] | None = None) -> list[Merge]:
        """Merge the identities this run created or joined (or ``names``) with those they match both
        ways (see stages.gallery.consolidation); returns the merges."""
        scorer = self.scorer_for(self.gallery.model_version("gait") or "")
        threshold = self.consolidation_threshold(scorer)
        if threshold is None:
            log.info("gallery: no fitted consolidation threshold for %r; identities are not consolidated",
                     scorer.threshold_key())
            return []
        names = {s.name for s in self.gallery.identities()} & (self._touched if names is None else names)
        merges = Consolidator(self.gallery, scorer, threshold, self.entry_centring, self.handover_overlap,
                              self.threshold(scorer) if self.handover_above is None else self.handover_above,
                              self.handover_cover, self.together_above).run(names) if names else []
        self._touched.clear()
        return merges

    def _consolidate_touched(self) -> None:
        self._finished_since_consolidation = 0
        if self.auto_enrol and self.consolidate and self._touched and not self.gallery.read_only:
            self.consolidated.extend(self.consolidate_identities())
        if self.auto_enrol and self._unnamed and not self.gallery.read_only:
            self._look_again()

    def _look_again(self) -> None:
        """The tracks that finished unnamed since the last consolidation, decided once more against
        the gallery as it is now (it holds every track that finished since, merged where consolidation
        merged): a person whose first sighting was too short to start an identity has one by now."""
        pending, self._unnamed = self._unnamed, {}
        for (source, track_id), evidence in pending.items():
            evidence.announced = None  # decided afresh, not held to a name an earlier window gave
            match, _ = self.identify(evidence)
            if match.identity is None:
                continue
            if not match.mixed and not match.group:
                self._add(evidence, match.identity, auto=True)
                self._touched.add(match.identity)
            self.named_late.append(LateName(source, track_id, match.identity, float(match.scores.get("fused", 0.0))))
            log.info("gallery: track %s#%d named %s on a second look (fused log-odds %.2f)", source, track_id,
                     match.identity, self.named_late[-1].score)

    def outcome(self) -> dict:
        """What the run changed beyond its records, for the run summary: identities consolidated,
        tracks named on a second look."""
        return {"merged": [m.as_dict() for m in self.consolidated], "named": [n.as_dict() for n in self.named_late]}

    def close(self) -> None:
        self._save_source_sums()
        try:
            self._consolidate_touched()
        finally:
            self.gallery.close()


def _primary_distance(c: CandidateScore) -> float:
    return float(c.distances.get("gait", c.distances.get("appearance", float("inf"))))
