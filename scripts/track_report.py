"""Summarise a run's output: tracks, track lengths, frames with a silhouette; build a contact sheet.

    python scripts/track_report.py OUT_DIR [--sheet sheet.png]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import cv2
import numpy as np


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("out_dir", type=Path)
    parser.add_argument("--sheet", type=Path, default=None, help="write a contact sheet of silhouette strips")
    parser.add_argument("--source", default="", help="only sources whose output name contains this text")
    args = parser.parse_args(argv)
    summary = json.loads((args.out_dir / "summary.json").read_text())
    for path in sorted((args.out_dir / "tracks").glob(f"*{args.source}*.jsonl*")):
        records = [json.loads(line) for line in path.read_text().splitlines()]
        tracks = [r for r in records if r["type"] == "track"]
        source = tracks[0]["source"] if tracks else path.name
        frames_of: dict[int, set[int]] = {}
        for r in tracks:
            frames_of.setdefault(r["track_id"], set()).update(int(b[0]) for b in r.get("boxes", []))
        total = next((s["frames"] for s in summary["sources"] if s["source"] == source), None) or 0
        with_sil = set().union(*frames_of.values()) if frames_of else set()
        lengths = [len(v) for v in frames_of.values()]
        routes = [r["gait"]["route"] for r in tracks if r["final"] and r.get("gait")]
        window_routes = [r["gait"]["route"] for r in tracks if r.get("gait")]
        gait_share = window_routes.count("gait") / len(window_routes) if window_routes else 0.0
        print(f"{source}: {total} frames, {len(frames_of)} tracks, mean length {np.mean(lengths) if lengths else 0:.1f} "
              f"frames (median {np.median(lengths) if lengths else 0:.0f}), frames with a silhouette "
              f"{len(with_sil) / max(total, 1):.1%}" + (f", final routes {dict(zip(*np.unique(routes, return_counts=True)))}" if routes else "")
              + (f", windows routed to gait {gait_share:.1%} of {len(window_routes)}" if window_routes else ""))
    if args.sheet is not None:
        strips = sorted((args.out_dir / "silhouettes").glob(f"*{args.source}*/*_w000_*.png"))[:24]
        rows = [cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in strips]
        rows = [r[: 68] for r in rows if r is not None]  # first row of each strip
        width = max(r.shape[1] for r in rows)
        sheet = np.vstack([np.pad(r, ((0, 0), (0, width - r.shape[1])), constant_values=64) for r in rows])
        cv2.imwrite(str(args.sheet), sheet)
        print(f"contact sheet: {args.sheet} ({len(rows)} tracks)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
