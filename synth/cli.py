"""Command line of the synthetic walker generator (``python -m synth``).

    python -m synth scene   --config configs/synth/demo_site.yaml --out out/demo     # videos + groundtruth.json
    python -m synth dataset --config configs/synth/train_gait.yaml --out ~/.cache/gaitscope/synth_gait
    python -m synth tracks  --scene out/demo --out ~/.cache/gaitscope/synth/demo_tracks   # per camera and visit
    python -m synth preview --out docs/images/synth_contact_sheet.png
    python -m synth realism --out docs/synth_realism.json                             # against CASIA-B
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

import yaml

from synth.body import Population
from synth.dataset import BEHAVIOURS, CONDITIONS, iter_sequences
from synth.export import DatasetWriter
from synth.scene import SiteConfig, write_site


def _load_yaml(path: str) -> dict[str, Any]:
    p = Path(path)
    if not p.is_file():
        raise SystemExit(f"error: config file {path} not found")
    data = yaml.safe_load(p.read_text()) or {}
    if not isinstance(data, dict):
        raise SystemExit(f"error: {path} must hold a mapping of settings")
    return data


DATASET_KEYS = {
    "seed": int, "identities": int, "first_identity": int, "sequences_per_identity": int, "frames": int,
    "conditions": list, "views": (list, type(None)), "behaviours": list, "frame_size": list, "fps": (int, float),
    "crops": bool, "population_spread": (int, float), "exports": list, "dhs_lengths": list,
    "mask_noise": (int, float), "outfits": int,
}
EXPORTS = ("opengait", "attributes", "dhs")


def dataset_config(data: dict[str, Any]) -> dict[str, Any]:
    """Validate a dataset config (keys and types) and fill defaults."""
    unknown = sorted(set(data) - set(DATASET_KEYS))
    if unknown:
        raise ValueError(f"dataset config: unknown key(s) {unknown}; expected some of {sorted(DATASET_KEYS)}")
    for key, value in data.items():
        if not isinstance(value, DATASET_KEYS[key]):
            raise TypeError(f"dataset config: {key} has the wrong type ({type(value).__name__})")
    cfg = {"seed": 0, "identities": 10, "first_identity": 0, "sequences_per_identity": 10, "frames": 30,
           "conditions": list(CONDITIONS), "views": None, "behaviours": ["walk"], "frame_size": [480, 640],
           "fps": 25.0, "crops": True, "population_spread": 1.0, "exports": list(EXPORTS),
           "dhs_lengths": [10, 20, 30], "mask_noise": 0.0, "outfits": 1} | data
    for e in cfg["exports"]:
        if e not in EXPORTS:
            raise ValueError(f"dataset config: unknown export {e!r}; choose from {EXPORTS}")
    for b in cfg["behaviours"]:
        if b not in BEHAVIOURS:
            raise ValueError(f"dataset config: unknown behaviour {b!r}; choose from {BEHAVIOURS}")
    return cfg


def run_dataset(cfg: dict[str, Any], out: Path, log=print) -> Path:
    writer = DatasetWriter(out, opengait="opengait" in cfg["exports"], attributes="attributes" in cfg["exports"],
                           dhs_lengths=tuple(cfg["dhs_lengths"]) if "dhs" in cfg["exports"] else ())
    total = cfg["identities"] * cfg["sequences_per_identity"]
    start = time.perf_counter()
    seqs = iter_sequences(cfg["identities"], cfg["sequences_per_identity"], cfg["frames"], cfg["seed"],
                          conditions=tuple(cfg["conditions"]),
                          views=tuple(cfg["views"]) if cfg["views"] else None,
                          behaviours=tuple(cfg["behaviours"]), frame_size=tuple(cfg["frame_size"]),
                          fps=float(cfg["fps"]), crops=cfg["crops"],
                          population=Population(spread=float(cfg["population_spread"])),
                          first_identity=cfg["first_identity"], mask_noise=float(cfg["mask_noise"]),
                          outfits=cfg["outfits"])
    for n, seq in enumerate(seqs, 1):
        writer.add(seq)
        if n % 50 == 0 or n == total:
            log(f"{n}/{total} sequences, {n / (time.perf_counter() - start):.1f}/s")
    writer.close()
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    return out


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="synth", description="Synthetic walkers: surveillance scenes and gait "
                                 "datasets with full ground truth.")
    sub = ap.add_subparsers(dest="command", required=True)
    sc = sub.add_parser("scene", help="render a site: one H.264 video per camera and groundtruth.json")
    sc.add_argument("--config", required=True, help="site YAML (configs/synth/demo_site.yaml, test_clip.yaml)")
    sc.add_argument("--out", required=True, help="output folder")
    sc.add_argument("--seed", type=int, help="override the config's seed")
    sc.add_argument("--duration", type=float, help="override duration_s")
    sc.add_argument("--no-video", action="store_true", help="ground truth only (no RGB, no encode)")
    sc.add_argument("--no-masks", action="store_true", help="leave the run-length masks out of the JSON")
    ds = sub.add_parser("dataset", help="render person-centred sequences and export them (OpenGait layout, "
                                        "attributes.json, dhs.npz)")
    ds.add_argument("--config", required=True, help="dataset YAML (configs/synth/train_*.yaml)")
    ds.add_argument("--out", required=True, help="output folder (use a cache dir, not the repository)")
    ds.add_argument("--seed", type=int, help="override the config's seed")
    ds.add_argument("--identities", type=int, help="override the number of identities")
    tr = sub.add_parser("tracks", help="cut a rendered scene into per-camera, per-visit tracks and export them "
                                      "(OpenGait layout, attributes.json, dhs.npz): cross-camera identity data")
    tr.add_argument("--scene", required=True, help="folder written by 'synth scene' (videos and groundtruth.json)")
    tr.add_argument("--out", required=True, help="output folder")
    tr.add_argument("--min-frames", type=int, default=8, help="skip tracks with fewer visible frames")
    pv = sub.add_parser("preview", help="write a contact sheet PNG of identities, behaviours and attributes")
    pv.add_argument("--out", required=True)
    pv.add_argument("--seed", type=int, default=0)
    rl = sub.add_parser("realism", help="compare silhouette statistics with CASIA-B")
    rl.add_argument("--casia", default=None, help="CASIA-B folder (default ../shared/data/casia-b)")
    rl.add_argument("--subjects", type=int, default=10, help="CASIA-B subjects to read")
    rl.add_argument("--identities", type=int, default=20, help="synthetic identities to render")
    rl.add_argument("--out", default=None, help="write the statistics as JSON here")
    rl.add_argument("--transfer", action="store_true",
                    help="also classify CASIA-B views with centroids learnt from synthetic GEIs only")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        if args.command == "scene":
            data = _load_yaml(args.config)
            if args.seed is not None:
                data["seed"] = args.seed
            if args.duration is not None:
                data["duration_s"] = args.duration
            path = write_site(SiteConfig.from_dict(data), args.out, video=not args.no_video, masks=not args.no_masks)
            print(f"wrote {path}")
        elif args.command == "dataset":
            data = _load_yaml(args.config)
            if args.seed is not None:
                data["seed"] = args.seed
            if args.identities is not None:
                data["identities"] = args.identities
            out = run_dataset(dataset_config(data), Path(args.out))
            print(f"wrote {out}")
        elif args.command == "tracks":
            from synth.scene import scene_sequences

            writer = DatasetWriter(args.out, dhs_lengths=(10, 20, 30))
            count = 0
            for seq in scene_sequences(args.scene, args.min_frames):
                writer.add(seq)
                count += 1
            writer.close()
            print(f"wrote {count} tracks to {args.out}")
        elif args.command == "preview":
            from synth.preview import write_contact_sheet

            print(f"wrote {write_contact_sheet(args.out, args.seed)}")
        elif args.command == "realism":
            from synth.realism import compare, default_casia_dir, format_table

            casia = Path(args.casia) if args.casia else default_casia_dir()
            stats = compare(casia, n_subjects=args.subjects, n_identities=args.identities)
            print(format_table(stats))
            if args.transfer:
                from synth.realism import view_transfer

                stats["view_transfer"] = view_transfer(casia)
                print(json.dumps(stats["view_transfer"], indent=1))
            if args.out:
                Path(args.out).write_text(json.dumps(stats, indent=1))
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0
