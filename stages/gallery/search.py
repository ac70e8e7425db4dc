"""Open-set search of a gallery: FAISS shortlist, exact per-part rescoring, CarGait re-ranking, threshold.

For gait: per-part-normalised vectors give the shortlist by cosine (inner product); the shortlist is
rescored with the exact per-part metric ("euc": mean over parts of the Euclidean distance, what the
gait model and CarGait use; "cos": 1 - mean cosine), the top-K entries are re-ranked by CarGait,
and the shortlist is collapsed to identities (best entry each). For appearance: cosine distance on
the L2-normalised vectors, no re-ranking. A match needs the final distance under the calibrated
threshold of the distance actually used (see ``scorer``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from pipeline.messages import IdentityMatch, RankedCandidate
from stages.gait.distance import part_distance
from stages.gallery.calibration import Calibration
from stages.gallery.store import Gallery, search_vector
from stages.rerank.model import CarGait, strip_euclidean
from stages.rerank.weights import RerankerInfo, load_reranker

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Reranker:
    """A loaded CarGait checkpoint and the name of the distance it produces."""

    model: CarGait
    info: RerankerInfo
    scorer: str
    calibrations: dict[str, Calibration]

    @classmethod
    def load(cls, path: str | Path) -> Reranker:
        """Checkpoint plus the calibrations its manifest (``<path>.json``, key "calibration") ships."""
        path = Path(path).expanduser()
        model, info = load_reranker(path)
        digest = hashlib.sha256(path.read_bytes()).hexdigest()[:12]
        manifest = path.with_suffix(".json")
        shipped = json.loads(manifest.read_text()).get("calibration", {}) if manifest.is_file() else {}
        return cls(model, info, f"cargait:{digest}", {k: Calibration(**v) for k, v in shipped.items()})

    def pair_distances(self, probes: np.ndarray, candidates: np.ndarray) -> np.ndarray:
        """CarGait distances of pairs: probes (N, P, C), candidates (N, P, C) -> (N,)."""
        if len(probes) == 0:
            return np.zeros(0, np.float32)
        with torch.inference_mode():
            uniq, inverse = np.unique(probes.reshape(len(probes), -1), axis=0, return_inverse=True)
            pp = self.model.project(torch.as_tensor(uniq.reshape(-1, *probes.shape[1:]))).take(torch.as_tensor(inverse.reshape(-1)))
            pc = self.model.project(torch.as_tensor(candidates))
            ep, ec = self.model.condition(pp, pc)
            return strip_euclidean(ep, ec).numpy()


@dataclass(frozen=True)
class Ranked:
    """One query's shortlist: entry ids best first, their final and initial distances and initial ranks."""

    entry_ids: np.ndarray
    distances: np.ndarray
    initial_distances: np.ndarray
    initial_ranks: np.ndarray


class GallerySearcher:
    """Searches one gallery for batches of embeddings of one modality.

    metric: exact gait metric for the shortlist ("euc" or "cos"); shortlist: FAISS candidates per
    query; top_k: entries re-ranked and reported; reranker: CarGait or None.
    """

    def __init__(
        self,
        gallery: Gallery,
        reranker: Reranker | None = None,
        metric: str = "euc",
        shortlist: int = 50,
        top_k: int = 10,
    ) -> None:
        if metric not in ("euc", "cos"):
            raise ValueError(f"unknown metric {metric!r}; use 'euc' or 'cos'")
        if reranker is not None and reranker.info.metric != metric:
            raise ValueError(f"the re-ranker was trained on the {reranker.info.metric!r} metric, not {metric!r}")
        self.gallery = gallery
        self.reranker = reranker
        self.metric = metric
        self.shortlist = max(shortlist, top_k)
        self.top_k = top_k

    def scorer(self, modality: str) -> str:
        """Name of the distance that decides matches for ``modality`` (calibrations are per scorer)."""
        if modality == "appearance":
            return "cos"
        return self.reranker.scorer if self.reranker is not None else self.metric

    def rank(self, modality: str, embeddings: list[np.ndarray]) -> list[Ranked]:
        """Shortlist of each embedding ((P, C) gait or (D,) appearance), re-ranked, best first."""
        if not embeddings:
            return []
        queries = np.stack([search_vector(e) for e in embeddings])
        sims, ids = self.gallery.search(modality, queries, self.shortlist)
        if modality == "appearance":
            out = []
            for s, i in zip(sims, ids):
                keep = i >= 0
                d = (1.0 - s[keep]).astype(np.float32)
                out.append(Ranked(i[keep][: self.top_k], d[: self.top_k], d[: self.top_k], np.arange(min(self.top_k, keep.sum()))))
            return out
        feats = self.gallery.features(ids.reshape(-1))
        initial = []
        for e, row in zip(embeddings, ids):
            row = row[row >= 0]
            if len(row) == 0:
                initial.append((row, np.zeros(0, np.float32)))
                continue
            cand = np.stack([feats[int(i)] for i in row])
            d = part_distance(np.asarray(e, np.float32)[None], cand, self.metric)[0].astype(np.float32)
            order = np.argsort(d, kind="stable")
            initial.append((row[order], d[order]))
        rerank_d: list[np.ndarray | None] = [None] * len(initial)
        if self.reranker is not None:
            probes, cands, owner = [], [], []
            for q, (row, _) in enumerate(initial):
                for i in row[: self.top_k]:
                    probes.append(np.asarray(embeddings[q], np.float32))
                    cands.append(feats[int(i)])
                    owner.append(q)
            if probes:
                new = self.reranker.pair_distances(np.stack(probes), np.stack(cands))
                owner_arr = np.asarray(owner)
                for q in range(len(initial)):
                    rerank_d[q] = new[owner_arr == q]
        out = []
        for (row, d), new in zip(initial, rerank_d):
            k = min(self.top_k, len(row))
            ranks = np.arange(k)
            final = d[:k] if new is None else new
            perm = np.argsort(final, kind="stable")
            out.append(Ranked(row[:k][perm], final[perm].astype(np.float32), d[:k][perm].astype(np.float32), ranks[perm]))
        return out

    def identify(self, ranked: Ranked, modality: str, calibration: Calibration | None, threshold: float) -> IdentityMatch:
        """Collapse a shortlist to identities and decide match / unknown against ``threshold``.

        confidence: P(the best candidate is the same person | its distance) from the calibration.
        """
        names = self.gallery.identities_of(ranked.entry_ids)
        candidates: list[RankedCandidate] = []
        seen: set[str] = set()
        # initial rank of an identity = rank of its best entry in the initial (pre-re-rank) order
        initial_identity_rank: dict[str, int] = {}
        for entry in ranked.entry_ids[np.argsort(ranked.initial_ranks, kind="stable")]:
            initial_identity_rank.setdefault(names[int(entry)], len(initial_identity_rank))
        for entry, dist in zip(ranked.entry_ids, ranked.distances):
            name = names[int(entry)]
            if name in seen:
                continue
            seen.add(name)
            candidates.append(RankedCandidate(name, float(dist), initial_identity_rank[name], int(entry)))
        if not candidates:
            return IdentityMatch(None, modality, float("inf"), 0.0, [])
        best = candidates[0]
        confidence = float(calibration.confidence(best.distance)) if calibration is not None else float(best.distance < threshold)
        matched = best.distance < threshold
        return IdentityMatch(best.identity if matched else None, modality, best.distance, confidence, candidates)
