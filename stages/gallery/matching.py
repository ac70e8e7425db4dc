"""Scoring a track's evidence against the gallery's identities, through all their entries.

A query is a track's embeddings so far, pooled per modality (gait: per-part mean of its windows'
(P, C) maps; appearance: renormalised mean of its (D,) vectors). Candidate identities are the union
of the FAISS shortlists of the query's modalities; each candidate is then scored on ALL its entries
of each modality: ``best`` = its nearest entry, ``mean`` = its entries' pooled embedding. Gait
distances of the ``top_k`` identities nearest by gait are re-scored by CarGait (the re-ranker sees
the probe and each entry of the candidate), the others keep the plain metric; each scorer has its
own distance -> LLR calibration, so both land on one scale. The per-modality LLRs are fused
(``stages.gallery.scoring``) and the candidates sorted by fused log-odds.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from stages.gait.distance import part_distance
from stages.gallery.scoring import MODALITIES, Fusion, ScoreModel, sigmoid
from stages.gallery.search import GaitRescorer
from stages.gallery.store import Gallery, search_vector


def pool(modality: str, embeddings: list[np.ndarray]) -> np.ndarray:
    """One embedding for several windows of one modality (gait: mean (P, C); appearance: unit mean (D,))."""
    stacked = np.stack([np.asarray(e, np.float32) for e in embeddings])
    mean = stacked.mean(0)
    if modality == "appearance":
        mean = mean / max(float(np.linalg.norm(mean)), 1e-12)
    return mean.astype(np.float32)


def appearance_spread(embeddings: list[np.ndarray], spans: list[tuple[float | None, float | None]]) -> float:
    """How far apart a track's own appearance is: the largest cosine distance between two of its
    windows that share no frames (0 when no two windows are disjoint).

    Windows overlap and change slowly while one person is followed; when the tracker switches to
    another person mid-track, windows before and after the switch disagree. spans: (t_start,
    t_end) of each window, seconds.
    """
    if len(embeddings) < 2:
        return 0.0
    e = unit(np.stack(embeddings))
    starts = np.array([np.nan if a is None else a for a, _ in spans], np.float64)
    ends = np.array([np.nan if b is None else b for _, b in spans], np.float64)
    disjoint = ends[:, None] < starts[None, :]  # window i ends before window j starts
    if not disjoint.any():
        return 0.0
    return float((1.0 - e @ e.T)[disjoint].max())


def final_stretch_start(embeddings: list[np.ndarray], spans: list[tuple[float | None, float | None]],
                        max_spread: float) -> float | None:
    """Start time (s) of the stretch at the end of a mixed track (``appearance_spread`` above
    ``max_spread``) that shows the person it ends on: its windows from that time on show only them.

    Going back from the last window, the first window further than ``max_spread`` (cosine distance)
    from the last one's appearance showed someone else; the stretch is the windows that start after it
    ends (windows overlap: a track's first windows all start at its first frame), at least the last.
    None when no window is that far from the last one. spans: (t_start, t_end) of each window, in the
    order added.
    """
    e = unit(np.stack(embeddings))
    distance = 1.0 - e @ e[-1]
    others = np.flatnonzero(distance > max_spread)
    if not len(others):  # the far-apart windows are both near the last one: no one stretch to keep
        return None
    other = int(others[-1])  # the last window that showed someone else
    other_end = spans[other][1]
    starts = [t for t, _ in spans[other + 1 :] if t is not None and other_end is not None and t > other_end]
    return min(starts) if starts else spans[-1][0]


def unit(x: np.ndarray) -> np.ndarray:
    """Rows (or a vector) scaled to unit L2 norm."""
    x = np.asarray(x, np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


class SourceCentring:
    """Removes each camera's bias from appearance embeddings: x -> unit(unit(x) - w * mean_source).

    A camera's colour cast, background and viewpoint pull all its appearance embeddings one way,
    so two people seen by one camera look more alike than one person seen by two. The mean unit
    embedding of everything a source has shown estimates that pull; it is shrunk towards zero
    (w = n / (n + prior)) so that a source seen for a few windows, mostly one person, keeps its
    identity signal. sums: source -> (count, sum of unit embeddings).
    """

    def __init__(self, sums: dict[str, tuple[int, np.ndarray]] | None = None, prior: float = 20.0) -> None:
        self.sums = dict(sums or {})
        self.prior = prior

    def add(self, source: str, embeddings: np.ndarray) -> None:
        e = unit(np.atleast_2d(embeddings)).astype(np.float64)
        n, total = self.sums.get(source, (0, np.zeros(e.shape[1])))
        self.sums[source] = (n + len(e), total + e.sum(0))

    def bias(self, source: str) -> np.ndarray | float:
        n, total = self.sums.get(source, (0, None))
        if not n:
            return 0.0
        return (total / n * (n / (n + self.prior))).astype(np.float32)

    def centre(self, embeddings: np.ndarray, sources: list[str]) -> np.ndarray:
        """(N, D) embeddings seen from ``sources`` (N,) -> (N, D) centred unit vectors."""
        e = unit(np.atleast_2d(embeddings))
        return unit(np.stack([x - self.bias(src) for x, src in zip(e, sources)]))


@dataclass(frozen=True)
class CandidateScore:
    """One identity's fused log-odds against a query, and what it was made of.

    distances / llr: per modality (absent: the query or the identity has no entry of it).
    entry_id: the identity's nearest entry of the primary modality (gait when scored, else appearance).
    initial_rank: the identity's rank by the plain metric before CarGait re-scored gait distances.
    """

    identity: str
    fused: float
    distances: dict[str, float]
    llr: dict[str, float]
    entry_id: int
    initial_rank: int

    @property
    def confidence(self) -> float:
        return float(sigmoid(self.fused))


class IdentityScorer:
    """Scores queries against every candidate identity's entries (see the module docstring).

    modalities: "fused", "gait" or "appearance" (which evidence decides). aggregate: "best" or
    "mean". metric: gait metric ("euc"/"cos"). shortlist: FAISS entries per modality per query.
    top_k: identities whose gait distance the re-scorer re-scores. reranker: CarGait, a discriminant
    projection (stages.gait.projection) or None.
    centring: per-source appearance centring (None: raw appearance embeddings). Queries passed to
    ``score`` are already centred; gallery entries are centred by their own source.
    """

    def __init__(self, gallery: Gallery, scores: ScoreModel, modalities: str = "fused", aggregate: str = "best",
                 metric: str = "euc", shortlist: int = 200, top_k: int = 10, reranker: GaitRescorer | None = None,
                 centring: SourceCentring | None = None) -> None:
        self.gallery = gallery
        self.centring = centring
        self.scores = scores
        self.modalities = modalities
        self.used = MODALITIES if modalities == "fused" else (modalities,)
        self.aggregate = aggregate
        self.metric = metric
        self.shortlist = shortlist
        self.top_k = top_k
        self.reranker = reranker
        self.gait_scorer = reranker.scorer if reranker is not None else metric
        fusion = scores.fusion_for(modalities, self.gait_scorer, aggregate)
        if fusion is None:
            raise ValueError(f"the score-fusion parameters have no fusion for {self.gait_scorer!r}/{aggregate!r} "
                             f"(fitted: {sorted(scores.fusions)}); refit with python -m training.fusion")
        self.fusion: Fusion = fusion
        needed = dict(self.scorers())
        for modality, scorer in [*needed.items(), *([("gait", self.gait_scorer)] if "gait" in needed else [])]:
            if scores.modality_score(modality, scorer, aggregate) is None:
                raise ValueError(f"the score-fusion parameters have no {modality} calibration for {scorer!r}/{aggregate!r} "
                                 f"(fitted: {sorted(scores.scores)}); refit with python -m training.fusion")

    def scorers(self) -> dict[str, str]:
        """Modality -> the distance names whose calibrations this scorer needs."""
        out = {}
        if "gait" in self.used:
            out["gait"] = self.metric
        if "appearance" in self.used:
            out["appearance"] = "cos"
        return out

    def threshold_key(self) -> str:
        return ScoreModel.threshold_key(self.modalities, self.gait_scorer if "gait" in self.used else "-", self.aggregate)

    def _llr(self, modality: str, scorer: str, distance: np.ndarray) -> np.ndarray:
        model = self.scores.modality_score(modality, scorer, self.aggregate)
        return model.llr(distance)

    def candidates(self, queries: dict[str, np.ndarray | None]) -> list[str]:
        """Union of the identities in the FAISS shortlists of the query's modalities."""
        names: dict[str, None] = {}
        for modality in self.used:
            q = queries.get(modality)
            if q is None or self.gallery.count(modality) == 0:
                continue
            _, ids = self.gallery.search(modality, search_vector(q)[None], self.shortlist)
            for name in self.gallery.identities_of(ids[0][ids[0] >= 0]).values():
                names.setdefault(name, None)
        return list(names)

    def _distances(self, modality: str, query: np.ndarray, names: list[str]) -> tuple[dict[str, float], dict[str, int]]:
        """Per identity: aggregate distance of the query to its entries, and its nearest entry id."""
        per = self.gallery.entry_ids_of(names, modality)
        feats = self.gallery.features([i for ids in per.values() for i in ids])
        dist, nearest = {}, {}
        for name, ids in per.items():
            if not ids:
                continue
            stack = np.stack([feats[i] for i in ids])
            if modality == "appearance" and self.centring is not None:
                sources = self.gallery.sources_of(ids)
                stack = self.centring.centre(stack, [sources[i] for i in ids])
            d = self._metric(modality, query, stack)
            nearest[name] = ids[int(np.argmin(d))]
            dist[name] = float(d.min()) if self.aggregate == "best" else float(self._metric(modality, query, pool(modality, list(stack))[None])[0])
        return dist, nearest

    def _metric(self, modality: str, query: np.ndarray, stack: np.ndarray) -> np.ndarray:
        if modality == "appearance":
            unit = stack / np.maximum(np.linalg.norm(stack, axis=1, keepdims=True), 1e-12)
            return 1.0 - unit @ (query / max(float(np.linalg.norm(query)), 1e-12))
        return part_distance(query[None], stack, self.metric)[0]

    def _rerank(self, query: np.ndarray, names: list[str]) -> dict[str, float]:
        """CarGait distance of the query to each named identity (best entry, or pooled entries)."""
        per = self.gallery.entry_ids_of(names, "gait")
        feats = self.gallery.features([i for ids in per.values() for i in ids])
        stacks = {}
        for name, ids in per.items():
            if ids:
                stack = np.stack([feats[i] for i in ids])
                stacks[name] = pool("gait", list(stack))[None] if self.aggregate == "mean" else stack
        if not stacks:
            return {}
        candidates = np.concatenate(list(stacks.values()))  # one call for the whole shortlist
        d = self.reranker.pair_distances(np.repeat(query[None], len(candidates), axis=0), candidates)
        per_name = np.split(d, np.cumsum([len(stack) for stack in stacks.values()])[:-1])
        return {name: float(part.min()) for name, part in zip(stacks, per_name)}

    def score(self, queries: dict[str, np.ndarray | None], exclude: set[str] = frozenset()) -> list[CandidateScore]:
        """Candidate identities best first (highest fused log-odds); ``exclude``: identities that cannot be
        the query's (seen by the same camera at the same time)."""
        names = [n for n in self.candidates(queries) if n not in exclude]
        if not names:
            return []
        distances: dict[str, dict[str, float]] = {}
        llrs: dict[str, dict[str, float]] = {}
        nearest: dict[str, dict[str, int]] = {}
        for modality in self.used:
            q = queries.get(modality)
            if q is None:
                continue
            d, nearest[modality] = self._distances(modality, q, names)
            if d:
                llr = self._llr(modality, self.metric if modality == "gait" else "cos", np.asarray(list(d.values())))
                distances[modality], llrs[modality] = d, dict(zip(d, llr.tolist()))
        initial = self._fused(names, llrs)
        if self.reranker is not None and "gait" in distances:
            gait_d = distances["gait"]
            top = sorted(gait_d, key=gait_d.get)[: self.top_k]
            distances["gait"], llrs["gait"] = dict(gait_d), dict(llrs["gait"])
            for name, value in self._rerank(queries["gait"], top).items():
                distances["gait"][name] = value
                llrs["gait"][name] = float(self._llr("gait", self.reranker.scorer, np.asarray([value]))[0])
        fused = self._fused(names, llrs)
        initial_rank = {names[i]: r for r, i in enumerate(np.argsort(-initial, kind="stable"))}
        out = []
        for i in np.argsort(-fused, kind="stable"):
            name = names[i]
            primary = "gait" if name in nearest.get("gait", {}) else "appearance"
            out.append(CandidateScore(
                identity=name,
                fused=float(fused[i]),
                distances={m: distances[m][name] for m in distances if name in distances[m]},
                llr={m: llrs[m][name] for m in llrs if name in llrs[m]},
                entry_id=int(nearest.get(primary, {}).get(name, -1)),
                initial_rank=initial_rank[name],
            ))
        return out

    def _fused(self, names: list[str], llrs: dict[str, dict[str, float]]) -> np.ndarray:
        return self.fusion.score({m: np.asarray([llrs[m].get(n, np.nan) if m in llrs else np.nan for n in names])
                                  for m in MODALITIES})
