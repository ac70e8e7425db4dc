"""What the gait detector chose on a pipeline run: per-track routed fractions and DHS pictures.

    python run_pipeline.py run CLIP --out OUT --save-silhouettes --config <config with gait_detector>
    python -m stages.gait_detector.review OUT [--pictures /tmp/dhs_] [--tracks 6]

Reads the run's track records (``OUT/tracks/*.jsonl``) and silhouette strips
(``OUT/silhouettes/<source>/trackNNNNN_wWWW_fFFF.png``, each frame of a track saved once). For each
track it prints the frames seen, the frames inside a gait segment of any of its windows and their
share; for the longest tracks it writes the track's DHS with those frames marked by a yellow bar.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path

import cv2
import numpy as np

from pipeline.messages import SILHOUETTE_HEIGHT, SILHOUETTE_WIDTH
from stages.gait_detector.dhs import DHSConfig, dhs_to_image, extract_dhs

_STRIP = re.compile(r"track(\d+)_w(\d+)_f(\d+)\.png")
_PAD, _PAD_VALUE = 2, 64  # pipeline.export.tile's layout


def untile(strip: np.ndarray) -> np.ndarray:
    """A silhouette strip (rows of 64x44 tiles, 2 px pad of value 64) -> (N, 64, 44) uint8 frames."""
    h, w = SILHOUETTE_HEIGHT, SILHOUETTE_WIDTH
    frames = []
    for y in range(_PAD, strip.shape[0] - h + 1, h + _PAD):
        for x in range(_PAD, strip.shape[1] - w + 1, w + _PAD):
            tile = strip[y : y + h, x : x + w]
            if not (tile == _PAD_VALUE).all():  # unused tiles keep the pad value
                frames.append(tile)
    return np.stack(frames) if frames else np.zeros((0, h, w), np.uint8)


def read_tracks(records_path: Path) -> dict[int, dict]:
    """track id -> {"frames": sorted frame indices with a silhouette, "gait": set of frames in a gait
    segment of any window, "final_route": route of the last window}."""
    tracks: dict[int, dict] = {}
    for line in records_path.read_text().splitlines():
        r = json.loads(line)
        if r.get("type") != "track":
            continue
        t = tracks.setdefault(r["track_id"], {"frames": set(), "gait": set(), "final_route": None})
        t["frames"].update(int(b[0]) for b in r.get("boxes", []))
        if r.get("gait"):
            for s in r["gait"]["segments"]:
                t["gait"].update(range(s["start_frame"], s["end_frame"] + 1))
            if r["final"]:
                t["final_route"] = r["gait"]["route"]
    for t in tracks.values():
        t["frames"] = sorted(t["frames"])
        t["gait"] &= set(t["frames"])
    return tracks


def track_silhouettes(folder: Path, track_id: int) -> np.ndarray:
    strips = sorted(
        (int(m.group(2)), p) for p in folder.glob(f"track{track_id:05d}_w*.png") if (m := _STRIP.fullmatch(p.name))
    )
    parts = [untile(cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)) for _, p in strips]
    return np.concatenate(parts) if parts else np.zeros((0, SILHOUETTE_HEIGHT, SILHOUETTE_WIDTH), np.uint8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--pictures", default=None, help="prefix of DHS pictures, e.g. /tmp/dhs_")
    parser.add_argument("--tracks", type=int, default=6, help="pictures for this many longest tracks per source")
    parser.add_argument("--min-frames", type=int, default=20, help="tracks shorter than this are left out of the table")
    parser.add_argument("--knee-height", type=float, default=DHSConfig().knee_height)
    parser.add_argument("--band-rows", type=int, default=DHSConfig().band_rows)
    args = parser.parse_args(argv)
    dhs_config = DHSConfig(args.knee_height, args.band_rows)
    for records in sorted((args.out_dir / "tracks").glob("*.jsonl")):
        tracks = read_tracks(records)
        long_tracks = {k: v for k, v in tracks.items() if len(v["frames"]) >= args.min_frames}
        total = sum(len(v["frames"]) for v in long_tracks.values())
        gait = sum(len(v["gait"]) for v in long_tracks.values())
        print(f"{records.stem}: {len(long_tracks)} tracks >= {args.min_frames} frames, {total} frames, "
              f"{gait / max(total, 1):.1%} routed to gait")
        print(f"  {'track':>6s} {'frames':>7s} {'gait':>6s} {'share':>6s}  final route")
        ordered = sorted(long_tracks.items(), key=lambda kv: -len(kv[1]["frames"]))
        for track_id, t in ordered:
            share = len(t["gait"]) / len(t["frames"])
            print(f"  {track_id:6d} {len(t['frames']):7d} {len(t['gait']):6d} {share:6.1%}  {t['final_route']}")
        if not args.pictures:
            continue
        for track_id, t in ordered[: args.tracks]:
            silhouettes = track_silhouettes(args.out_dir / "silhouettes" / records.stem, track_id)
            if len(silhouettes) != len(t["frames"]):
                print(f"  track {track_id}: {len(silhouettes)} saved silhouettes for {len(t['frames'])} frames; no picture")
                continue
            gait_positions = np.isin(t["frames"], sorted(t["gait"]))
            edges = np.diff(np.concatenate([[0], gait_positions.astype(np.int8), [0]]))
            segments = list(zip(np.flatnonzero(edges == 1).tolist(), np.flatnonzero(edges == -1).tolist()))
            picture = dhs_to_image(extract_dhs(silhouettes, dhs_config), segments, scale=3)
            path = f"{args.pictures}{records.stem.split('-')[0]}_track{track_id}.png"
            cv2.imwrite(path, picture)
            print(f"  wrote {path}")


if __name__ == "__main__":
    main()
