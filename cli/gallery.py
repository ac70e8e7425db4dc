"""Command-line verbs of the gallery: ``enroll``, ``gallery list|remove|export|consolidate|merges``, ``search``.

    python run_pipeline.py enroll --name alice --video clip.mp4 [--track 3]
    python run_pipeline.py enroll --name alice --jsonl out/tracks/clip-1a2b3c4d.jsonl --track 3
    python run_pipeline.py gallery list | remove NAME | export OUT.json [--vectors OUT.npz]
    python run_pipeline.py gallery consolidate [--above LOGODDS] | merges
    python run_pipeline.py search clip.mp4 | --jsonl FILE

Tracks from a previous run need its records written with ``--save-embeddings``. Each verb is a thin
layer over :mod:`stages.gallery.operations` and is also ``python -m cli.gallery VERB ...``.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path

from cli.parsing import ArgumentParser
from pipeline.errors import UserError
from stages.gallery.operations import (
    enroll_track,
    export_gallery,
    pick_track,
    read_records,
    search_track,
    tracks_from_records,
    tracks_from_windows,
)
from stages.gallery.scoring import MIXED_SPREAD, ScoreModel
from stages.gallery.stage import DEFAULT_SCORES, GalleryMatcher
from stages.gallery.store import Gallery

DEFAULT_GALLERY = "~/.cache/gaitscope/gallery"


def _gallery_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--gallery", default=DEFAULT_GALLERY, help=f"gallery directory (default {DEFAULT_GALLERY})")


def _video_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", default=None, help="pipeline config file or name (default: default)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")


def _run_pipeline(videos: list[str], config: str | None, overrides: list[str]) -> list:
    """Final track windows of the clips, through the pipeline with the gallery off."""
    from pipeline.app import collect_windows, load

    cfg = load(config, [*overrides, "gallery.enabled=false"])
    return collect_windows(cfg, videos)


# -- enroll ---------------------------------------------------------------------------------------
def enroll_main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="enroll", description="add an identity to the gallery from a clip or a previous run's track")
    _gallery_arg(p)
    p.add_argument("--name", required=True, help="identity name (new or existing)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--video", nargs="+", help="clip(s) showing the person")
    src.add_argument("--jsonl", help="track records of a previous run made with --save-embeddings")
    p.add_argument("--track", type=int, default=None, help="track id (needed when several tracks have embeddings)")
    p.add_argument("--source", default=None, help="source id of the track (when track ids repeat across sources)")
    p.add_argument("--scores", default="", help="score-fusion parameters whose mixed-track spread tells where the "
                                                "person in a track's box changed ('' = the shipped ones)")
    p.add_argument("--whole-track", action="store_true",
                   help="enrol every window, also those before the person in the track's box changed")
    _video_args(p)
    args = p.parse_args(argv)
    mixed_spread = None if args.whole_track else _mixed_spread(args.scores)
    tracks = (tracks_from_records(read_records(args.jsonl), args.name) if args.jsonl
              else tracks_from_windows(_run_pipeline(args.video, args.config, args.overrides), args.name))
    track = pick_track(tracks, args.track, args.source)
    with Gallery(args.gallery) as gallery:
        added = enroll_track(gallery, track, args.name, mixed_spread)
    trimmed = sum(added.values()) < sum(len(items) for items in track.items.values())
    print(f"enrolled {args.name!r} from {track.source}#{track.track_id}: "
          + ", ".join(f"{n} {m} entries" for m, n in added.items())
          + (" (the windows since the person in the track's box changed; --whole-track for all)" if trimmed else "")
          + f" -> {Path(args.gallery).expanduser()}")
    return 0


def _mixed_spread(scores: str) -> float | None:
    """The appearance spread above which a track shows several people, from the score-fusion parameters."""
    try:
        return ScoreModel.load(scores or DEFAULT_SCORES).thresholds.get(MIXED_SPREAD)
    except ValueError as exc:
        raise UserError(str(exc)) from None


# -- gallery list / remove / export -----------------------------------------------------
def gallery_main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="gallery", description="list, remove, export or consolidate gallery identities")
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
    co = sub.add_parser("consolidate", help="merge identities that score each other above a threshold on all their "
                                            "evidence and were never seen together (as auto-enrol does after a run)")
    _gallery_arg(co)
    co.add_argument("--above", type=float, default=None,
                    help="fused log-odds both identities must give each other (default: the fitted threshold)")
    co.add_argument("--scores", default="", help="score-fusion parameters ('' = shipped weights/score_fusion.params.json)")
    co.add_argument("--reranker", default="", help="gait re-scorer: CarGait checkpoint or discriminant projection (.npz) ('' shipped, 'none' to disable)")
    co.add_argument("--json", action="store_true", help="the merges as JSON")
    mg = sub.add_parser("merges", help="identities merged into others so far, oldest first, with the evidence")
    _gallery_arg(mg)
    mg.add_argument("--json", action="store_true", help="machine-readable output")
    args = p.parse_args(argv)
    if args.action == "consolidate":
        return _consolidate(args.gallery, args.above, args.scores, args.reranker, args.json)
    with Gallery(args.gallery, create=False) as gallery:
        if args.action == "list":
            return _list(gallery, args.entries, args.json)
        if args.action == "merges":
            merges = gallery.merges()
            if args.json:
                print(json.dumps(merges, indent=1, allow_nan=False))
            for m in [] if args.json else merges:
                print(f"  {m['absorbed']} -> {m['kept']} ({m['entries']} entries)  {json.dumps(m['evidence'])}")
            return 0
        if args.action == "remove":
            n = gallery.remove_identity(args.name)
            print(f"removed {args.name!r} ({n} entries)")
            return 0
        out = Path(args.out).expanduser()
        count = export_gallery(gallery, out, args.vectors)
        print(f"exported {count} entries -> {out}" + (f" and {args.vectors}" if args.vectors else ""))
        return 0


def _consolidate(folder: str, above: float | None, scores: str, reranker: str, as_json: bool) -> int:
    Gallery(folder, create=False).close()  # consolidating never creates a gallery
    matcher = GalleryMatcher(gallery=folder, scores=scores, reranker=reranker, auto_enrol=True, consolidate_above=above)
    try:
        if matcher.gallery.read_only:
            raise UserError(f"gallery {folder} is read-only: nothing can be merged")
        if matcher.consolidation_threshold(matcher.scorer) is None:
            raise UserError("the score-fusion parameters have no fitted consolidation threshold; give --above")
        merges = matcher.consolidate_identities({i.name for i in matcher.gallery.identities()})
    finally:
        matcher.close()
    if as_json:
        print(json.dumps([m.as_dict() for m in merges], indent=1, allow_nan=False))
        return 0
    for m in merges:
        print(f"  merged {m.absorbed} into {m.kept} ({m.entries} entries, fused log-odds {m.score:.2f})")
    print(f"{len(merges)} merge(s)")
    return 0


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


# -- search ---------------------------------------------------------------------------------------
def search_main(argv: list[str] | None = None) -> int:
    p = ArgumentParser(prog="search", description="rank gallery identities for the people in a clip")
    _gallery_arg(p)
    p.add_argument("videos", nargs="*", help="clip(s) to search with")
    p.add_argument("--jsonl", default=None, help="or: track records of a previous run made with --save-embeddings")
    p.add_argument("--modalities", choices=["fused", "gait", "appearance"], default="fused", help="evidence that decides")
    p.add_argument("--scores", default="", help="score-fusion parameters ('' = shipped weights/score_fusion.params.json)")
    p.add_argument("--reranker", default="", help="gait re-scorer: CarGait checkpoint or discriminant projection (.npz) ('' shipped, 'none' to disable)")
    p.add_argument("--metric", choices=["euc", "cos"], default="euc")
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--json", action="store_true", help="one JSON object per track")
    _video_args(p)
    args = p.parse_args(argv)
    if bool(args.videos) == bool(args.jsonl):
        p.error("give either clips or --jsonl")
    tracks = (tracks_from_records(read_records(args.jsonl), "?") if args.jsonl
              else tracks_from_windows(_run_pipeline(args.videos, args.config, args.overrides), "?"))
    if not tracks:
        print("no track with an embedding found", file=sys.stderr)
        return 1
    Gallery(args.gallery, create=False).close()  # searching never creates a gallery
    matcher = GalleryMatcher(gallery=args.gallery, modalities=args.modalities, scores=args.scores, reranker=args.reranker,
                             metric=args.metric, top_k=args.top_k)
    try:
        for (source, track_id), track in tracks.items():
            result = search_track(matcher, track)
            if args.json:
                print(json.dumps({"source": source, "track_id": track_id, **result}, allow_nan=False))
            else:
                best = result["identity"] or "unknown"
                print(f"{source}#{track_id} ({result['windows']} windows): {best}  confidence {result['confidence']:.3f}  "
                      f"scores {result['scores']}")
                for c in result["candidates"]:
                    print(f"    {c['identity']:<24} score {c['score']:.3f}  (initial rank {c['initial_rank'] + 1})")
    finally:
        matcher.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    verbs = {"enroll": enroll_main, "gallery": gallery_main, "search": search_main}
    if not argv or argv[0] not in verbs:
        print(f"usage: python -m cli.gallery {{{','.join(verbs)}}} ...", file=sys.stderr)
        return 2
    try:
        return verbs[argv[0]](argv[1:])
    except (UserError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
