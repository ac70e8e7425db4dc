"""Gallery operations a script can call: collect tracks' embeddings from a run's records or
windows, enrol a track, search with a track, export the gallery.
The command-line verbs around them are in :mod:`cli.gallery`.

Tracks from a previous run need its records written with ``--save-embeddings`` (each record then
carries ``embeddings.gait`` (P x C) and ``embeddings.appearance`` (D) and ``model_versions``); every
window of a track is used, both modalities, each with its provenance.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import output_error
from stages.gallery.matching import appearance_spread, final_stretch_start
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
            if emb.get(modality) is not None:
                track.items[modality].append((np.asarray(emb[modality], np.float32), meta, versions.get(STAGE_OF[modality], "")))
    return out


def tracks_from_windows(windows: Iterable, name: str) -> dict[tuple[str, int], TrackEmbeddings]:
    """Group TrackWindows (from ``pipeline.app.collect_windows``) by (source, track id), all modalities."""
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


def enroll_track(gallery: Gallery, track: TrackEmbeddings, name: str,
                 mixed_spread: float | None = None) -> dict[str, int]:
    """Add every embedding of a track under ``name``; returns entries added per modality.

    mixed_spread: where the track's own windows lie further apart in appearance than this (the person
    in its box changed), only the windows since the change are added: the person the track ends on.
    """
    added = {}
    for modality, items in final_stretch(track, mixed_spread).items.items():
        if not items:
            continue
        versions = {v for _, _, v in items}
        if len(versions) > 1:
            raise GalleryError(f"{modality} embeddings of one track come from several models: {sorted(versions)}")
        metas = [EntryMeta(name, m.source, m.track_id, m.t_start, m.t_end, m.attributes) for _, m, _ in items]
        ids = gallery.add(modality, [e for e, _, _ in items], metas, versions.pop())
        added[modality] = len(ids)
    return added


def final_stretch(track: TrackEmbeddings, mixed_spread: float | None) -> TrackEmbeddings:
    """The track's windows since the person in its box last changed (``final_stretch_start``); all of
    them when its windows agree or ``mixed_spread`` is None."""
    seen = track.items.get("appearance") or []
    embeddings, spans = [e for e, _, _ in seen], [(m.t_start, m.t_end) for _, m, _ in seen]
    if mixed_spread is None or appearance_spread(embeddings, spans) <= mixed_spread:
        return track
    start = final_stretch_start(embeddings, spans, mixed_spread)
    if start is None:
        return track
    return TrackEmbeddings(track.source, track.track_id, {
        m: [item for item in items if item[1].t_start is None or item[1].t_start >= start]
        for m, items in track.items.items()})


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


def search_track(matcher: GalleryMatcher, track: TrackEmbeddings) -> dict:
    """Ranked identities for a track (all its windows' embeddings), through the matcher's own decision rule."""
    embeddings = {m: [e for e, _, _ in items] for m, items in track.items.items()}
    versions = {m: items[0][2] for m, items in track.items.items() if items}
    match = matcher.match_track(embeddings, versions, track.source)
    return {
        "modality": match.modality,
        "identity": match.identity,
        "distance": _finite(match.distance),
        "confidence": match.confidence,
        "scores": match.scores,
        "windows": match.windows,
        "candidates": [{**asdict(c), "distance": _finite(c.distance)} for c in match.candidates],
    }


def _finite(value: float) -> float | None:
    """A distance for strict JSON: None when there was nothing to compare with (an empty gallery gives inf)."""
    return float(value) if np.isfinite(value) else None
