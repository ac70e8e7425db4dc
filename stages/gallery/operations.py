"""Gallery operations a script can call: collect tracks' embeddings from a run's records or
windows, enrol a track, search with an embedding, export the gallery, calibrate its gait threshold.
The command-line verbs around them are in :mod:`cli.gallery`.

Tracks from a previous run need its records written with ``--save-embeddings`` (each record then
carries ``embeddings.gait`` (P x C) and/or ``embeddings.appearance`` (D) and ``model_versions``).
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import output_error
from stages.gallery.calibration import Calibration, calibrate, calibration_distances
from stages.gallery.search import Reranker
from stages.gallery.stage import GalleryMatcher, window_meta
from stages.gallery.store import MODALITIES, EntryMeta, Gallery, GalleryError

STAGE_OF = {"gait": "gait", "appearance": "reid"}  # stage names that record each embedding's model


@dataclass(frozen=True)
class TrackEmbeddings:
    """One track's embeddings from a run: per modality a list of (embedding, metadata, model version)."""

    source: str
    track_id: int
    items: dict[str, list[tuple[np.ndarray, EntryMeta, str]]]


def tracks_from_records(records: Iterable[dict], name: str) -> dict[tuple[str, int], TrackEmbeddings]:
    """Group a run's JSONL records (with embeddings) by (source, track id)."""
    out: dict[tuple[str, int], TrackEmbeddings] = {}
    for r in records:
        if r.get("type") != "track":
            continue
        emb = r.get("embeddings")
        if emb is None:
            raise GalleryError("records carry no embeddings: re-run with --save-embeddings (export.save_embeddings=true)")
        key = (str(r["source"]), int(r["track_id"]))
        track = out.setdefault(key, TrackEmbeddings(key[0], key[1], {m: [] for m in MODALITIES}))
        attrs = {k: v["label"] for k, v in (r.get("attributes") or {}).items()}
        time_s = r.get("time_s") or {}
        meta = EntryMeta(name, key[0], key[1], time_s.get("start"), time_s.get("end"), attrs)
        versions = r.get("model_versions") or {}
        for modality in MODALITIES:
            if emb.get(modality) is not None and r.get("final", True):
                track.items[modality].append((np.asarray(emb[modality], np.float32), meta, versions.get(STAGE_OF[modality], "")))
    return out


def tracks_from_windows(windows: Iterable, name: str) -> dict[tuple[str, int], TrackEmbeddings]:
    """Group final TrackWindows (from ``pipeline.app.collect_windows``) by (source, track id)."""
    out: dict[tuple[str, int], TrackEmbeddings] = {}
    for w in windows:
        key = (w.source_id, int(w.track_id))
        track = out.setdefault(key, TrackEmbeddings(key[0], key[1], {m: [] for m in MODALITIES}))
        meta = window_meta(w, name)
        if w.gait_embedding is not None:
            track.items["gait"].append((np.asarray(w.gait_embedding, np.float32), meta, w.model_versions.get("gait", "")))
        if w.appearance_embedding is not None:
            track.items["appearance"].append((np.asarray(w.appearance_embedding, np.float32), meta, w.model_versions.get("reid", "")))
    return {k: t for k, t in out.items() if any(t.items.values())}


def read_records(path: str) -> list[dict]:
    """The records of a run's JSON Lines file."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise GalleryError(f"no such records file: {p}")
    records = []
    try:
        with open(p, encoding="utf-8") as f:
            for number, line in enumerate(f, 1):
                if line.strip():
                    records.append(json.loads(line))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        where = f" line {number}" if isinstance(exc, json.JSONDecodeError) else ""
        raise GalleryError(f"{p}{where}: not a JSON Lines file of track records ({type(exc).__name__})") from None
    return records


def pick_track(tracks: dict[tuple[str, int], TrackEmbeddings], track_id: int | None, source: str | None) -> TrackEmbeddings:
    """The one track matching ``track_id`` and ``source`` (either may be None); a clear error otherwise."""
    chosen = [t for k, t in tracks.items() if (track_id is None or k[1] == track_id) and (source is None or k[0] == source)]
    if not chosen:
        raise GalleryError(f"no track with embeddings matches (track {track_id}, source {source}); tracks: {_describe(tracks)}")
    if len(chosen) > 1:
        raise GalleryError(f"{len(chosen)} tracks match; choose one with --track (and --source): {_describe(tracks)}")
    return chosen[0]


def _describe(tracks: dict[tuple[str, int], TrackEmbeddings]) -> str:
    return ", ".join(f"{s}#{t} ({sum(len(v) for v in tr.items.values())} windows)" for (s, t), tr in tracks.items()) or "none"


def enroll_track(gallery: Gallery, track: TrackEmbeddings, name: str) -> dict[str, int]:
    """Add every embedding of a track under ``name``; returns entries added per modality."""
    added = {}
    for modality, items in track.items.items():
        if not items:
            continue
        versions = {v for _, _, v in items}
        if len(versions) > 1:
            raise GalleryError(f"{modality} embeddings of one track come from several models: {sorted(versions)}")
        metas = [EntryMeta(name, m.source, m.track_id, m.t_start, m.t_end, m.attributes) for _, m, _ in items]
        ids = gallery.add(modality, [e for e, _, _ in items], metas, versions.pop())
        added[modality] = len(ids)
    return added


def export_gallery(gallery: Gallery, out: Path, vectors: str | None) -> int:
    """Write identities, entries and calibrations as JSON (and the raw vectors as npz); returns the entry count."""
    entries = gallery.entries()
    doc = {**gallery.info(), "identities": [asdict(i) for i in gallery.identities()], "entries": [asdict(e) for e in entries]}
    target = out
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(out.name + ".tmp")
        tmp.write_text(json.dumps(doc, indent=1, allow_nan=False) + "\n")
        tmp.replace(out)
        if vectors:
            feats = gallery.features([e.entry_id for e in entries])
            arrays = {f"entry_{e.entry_id}": feats[e.entry_id] for e in entries}
            target = Path(vectors).expanduser()
            tmpv = target.with_name(target.name + ".tmp.npz")
            np.savez(tmpv, **arrays)
            tmpv.replace(target)
    except OSError as exc:
        raise output_error(target, exc) from None
    return len(entries)


def search_one(matcher: GalleryMatcher, modality: str, embedding: np.ndarray, version: str) -> dict:
    """Ranked identities for one embedding, through the matcher's own decision rule."""
    match = matcher.match(modality, [embedding], version)[0]
    return {
        "modality": modality,
        "identity": match.identity,
        "distance": _finite(match.distance),
        "confidence": match.confidence,
        "calibrated": matcher.decision(modality, matcher.searcher_for(modality, version))[1] is not None,
        "candidates": [{**asdict(c), "distance": _finite(c.distance)} for c in match.candidates],
    }


def _finite(value: float) -> float | None:
    """A distance for strict JSON: None when there was nothing to compare with (an empty gallery gives inf)."""
    return float(value) if np.isfinite(value) else None


def calibrate_gait(
    gallery: Gallery,
    features: np.ndarray,
    subjects: np.ndarray,
    probe_mask: np.ndarray,
    model_version: str,
    source: str,
    reranker: Reranker | None = None,
    metric: str = "euc",
    far: float = 0.01,
    top_k: int = 10,
) -> Calibration:
    """Fit the gallery's gait threshold on labelled features (N, P, C): the nearest genuine and nearest
    impostor distance of each probe (``probe_mask``) among the rest, re-ranked when a re-ranker is given."""
    if reranker is not None and reranker.info.gait_model_version != model_version:
        raise GalleryError(
            f"re-ranker trained on {reranker.info.gait_model_version!r}, features/gallery from {model_version!r}"
        )
    pairs = None if reranker is None else reranker.pair_distances
    genuine, impostor = calibration_distances(features, subjects, probe_mask, metric, pairs, top_k)
    scorer = reranker.scorer if reranker is not None else metric
    cal = calibrate(genuine, impostor, scorer, model_version, source, far)
    gallery.set_calibration("gait", cal)
    return cal
