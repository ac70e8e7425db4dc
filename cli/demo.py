"""``run_pipeline.py demo``: render a synthetic site, run the pipeline on it, compare with its ground truth.

Needs nothing but the installed package: the scene is generated (deterministic from its seed), so
the whole chain can be seen working on a machine with no data and no downloaded weights.

    python run_pipeline.py demo --out out/demo
    python run_pipeline.py demo --scene configs/synth/test_clip.yaml --config front_half --out /tmp/demo
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import yaml

from cli.parsing import ArgumentParser
from pipeline import app
from pipeline.config import ConfigError
from pipeline.messages import merged_names


def main(argv: list[str]) -> int:
    from synth.scene import SiteConfig, write_site

    parser = ArgumentParser(prog="run_pipeline.py demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="out/demo", help="output folder (scene, tracks, video)")
    parser.add_argument("--scene", default=str(app.PROJECT_ROOT / "configs" / "synth" / "demo_site.yaml"),
                        help="synthetic site config (configs/synth/*.yaml)")
    parser.add_argument("--config", default=None, help="pipeline config (default: default)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE")
    args = parser.parse_args(argv)

    scene_path = Path(args.scene)
    if not scene_path.is_file():
        raise ConfigError(f"scene config not found: {scene_path}")
    out = Path(args.out)
    scene_dir = out / "scene"
    site = SiteConfig.from_dict(yaml.safe_load(scene_path.read_text()) or {})
    print(f"rendering {len(site.cameras)} camera(s), {site.duration_s:g} s at {site.fps:g} fps -> {scene_dir}")
    truth_path = write_site(site, scene_dir)
    videos = sorted(str(p) for p in scene_dir.glob("*.mp4"))

    # A fresh gallery beside the outputs, filled as people are seen: identities link across cameras.
    # Embeddings are saved (and appearance computed on every window) so the run can be scored below.
    gallery_dir = out / "gallery"
    if gallery_dir.is_dir():
        shutil.rmtree(gallery_dir)  # the previous demo's identities would make this run look better
    demo_gallery = [f"gallery.gallery={gallery_dir}", "gallery.auto_enrol=true"]
    scoring = ["export.save_embeddings=true"]  # appearance comes on every window by default
    demo_overrides = [*demo_gallery, *scoring] if args.config in (None, "default") else scoring
    config = app.load(args.config, [*demo_overrides, *args.overrides])
    outputs = app.run(videos, out, config, video_out=out / "video", save_silhouettes=True)
    summary = outputs.summary
    print(f"{summary['frames_total']} frames, {summary['windows']} track windows in {summary['seconds']:.1f} s "
          f"({summary['fps']} fps); backends: {summary['backends']}")
    for stage in summary["stages"]:
        print(f"  {stage['stage']:>14}: {stage['ms_per_item']:8.2f} ms/item  ({stage['items_in']} items)")
    truth = json.loads(truth_path.read_text())
    merges = gallery_merges(config)
    renamed = merged_names(merges)
    outcome = summary.get("outcomes", {}).get("gallery", {})
    merged_at_end, named = outcome.get("merged", []), outcome.get("named", [])
    if merged_at_end:
        print(f"  gallery: {len(merged_at_end)} identities merged into others at the end of the run "
              "(their tracks are listed under the identity they joined)")
    if named:
        print(f"  gallery: {len(named)} track(s) that ended unnamed named on a second look at the end of the run")
    late = {(n["source"], n["track_id"]): n["identity"] for n in named}
    for camera in truth["cameras"]:
        name = camera["name"]
        people = {p["visit"] for frame in truth["frames"][name] for p in frame} if truth["frames"].get(name) else set()
        track_file = next((p for p in outputs.track_files if p.name.startswith(name)), None)
        tracks, identities = set(), set()
        if track_file is not None:
            for line in track_file.read_text().splitlines():
                record = json.loads(line)
                if record["type"] == "track":
                    tracks.add(record["track_id"])
                    decided = record["identity"]["id"] if record["final"] and record["identity"] else None
                    decided = late.get((record["source"], record["track_id"]), decided) if record["final"] else None
                    if decided:
                        identities.add(renamed.get(decided, decided))
        print(f"  {name}: {len(people)} walker(s) in the ground truth, {len(tracks)} track(s) found, "
              f"identities: {', '.join(sorted(identities)) or 'none'}")
    print(f"records: {out / 'tracks'}  video: {out / 'video'}  ground truth: {truth_path}")
    print_identity_scores(config, outputs.track_files, truth, merges, named)
    return 0


def gallery_merges(config) -> list[dict]:
    """The merges recorded in the configured gallery (none when there is no gallery stage or directory)."""
    from stages.gallery.store import Gallery

    spec = config.stages.get("gallery")
    configured = str(spec.params.get("gallery", "")) if spec is not None else ""
    folder = Path(configured).expanduser()
    if not configured or not folder.is_dir():
        return []
    with Gallery(folder, create=False) as gallery:
        return gallery.merges()


def print_identity_scores(config, track_files: list[Path], truth: dict, merges: list[dict] | None = None,
                          named: list[dict] | None = None) -> None:
    """The identity benchmark's scores of this run against the scene's ground truth."""
    from evaluation.identity.benchmark import markdown_table, score_run

    if "gallery" not in config.stages:
        print("identity scores: the gallery stage is disabled, nothing to score")
        return
    try:
        scores = score_run(config, track_files, truth, name="demo", merges=merges, named=named)
    except ValueError as exc:
        print(f"identity scores: not computed ({exc})")
        return
    print(f"\nidentity against the ground truth ({scores['tracks_matched']} of {scores['tracks']} tracks follow a "
          "rendered person; see `python -m evaluation.identity --help` for what each column means):")
    print(markdown_table(scores))
