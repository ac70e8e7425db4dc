"""Command-line verbs of the gallery: ``enroll``, ``gallery list|remove|export|calibrate``, ``search``.

    python run_pipeline.py enroll --name alice --video clip.mp4 [--track 3]
    python run_pipeline.py enroll --name alice --jsonl out/tracks/clip-1a2b3c4d.jsonl --track 3
    python run_pipeline.py gallery list | remove NAME | export OUT.json [--vectors OUT.npz]
    python run_pipeline.py gallery calibrate --features ~/.cache/gaitscope/features/gar_casiab_test.npz
    python run_pipeline.py search clip.mp4 | --jsonl FILE

Tracks from a previous run need its records written with ``--save-embeddings`` (each record then
carries ``embeddings.gait`` (P x C) and/or ``embeddings.appearance`` (D) and ``model_versions``).
Each verb is also ``python -m stages.gallery.commands VERB ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import UserError, output_error
from stages.gallery.calibration import calibrate, calibration_distances
from stages.gallery.search import Reranker
from stages.gallery.stage import DEFAULT_RERANKER, GalleryMatcher, window_meta
from stages.gallery.store import MODALITIES, EntryMeta, Gallery, GalleryError

DEFAULT_GALLERY = "~/.cache/gaitscope/gallery"
STAGE_OF = {"gait": "gait", "appearance": "reid"}  # stage names that record each embedding's model


@dataclass(frozen=True)
class TrackEmbeddings:
    """One track's embeddings from a run: per modality a list of (embedding, metadata, model version)."""

    source: str
    track_id: int
    items: dict[str, list[tuple[np.ndarray, EntryMeta, str]]]


def _gallery_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gallery", default=DEFAULT_GALLERY, help=f"gallery directory (default {DEFAULT_GALLERY})")


def _video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="pipeline config file or name (default: default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")


# -- reading tracks ---------------------------------------------------------------------------------
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


def _read_jsonl(path: str) -> list[dict]:
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


def _run_pipeline(videos: list[str], config: str | None, overrides: list[str]) -> list:
    from pipeline.app import collect_windows, load

    cfg = load(config, [*overrides, "gallery.enabled=false"])
    return collect_windows(cfg, videos)


def _pick_track(tracks: dict[tuple[str, int], TrackEmbeddings], track_id: int | None, source: str | None) -> TrackEmbeddings:
    chosen = [t for k, t in tracks.items() if (track_id is None or k[1] == track_id) and (source is None or k[0] == source)]
    if not chosen:
        raise GalleryError(f"no track with embeddings matches (track {track_id}, source {source}); tracks: {_describe(tracks)}")
    if len(chosen) > 1:
        raise GalleryError(f"{len(chosen)} tracks match; choose one with --track (and --source): {_describe(tracks)}")
    return chosen[0]


def _describe(tracks: dict[tuple[str, int], TrackEmbeddings]) -> str:
    return ", ".join(f"{s}#{t} ({sum(len(v) for v in tr.items.values())} windows)" for (s, t), tr in tracks.items()) or "none"


# -- enroll ---------------------------------------------------------------------------------------
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


def enroll_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="enroll", description="add an identity to the gallery from a clip or a previous run's track")
    _gallery_arg(p)
    p.add_argument("--name", required=True, help="identity name (new or existing)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", nargs="+", help="clip(s) showing the person")
    src.add_argument("--jsonl", help="track records of a previous run made with --save-embeddings")
    p.add_argument("--track", type=int, default=None, help="track id (needed when several tracks have embeddings)")
    p.add_argument("--source", default=None, help="source id of the track (when track ids repeat across sources)")
    _video_args(p)
    args = p.parse_args(argv)
    tracks = (tracks_from_records(_read_jsonl(args.jsonl), args.name) if args.jsonl
              else tracks_from_windows(_run_pipeline(args.video, args.config, args.overrides), args.name))
    track = _pick_track(tracks, args.track, args.source)
    with Gallery(args.gallery) as gallery:
        added = enroll_track(gallery, track, args.name)
    print(f"enrolled {args.name!r} from {track.source}#{track.track_id}: "
          + ", ".join(f"{n} {m} entries" for m, n in added.items()) + f" -> {Path(args.gallery).expanduser()}")
    return 0


# -- gallery list / remove / export / calibrate -----------------------------------------------------
def gallery_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="gallery", description="list, remove, export or calibrate gallery identities")
    sub = p.add_subparsers(dest="action", required=True)
    ls = sub.add_parser("list", help="identities with their entry counts")
    _gallery_arg(ls)
    ls.add_argument("--entries", action="store_true", help="list every entry with its provenance")
    ls.add_argument("--json", action="store_true", help="machine-readable output")
    rm = sub.add_parser("remove", help="delete an identity and its entries")
    _gallery_arg(rm)
    rm.add_argument("name")
    ex = sub.add_parser("export", help="write identities, entries and calibrations as JSON (and vectors as npz)")
    _gallery_arg(ex)
    ex.add_argument("out", help="JSON file")
    ex.add_argument("--vectors", default=None, help="also write the raw embeddings to this .npz")
    ca = sub.add_parser("calibrate", help="fit the open-set threshold on labelled gait features (e.g. CASIA-B test)")
    _gallery_arg(ca)
    ca.add_argument("--features", required=True, help=".npz of labelled features (evaluation.casia_b extract)")
    ca.add_argument("--model-version", default=None, help="model of the features (default: the gallery's gait model)")
    ca.add_argument("--reranker", default="", help="CarGait checkpoint ('' shipped, 'none' for the plain metric)")
    ca.add_argument("--metric", choices=["euc", "cos"], default="euc")
    ca.add_argument("--far", type=float, default=0.01, help="target false-accept rate of the nearest impostor")
    ca.add_argument("--top-k", type=int, default=10)
    args = p.parse_args(argv)
    create = args.action == "calibrate"
    with Gallery(args.gallery, create=create) as gallery:
        if args.action == "list":
            return _list(gallery, args.entries, args.json)
        if args.action == "remove":
            n = gallery.remove_identity(args.name)
            print(f"removed {args.name!r} ({n} entries)")
            return 0
        if args.action == "export":
            return _export(gallery, Path(args.out).expanduser(), args.vectors)
        return _calibrate(gallery, args)


def _list(gallery: Gallery, entries: bool, as_json: bool) -> int:
    info = gallery.info()
    idents = gallery.identities()
    if as_json:
        out = {**info, "identities": [asdict(i) for i in idents]}
        if entries:
            out["entries"] = [asdict(e) for e in gallery.entries()]
        print(json.dumps(out, indent=1, allow_nan=False))
        return 0
    print(f"{info['path']}: {info['identities']} identities, entries {info['entries']}, models {info['models']}")
    for i in idents:
        counts = ", ".join(f"{n} {m}" for m, n in i.entries.items()) or "no entries"
        print(f"  {i.name:<24} {counts}{'  (auto-enrolled)' if i.auto else ''}")
    if entries:
        for e in gallery.entries():
            span = "" if e.t_start is None else f" {e.t_start:.2f}-{e.t_end:.2f}s"
            print(f"  #{e.entry_id} {e.identity} {e.modality} {list(e.shape)} {e.source}#{e.track_id}{span}")
    return 0


def _export(gallery: Gallery, out: Path, vectors: str | None) -> int:
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
    print(f"exported {len(entries)} entries -> {out}" + (f" and {vectors}" if vectors else ""))
    return 0


def _calibrate(gallery: Gallery, args: argparse.Namespace) -> int:
    from stages.rerank.features import FeatureSet

    version = args.model_version or gallery.model_version("gait") or ""
    if not version:
        raise GalleryError("the gallery has no gait model yet: pass --model-version (the gait stage's version string)")
    fs = FeatureSet.load(args.features, version)
    reranker = None if args.reranker.lower() == "none" else Reranker.load(Path(args.reranker).expanduser() if args.reranker else DEFAULT_RERANKER)
    if reranker is not None and reranker.info.gait_model_version != version:
        raise GalleryError(f"re-ranker trained on {reranker.info.gait_model_version!r}, features/gallery from {version!r}")
    from training.casia_b import GALLERY_TYPES

    probe_mask = ~np.isin(fs.types, GALLERY_TYPES)
    pairs = None if reranker is None else reranker.pair_distances
    genuine, impostor = calibration_distances(fs.features, fs.subjects, probe_mask, args.metric, pairs, args.top_k)
    scorer = reranker.scorer if reranker is not None else args.metric
    cal = calibrate(genuine, impostor, scorer, version, f"{Path(args.features).name}: nearest genuine vs nearest impostor per probe", args.far)
    gallery.set_calibration("gait", cal)
    print(f"gait calibration for {scorer}: threshold {cal.threshold:.4f} (FAR {cal.far:.3f}, FRR {cal.frr:.3f}, "
          f"{cal.genuine} genuine / {cal.impostor} impostor)")
    return 0


# -- search ---------------------------------------------------------------------------------------
def search_main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="search", description="rank gallery identities for the people in a clip")
    _gallery_arg(p)
    p.add_argument("videos", nargs="*", help="clip(s) to search with")
    p.add_argument("--jsonl", default=None, help="or: track records of a previous run made with --save-embeddings")
    p.add_argument("--reranker", default="", help="CarGait checkpoint ('' shipped, 'none' to disable)")
    p.add_argument("--metric", choices=["euc", "cos"], default="euc")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--json", action="store_true", help="one JSON object per track")
    _video_args(p)
    args = p.parse_args(argv)
    if bool(args.videos) == bool(args.jsonl):
        p.error("give either clips or --jsonl")
    tracks = (tracks_from_records(_read_jsonl(args.jsonl), "?") if args.jsonl
              else tracks_from_windows(_run_pipeline(args.videos, args.config, args.overrides), "?"))
    if not tracks:
        print("no track with an embedding found", file=sys.stderr)
        return 1
    Gallery(args.gallery, create=False).close()  # searching never creates a gallery
    matcher = GalleryMatcher(gallery=args.gallery, reranker=args.reranker, metric=args.metric, top_k=args.top_k)
    try:
        for (source, track_id), track in tracks.items():
            modality = "gait" if track.items["gait"] else "appearance"
            emb, _, version = track.items[modality][-1]  # the final, longest window of the track
            result = search_one(matcher, modality, emb, version)
            if args.json:
                print(json.dumps({"source": source, "track_id": track_id, **result}, allow_nan=False))
            else:
                best = result["identity"] or "unknown"
                print(f"{source}#{track_id} ({modality}): {best}  distance {_number(result['distance'])}  "
                      f"confidence {result['confidence']:.3f}")
                for c in result["candidates"]:
                    print(f"    {c['identity']:<24} {_number(c['distance'])}  (initial rank {c['initial_rank'] + 1})")
    finally:
        matcher.close()
    return 0


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


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbs = {"enroll": enroll_main, "gallery": gallery_main, "search": search_main}
    if not argv or argv[0] not in verbs:
        print(f"usage: python -m stages.gallery.commands {{{','.join(verbs)}}} ...", file=sys.stderr)
        return 2
    try:
        return verbs[argv[0]](argv[1:])
    except (UserError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
