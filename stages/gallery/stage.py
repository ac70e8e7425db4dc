"""Track-level gallery stage: identifies each window against the persistent gallery (open set)."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from pipeline.messages import IdentityMatch, TrackWindow
from stages.gallery.calibration import Calibration
from stages.gallery.index import IndexSpec
from stages.gallery.search import GallerySearcher, Reranker
from stages.gallery.store import FORMAT, EntryMeta, Gallery

log = logging.getLogger(__name__)

DEFAULT_RERANKER = Path(__file__).resolve().parents[2] / "weights" / "cargait_casiab.pt"


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


class GalleryMatcher:
    """Sets ``window.identity`` (IdentityMatch) from ``gait_embedding`` (P, C) when present, else from
    ``appearance_embedding`` (D,); records ``model_versions["gallery"]``.

    gallery: gallery directory (created empty when absent).
    reranker: CarGait checkpoint for gait shortlists; "" = shipped weights, "none" = no re-ranking
        (a checkpoint trained for another gait model is skipped with a notice).
    metric: exact gait metric ("euc" or "cos"). shortlist: FAISS candidates; top_k: re-ranked/reported.
    gait_threshold / appearance_threshold: match when distance < threshold; 0 = the calibration stored
        in the gallery (or shipped with the re-ranker) for the distance in use.
    auto_enrol: unmatched final windows become new identities named ``<enrol_prefix>-NNNNN``.
    index: "flat" (exact), "ivf" or "hnsw"; nlist/nprobe/hnsw_m/ef_search tune the approximate ones.
    gait_stage / appearance_stage: names under which those stages record their model versions.
    """

    name = "gallery"

    def __init__(
        self,
        gallery: str = "~/.cache/gaitscope/gallery",
        reranker: str = "",
        metric: str = "euc",
        shortlist: int = 50,
        top_k: int = 10,
        gait_threshold: float = 0.0,
        appearance_threshold: float = 0.0,
        auto_enrol: bool = False,
        enrol_prefix: str = "person",
        index: str = "flat",
        nlist: int = 1024,
        nprobe: int = 32,
        hnsw_m: int = 32,
        ef_search: int = 128,
        gait_stage: str = "gait",
        appearance_stage: str = "reid",
    ) -> None:
        self.gallery = Gallery(gallery, IndexSpec(kind=index, nlist=nlist, nprobe=nprobe, hnsw_m=hnsw_m, ef_search=ef_search))
        self.reranker = self._load_reranker(reranker, metric)
        self.reranker_explicit = bool(reranker) and reranker.lower() != "none"
        self.searcher = GallerySearcher(self.gallery, self.reranker, metric, shortlist, top_k)
        self.plain_searcher = GallerySearcher(self.gallery, None, metric, shortlist, top_k)
        self.explicit = {"gait": gait_threshold, "appearance": appearance_threshold}
        self.auto_enrol = auto_enrol
        self.enrol_prefix = enrol_prefix
        self.stages = {"gait": gait_stage, "appearance": appearance_stage}
        rr = "none" if self.reranker is None else self.reranker.scorer
        self.version = f"{FORMAT}+{metric}+{rr}"
        self._missing_notice: set[str] = set()

    @staticmethod
    def _load_reranker(path: str, metric: str) -> Reranker | None:
        if path.lower() == "none":
            return None
        if not path and not DEFAULT_RERANKER.is_file():
            log.warning("gallery: no shipped CarGait weights at %s; gait shortlists are not re-ranked", DEFAULT_RERANKER)
            return None
        weights = Path(path).expanduser() if path else DEFAULT_RERANKER
        reranker = Reranker.load(weights)
        if reranker.info.metric != metric:
            raise ValueError(f"re-ranker {weights} works on the {reranker.info.metric!r} metric; set metric: {reranker.info.metric}")
        return reranker

    def searcher_for(self, modality: str, model_version: str) -> GallerySearcher:
        """The re-ranking searcher, unless the re-ranker belongs to another gait model: then the
        shipped default is skipped with a notice, and an explicitly configured one is an error."""
        rr = self.reranker
        if modality != "gait" or rr is None or not model_version or model_version == rr.info.gait_model_version:
            return self.searcher
        message = (f"re-ranker was trained on gait model {rr.info.gait_model_version!r}, embeddings come from "
                   f"{model_version!r}")
        if self.reranker_explicit:
            raise ValueError(f"{message}: set gallery.reranker to a matching checkpoint or 'none'")
        if "rerank" not in self._missing_notice:
            log.warning("gallery: %s; gait shortlists are not re-ranked", message)
            self._missing_notice.add("rerank")
        return self.plain_searcher

    def decision(self, modality: str, searcher: GallerySearcher | None = None,
                 model_version: str = "") -> tuple[Calibration | None, float | None]:
        """(calibration, threshold) for ``modality``; threshold None when none is known.

        Order: an explicit threshold, the gallery's calibration for the distance in use, then the
        calibration shipped with the re-ranker's manifest when it was fitted on the same gait model.
        """
        searcher = searcher or self.searcher
        scorer = searcher.scorer(modality)
        calibration = self.gallery.calibration(modality, scorer)
        if calibration is None and modality == "gait" and self.reranker is not None:
            shipped = self.reranker.calibrations.get(scorer)
            # An empty gallery has no model yet: the embeddings about to enter it decide.
            gallery_model = self.gallery.model_version("gait") or model_version
            if shipped is not None and shipped.model_version == gallery_model:
                calibration = shipped
        if self.explicit[modality] > 0:
            return calibration, self.explicit[modality]
        if calibration is not None:
            return calibration, calibration.threshold
        return None, None

    def match(self, modality: str, embeddings: list[np.ndarray], model_version: str) -> list[IdentityMatch]:
        """Open-set matches of embeddings of one modality (no enrolment)."""
        self.gallery.check_model(modality, model_version)
        searcher = self.searcher_for(modality, model_version)
        calibration, threshold = self.decision(modality, searcher, model_version)
        ranked = searcher.rank(modality, embeddings)
        limit = -np.inf if threshold is None else threshold  # uncalibrated: nothing can match
        return [searcher.identify(r, modality, calibration, limit) for r in ranked]

    def process(self, batch: list[TrackWindow]) -> list[TrackWindow]:
        groups: dict[str, list[TrackWindow]] = {"gait": [], "appearance": []}
        for w in batch:
            if w.gait_embedding is not None:
                groups["gait"].append(w)
            elif w.appearance_embedding is not None:
                groups["appearance"].append(w)
        for modality, windows in groups.items():
            if windows:
                self._identify(modality, windows)
        for w in batch:
            w.model_versions[self.name] = self.version
        return batch

    def _identify(self, modality: str, windows: list[TrackWindow]) -> None:
        key = "gait_embedding" if modality == "gait" else "appearance_embedding"
        version = windows[0].model_versions.get(self.stages[modality], "")
        embeddings = [np.asarray(getattr(w, key), np.float32) for w in windows]
        self.gallery.check_model(modality, version)
        searcher = self.searcher_for(modality, version)
        calibrated = self.decision(modality, searcher, version)[1] is not None
        if not calibrated:
            message = (f"gallery: no {modality} calibration for {searcher.scorer(modality)!r}; "
                       f"run `gallery calibrate` or set {modality}_threshold")
            if modality not in self._missing_notice:
                log.warning(message)
                self._missing_notice.add(modality)
            for w in windows:
                w.errors.append(message)
        for w, match in zip(windows, self.match(modality, embeddings, version)):
            w.identity = match
        if not (self.auto_enrol and calibrated):
            return
        for w, e in zip(windows, embeddings):
            if w.is_final and w.identity.identity is None:
                name, _ = self.gallery.enrol_new_identity(self.enrol_prefix, {modality: ([e], [window_meta(w, "")], version)})
                m = w.identity
                w.identity = IdentityMatch(name, modality, m.distance, m.confidence, m.candidates, enrolled=True)

    def close(self) -> None:
        self.gallery.close()
