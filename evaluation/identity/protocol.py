"""The benchmark's protocols on one site run: closed-set probes per enrol camera, open-set folds,
auto-enrol links. Everything goes through the gallery stage's own code (enrolment, search,
re-ranking, decisions); this module only arranges who is enrolled and who probes.

Closed set: for each camera in turn, its truth-matched tracks are enrolled, one gallery identity per
track with all its windows' embeddings (``stages.gallery.operations.enroll_track``); the truth-matched
tracks of the other cameras probe that gallery. Scorers:

- ``system``: the probe's windows go through the gallery stage (``process``) as in a run; the
  ranking is the final window's candidate list, the one a track record reports.
- ``gait`` / ``appearance``: that modality's embedding of every window of the probe is searched
  (``GalleryMatcher.match``: FAISS shortlist, the exact metric, CarGait when configured); a gallery
  track's score is its best calibrated score over the probe's windows. Raw distances are not
  comparable across a ranking: CarGait re-scores only the shortlist's first ``top_k``, on a scale
  of its own, and each scorer's calibration puts the two on one scale.
"""

from __future__ import annotations

import logging
import tempfile
from collections import defaultdict
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evaluation.identity.metrics import LinkScores, ProbeRanking, pairwise_links
from evaluation.identity.runs import build_gallery_stage, fresh_windows
from evaluation.identity.truth import TrackKey, TrackTruth
from pipeline.config import PipelineConfig
from pipeline.messages import RankedCandidate, TrackWindow

SCORERS = ("system", "gait", "appearance")
EMBEDDING = {"gait": "gait_embedding", "appearance": "appearance_embedding"}
STAGE_OF = {"gait": "gait", "appearance": "reid"}
PROBES_PER_CALL = 16


def by_track(windows: Sequence[TrackWindow]) -> dict[TrackKey, list[TrackWindow]]:
    out: dict[TrackKey, list[TrackWindow]] = defaultdict(list)
    for w in windows:
        out[(w.source_id, int(w.track_id))].append(w)
    return dict(out)


def track_decision(windows: Sequence[TrackWindow]) -> str | None:
    """The identity a track ends with: its final window's (the last window's when none is final)."""
    finals = [w for w in windows if w.is_final] or list(windows[-1:])
    match = finals[-1].identity if finals else None
    return None if match is None else match.identity


def auto_enrol_links(windows: Sequence[TrackWindow], tracks: dict[TrackKey, TrackTruth]) -> LinkScores:
    """Pairwise links of the truth-matched tracks of a run by the identities they ended with."""
    decisions = {k: track_decision(ws) for k, ws in by_track(windows).items()}
    keys = [k for k in decisions if tracks[k].identity is not None]
    return pairwise_links([tracks[k].identity for k in keys], [decisions[k] for k in keys])


@dataclass(frozen=True)
class Probe:
    """A probe track and its ranking of the gallery's tracks: (gallery track, rank key), nearest first;
    the key is the negated calibrated score where the gallery scores, else the distance."""

    track: TrackTruth
    ranked: list[tuple[TrackKey, float]]


def _ranking(candidates: list[tuple[str, float]], names: dict[str, TrackKey]) -> list[tuple[TrackKey, float]]:
    best: dict[TrackKey, float] = {}
    for name, distance in candidates:
        key = names[name]
        best[key] = min(best.get(key, np.inf), float(distance))
    return sorted(best.items(), key=lambda kv: kv[1])


def closed_set_probes(config: PipelineConfig, run_windows: Sequence[TrackWindow], tracks: dict[TrackKey, TrackTruth],
                      enrol_camera: str, scorers: Sequence[str], batch_size: int = 8) -> dict[str, list[Probe]]:
    """Enrol ``enrol_camera``'s truth-matched tracks, probe with every other camera's ones."""
    from stages.gallery.operations import enroll_track, tracks_from_windows

    unknown = sorted(set(scorers) - set(SCORERS))
    if unknown:
        raise ValueError(f"unknown closed-set scorer(s) {unknown}; choose from {list(SCORERS)}")
    windows = by_track(run_windows)
    matched = {k: t for k, t in tracks.items() if t.identity is not None and k in windows}
    gallery_keys = [k for k, t in matched.items() if t.camera == enrol_camera]
    probe_keys = [k for k, t in matched.items() if t.camera != enrol_camera]
    names = {f"track-{i:04d}": k for i, k in enumerate(gallery_keys)}
    entries = sum(len(windows[k]) for k in gallery_keys) + 1  # every entry in the shortlist: full rankings
    out: dict[str, list[Probe]] = {}
    with tempfile.TemporaryDirectory(prefix="gaitscope-bench-closed-") as tmp, _quiet_calibration_notices():
        stage = build_gallery_stage(config, Path(tmp) / "gallery", auto_enrol=False, top_k=entries, shortlist=entries)
        try:
            for name, key in names.items():
                found = tracks_from_windows(windows[key], name)
                if key in found:
                    enroll_track(stage.gallery, found[key], name, stage.mixed_spread)
            for scorer in scorers:
                if scorer == "system":
                    out[scorer] = _probe_system(stage, windows, probe_keys, matched, names, batch_size)
                else:
                    out[scorer] = _probe_modality(stage, scorer, windows, probe_keys, matched, names)
        finally:
            stage.close()
    return out


@contextmanager
def _quiet_calibration_notices():
    """Closed-set galleries rank and never threshold: their "no calibration" notices are noise."""
    logger = logging.getLogger("stages.gallery.stage")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _probe_system(stage, windows, probe_keys, matched, names, batch_size: int) -> list[Probe]:
    probes = []
    todo = [w for k in probe_keys for w in fresh_windows(windows[k])]
    for start in range(0, len(todo), batch_size):
        stage.process(todo[start : start + batch_size])
    result = by_track(todo)
    for key in probe_keys:
        ws = result[key]
        final = ([w for w in ws if w.is_final] or ws[-1:])[-1]
        match = final.identity
        cands = [] if match is None else [(c.identity, _rank_key(c)) for c in match.candidates if c.identity in names]
        probes.append(Probe(matched[key], _ranking(cands, names)))
    return probes


def _rank_key(candidate: RankedCandidate) -> float:
    """Lower is nearer: the negated calibrated score where the gallery has one, else the distance."""
    return -candidate.score if candidate.score is not None else candidate.distance


def _probe_modality(stage, modality: str, windows, probe_keys, matched, names) -> list[Probe]:
    attr = EMBEDDING[modality]
    owners, embeddings, versions = [], [], set()
    for key in probe_keys:
        for w in windows[key]:
            e = getattr(w, attr)
            if e is not None:
                owners.append(key)
                embeddings.append(np.asarray(e, np.float32))
                versions.add(w.model_versions.get(STAGE_OF[modality], ""))
    cands: dict[TrackKey, list[tuple[str, float]]] = defaultdict(list)
    if embeddings and stage.gallery.count(modality):
        if len(versions) > 1:
            raise ValueError(f"{modality} embeddings of one run come from several models: {sorted(versions)}")
        version = versions.pop()
        # A few probes per call: CarGait scores every (probe, entry) pair of a call in one batch.
        for start in range(0, len(embeddings), PROBES_PER_CALL):
            chunk = embeddings[start : start + PROBES_PER_CALL]
            for key, match in zip(owners[start : start + PROBES_PER_CALL], stage.match(modality, chunk, version)):
                cands[key].extend((c.identity, _rank_key(c)) for c in match.candidates if c.identity in names)
    return [Probe(matched[k], _ranking(cands.get(k, []), names)) for k in probe_keys]


def probe_rankings(probes: Sequence[Probe], tracks: dict[TrackKey, TrackTruth],
                   gallery_keys: Sequence[TrackKey]) -> tuple[list[ProbeRanking], list[ProbeRanking]]:
    """Probes as metric records: (natural, changed clothes).

    natural: each probe against the whole gallery; ``changed_clothes`` when no gallery track of its
    person wears its clothes. changed clothes: each probe whose person the gallery also holds in
    other clothes, against the gallery without that person's tracks in the probe's clothes (the
    clothes-changing protocol of long-term ReID benchmarks).
    """
    gallery = [tracks[k] for k in gallery_keys]
    natural, changed = [], []
    for p in probes:
        same_person = [g for g in gallery if g.identity == p.track.identity]
        same_clothes = {g.key for g in same_person if g.clothes == p.track.clothes}
        natural.append(_record(p, tracks, same_person, changed_clothes=not same_clothes and bool(same_person)))
        if len(same_clothes) < len(same_person):
            kept = Probe(p.track, [(k, d) for k, d in p.ranked if k not in same_clothes])
            others = [g for g in same_person if g.key not in same_clothes]
            changed.append(_record(kept, tracks, others, changed_clothes=True))
    return natural, changed


def clean_only(probes: Sequence[Probe], tracks: dict[TrackKey, TrackTruth], gallery_keys: Sequence[TrackKey],
               min_purity: float) -> tuple[list[Probe], list[TrackKey]]:
    """The probes and gallery tracks that follow their person in at least ``min_purity`` of their
    frames, each probe ranked against those gallery tracks alone: the same galleries as if the
    front end had made only clean tracks."""
    gallery = [k for k in gallery_keys if tracks[k].purity >= min_purity]
    kept = set(gallery)
    return [Probe(p.track, [(k, d) for k, d in p.ranked if k in kept]) for p in probes
            if p.track.purity >= min_purity], gallery


def _record(p: Probe, tracks: dict[TrackKey, TrackTruth], relevant: list[TrackTruth], changed_clothes: bool) -> ProbeRanking:
    return ProbeRanking(int(p.track.identity), changed_clothes, tuple(int(tracks[k].identity) for k, _ in p.ranked),
                        tuple(float(d) for _, d in p.ranked), len(relevant))
