"""Evaluate a gait model on CASIA-B (OpenGait's protocol, :mod:`evaluation.casia_b`) and extract its
embeddings.

Commands::

    # metrics of a checkpoint (+ the GEI+PCA baseline in the same run), features cached
    python -m evaluation.gait evaluate --weights weights/gar_casiab.pt --max-frames 30 \
        --features ~/.cache/gaitscope/features/gar_casiab_test.npz --gei --out /tmp/casia_eval.json
    # embeddings of the training subjects (e.g. to train a re-ranker on a frozen model)
    python -m evaluation.gait extract --weights weights/gar_casiab.pt --split train \
        --max-frames 30 --features ~/.cache/gaitscope/features/gar_casiab_train.npz
    # the gait model's report card: CASIA-B clean and corrupted, all frames and 10 frames,
    # cross-camera Rank-1 on rendered walkers (same / changed outfit), speed per sequence
    python -m evaluation.gait report --weights weights/gar_casiab.pt [--flip-test mean] --out REPORT.json
    # only the rendered walkers, with the three ways of handling the walking direction side by side
    python -m evaluation.gait report --weights weights/gar_site.pt --frames '' --corruptions '' --directions
    # only the rendered walkers, their silhouettes made by the pipeline's own segmenter (BlazePose crops)
    python -m evaluation.gait report --weights weights/gar_site.pt --frames '' --corruptions '' --walker-masks pose_crop
    # ... and the same walks with their exact masks: what the masks cost (both split by view, ``by_views``)
    python -m evaluation.gait report --weights weights/gar_site.pt --frames '' --corruptions '' --walker-masks exact
    # with a discriminant projection of the model's embeddings scored beside the plain metric
    python -m evaluation.gait report --weights weights/gar_site.pt --projection weights/gait_projection_site.npz
    # cross-camera Rank-1 on the identity benchmark's sites as ground truth shows them (no front end):
    # what the model alone gives there, with exact masks and with the training segmentation errors
    python -m evaluation.gait site --site configs/bench/sites/station.yaml --mask-noise 0,1
    # the same on the chain's own tracks of those sites: the segmenter's silhouettes against exact ones
    # (--set section.key=value changes the front end, e.g. the segmenter)
    python -m evaluation.gait tracks --site configs/bench/sites/station.yaml

Corruption protocol (``--corruption LEVEL``; ``report`` uses ``--corruptions``): the embedded
frames of every test sequence (gallery and probes) get independent pixel noise, seeded by the
sequence name so every model sees the same noise: each foreground pixel is cleared with
probability h and each background pixel set with probability s
(``training.augment.CORRUPTION_LEVELS``: ``mild`` h=6 % s=0.5 %, ``holes12_speckle1`` h=12 %
s=1 %, ``severe`` h=20 % s=2 %). ``--flip-test mean|max`` embeds each sequence and its mirror
image and combines the two. ``--device cuda`` runs the model of ``evaluate``, ``extract`` and
``report`` on a GPU.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from evaluation.casia_b import evaluate_casia_b, gei_baseline, summary_line
from stages.gait.embedding import FLIP_COMBINE, embed_sequences
from stages.gait.projection import GaitProjection
from stages.gait.weights import DEFAULT_WEIGHTS, load_gait_model
from training.augment import CORRUPTION_LEVELS
from training.casia_b import TEST_SUBJECTS, TRAIN_SUBJECTS, CasiaB, CasiaSequence, unpack_sequence
from training.gait_features import FEATURES_DIR, extract_casia_features


class InMemoryCasiaB:
    """The bit-packed sequences of ``keys`` read once (each subject file is xz-compressed: seconds
    to open), with the ``iter_sequences`` of :class:`CasiaB`, for evaluating several settings."""

    def __init__(self, reader: CasiaB, keys: list) -> None:
        self.packed = reader.load_packed(keys)

    def iter_sequences(self, keys):
        for k in sorted(keys):
            if k in self.packed:
                yield CasiaSequence(k, unpack_sequence(self.packed[k]))


def brief(result: dict) -> dict:
    """Rank-1 and mAP per condition of an evaluate_casia_b result."""
    return {c: {"rank1": r["rank1"], "map": r["map"]} for c, r in result.items()}


def sequence_speed(model, seq, frames: tuple[int, ...] = (30, 90), repeats: int = 20, flip_test=None) -> dict:
    """Milliseconds to embed one sequence (a CasiaSequence) cut or looped to ``frames`` frames on its
    own (one forward pass each), median over ``repeats`` runs, at the current torch thread count."""
    out = {}
    for f in frames:
        clip = seq.silhouettes[np.arange(f) % len(seq)]
        times = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            embed_sequences(model, [(clip, None)], flip_test=flip_test)
            times.append(time.perf_counter() - t0)
        out[f"{f}_frames_ms"] = round(1000 * float(np.median(times)), 2)
    return out


def report_card(
    weights: str,
    reader: CasiaB,
    frame_settings: tuple[int | None, ...] = (None, 10),
    corruptions: tuple[str, ...] = ("holes12_speckle1", "severe"),
    flip_test: str | None = None,
    site_identities: int = 100,
    cache_dir: Path | None = None,
    directions: bool = False,
    projection: str | None = None,
    walker_segmenter: str | None = None,
    device: str = "cpu",
) -> dict:
    """Every number of the gait report card for one checkpoint (see the module docstring);
    ``projection``: a discriminant projection file of this model, scored beside the plain metric;
    ``walker_segmenter``: make the rendered walkers' silhouettes with this segmenter (``pose_crop``, or
    ``exact`` for the site cameras' rendered masks);
    ``device``: where the model runs (``cpu``, ``cuda``)."""
    from evaluation.gait_sites import cross_camera_rank1, direction_handling, render_site_walks

    model, version = load_gait_model(weights)
    model.to(device)
    projector = GaitProjection.load(projection) if projection else None
    if projector is not None and projector.gait_model_version != version:
        raise ValueError(f"projection {projection} maps {projector.gait_model_version!r} embeddings, not {version!r}")
    cache_dir = cache_dir or FEATURES_DIR / "report"
    out: dict = {"weights": weights, "version": version, "flip_test": flip_test, "casia_b": {}}
    if projector is not None:
        out.update(projection=projection, casia_b_projected={})
    keys = reader.keys(subjects=TEST_SUBJECTS)
    test_set = InMemoryCasiaB(reader, keys)
    for frames in frame_settings:
        for corruption in (None, *corruptions):
            name = f"{'all' if frames is None else frames}_frames/{corruption or 'clean'}"
            path = cache_dir / f"{version}_{'flip-' + flip_test if flip_test else 'plain'}_{name.replace('/', '_')}.npz"
            t0 = time.time()
            feats = extract_casia_features(
                model, test_set, keys, frames, path, progress=False, corruption=corruption, flip_test=flip_test
            )
            res = brief(evaluate_casia_b(feats["embeddings"], feats["labels"], feats["types"], feats["views"]))
            out["casia_b"][name] = res
            print(f"CASIA-B {name}: " + "  ".join(f"{c} {r['rank1']:.2f}" for c, r in res.items())
                  + f"  ({time.time() - t0:.0f}s)", flush=True)
            if projector is not None:
                projected = projector.project(feats["embeddings"])[:, None]  # one "part": plain Euclidean
                res = brief(evaluate_casia_b(projected, feats["labels"], feats["types"], feats["views"]))
                out["casia_b_projected"][name] = res
                print(f"CASIA-B {name}, projected: " + "  ".join(f"{c} {r['rank1']:.2f}" for c, r in res.items()), flush=True)
    if site_identities > 0:
        walks = render_site_walks(site_identities, segmenter=walker_segmenter)
        emb = embed_sequences(model, list(zip(walks.silhouettes, walks.ratios)), flip_test=flip_test)
        out["walker_masks"] = walker_segmenter or "noise"
        out["cross_camera_synthetic"] = cross_camera_rank1(emb, walks)
        _print_cross_camera(out["cross_camera_synthetic"])
        if projector is not None:
            out["cross_camera_synthetic_projected"] = cross_camera_rank1(projector.project(emb)[:, None], walks)
            print(f"cross-camera (rendered walkers), projected: {out['cross_camera_synthetic_projected']}", flush=True)
        if directions:
            plain = None if flip_test else emb
            out["direction_handling"] = direction_handling(model, walks, plain)
            for name, res in out["direction_handling"].items():
                print(f"direction handling {name}: same {res['same_outfit']:.3f}  changed {res['changed_outfit']:.3f}",
                      flush=True)
    one = next(test_set.iter_sequences(keys[:1]))
    out["speed_per_sequence"] = {"device": device, "threads": torch_threads(),
                                 **sequence_speed(model, one, flip_test=flip_test)}
    print(f"speed per sequence: {out['speed_per_sequence']}", flush=True)
    return out


def _print_cross_camera(scores: dict) -> None:
    overall = {k: v for k, v in scores.items() if k != "by_views"}
    print(f"cross-camera (rendered walkers): {overall}", flush=True)
    for pair, res in scores["by_views"].items():
        print(f"  views {pair}: same {res['same_outfit']} / changed {res['changed_outfit']}  "
              f"({res['probes']['same_outfit']} / {res['probes']['changed_outfit']} probes)", flush=True)


def torch_threads() -> int:
    import torch

    return torch.get_num_threads()


def site_report(weights: str, sites: list[str], mask_noise: list[float]) -> dict:
    """Cross-camera gait Rank-1 on rendered sites' ground-truth walks (``gait_sites.site_gait_rank1``),
    per site and mask-noise strength; printed as it goes."""
    from evaluation.gait_sites import site_gait_rank1, site_track_walks
    from evaluation.identity.sites import load_site, render_site

    if not sites:
        raise SystemExit("site: give at least one --site (e.g. configs/bench/sites/station.yaml)")
    model, version = load_gait_model(weights)
    result: dict = {"weights": weights, "version": version, "sites": {}}
    for path in sites:
        name = Path(path).stem
        truth = render_site(name, load_site(Path(path))).truth()
        for noise in mask_noise:
            scores = site_gait_rank1(model, site_track_walks(truth, mask_noise=noise))
            result["sites"].setdefault(name, {})[f"mask_noise_{noise:g}"] = scores
            print(f"{name} mask noise {noise:g} ({scores['walks']} walks, {scores['identities']} people): "
                  + _same_changed(scores, ("whole_walk", "windows_mean")), flush=True)
    return result


def tracks_report(weights: str, sites: list[str], overrides: list[str]) -> dict:
    """Cross-camera gait Rank-1 on the chain's own tracks of rendered sites, with the segmenter's and
    with exact silhouettes (``gait_tracks``); printed as it goes."""
    from evaluation.gait_tracks import SELECTIONS, site_tracks_report

    if not sites:
        raise SystemExit("tracks: give at least one --site (e.g. configs/bench/sites/station.yaml)")
    model, version = load_gait_model(weights)
    result: dict = {"weights": weights, "version": version, "overrides": overrides, "sites": {}}
    for path in sites:
        name = Path(path).stem
        scores = result["sites"][name] = site_tracks_report(model, path, overrides)
        print(f"{name} ({scores['tracks']} tracks, {scores['walking_frames']} of {scores['frames']} frames walking): "
              + _same_changed(scores, [s for s in SELECTIONS if scores[s]["tracks"]]), flush=True)
    return result


def _same_changed(scores: dict, ways) -> str:
    """One line of same / changed-outfit Rank-1 (probes) per way of embedding."""
    return "; ".join(f"{way} same {scores[way]['same_outfit']} ({scores[way]['probes']['same_outfit']}), changed "
                     f"{scores[way]['changed_outfit']} ({scores[way]['probes']['changed_outfit']})" for way in ways)


def main(argv: list[str] | None = None) -> None:
    import torch

    ap = argparse.ArgumentParser(
        prog="python -m evaluation.gait", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("action", choices=["evaluate", "extract", "report", "site", "tracks"])
    ap.add_argument("--weights", default=str(DEFAULT_WEIGHTS))
    ap.add_argument("--root", default=None, help="CASIA-B compact copy (default ../shared/data/casia-b)")
    ap.add_argument("--split", choices=["train", "test"], default="test")
    ap.add_argument(
        "--max-frames", type=int, default=None, help="embed at most this many frames per sequence, spread evenly"
    )
    ap.add_argument("--metric", choices=["euc", "cos"], default="euc")
    ap.add_argument("--features", default=None, help="npz to write the embeddings to")
    ap.add_argument("--gei", action="store_true", help="also evaluate the GEI+PCA baseline")
    ap.add_argument("--corruption", choices=sorted(CORRUPTION_LEVELS), default=None,
                    help="evaluate/extract: corrupt the embedded frames (fixed protocol, see above)")
    ap.add_argument("--flip-test", choices=FLIP_COMBINE, default=None,
                    help="embed each sequence and its mirror image and combine them")
    ap.add_argument("--frames", default="all,10", help="report: frame settings, comma-separated ('all' or a number)")
    ap.add_argument("--corruptions", default="holes12_speckle1,severe", help="report: corruption levels ('' none)")
    ap.add_argument("--site-identities", type=int, default=100, help="report: rendered identities (0 skips)")
    ap.add_argument("--directions", action="store_true",
                    help="report: also compare plain, flip-mean and direction-normalised embeddings on the rendered walkers")
    ap.add_argument("--walker-masks", choices=["noise", "exact", "pose_crop", "pose_refine"], default="noise",
                    help="report: the rendered walkers' silhouettes from their masks with segmenter-like errors "
                         "(noise), or at the benchmark sites' sizes from their exact masks (exact) or made by the "
                         "pipeline's BlazePose crop segmenter (pose_crop; pose_refine: with the mask refiner)")
    ap.add_argument("--projection", default=None,
                    help="report: also score through this discriminant projection (training.gait_projection)")
    ap.add_argument("--site", action="append", default=[],
                    help="site, tracks: a rendered site config (configs/bench/sites/*.yaml), repeatable")
    ap.add_argument("--mask-noise", default="0", help="site: segmentation-error strengths, comma-separated")
    ap.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                    help="tracks: a front-end override on top of the identity benchmark's (e.g. segment.backend=...), repeatable")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu", help="evaluate, extract, report: where the model runs (cpu, cuda)")
    ap.add_argument("--out", default=None, help="JSON file for the metrics")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemExit(f"error: --device {args.device}: this machine has no CUDA GPU (use --device cpu)")

    if args.action in ("site", "tracks"):
        try:
            result = (site_report(args.weights, args.site, [float(n) for n in args.mask_noise.split(",") if n])
                      if args.action == "site" else tracks_report(args.weights, args.site, args.set))
        except (ValueError, TypeError, FileNotFoundError) as exc:  # ConfigError is a ValueError
            raise SystemExit(f"error: {exc}") from None
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
        return
    reader = CasiaB(args.root) if args.root else CasiaB()
    if args.action == "report":
        frames = tuple(None if f == "all" else int(f) for f in args.frames.split(",") if f)
        corruptions = tuple(c for c in args.corruptions.split(",") if c)
        result = report_card(
            args.weights, reader, frames, corruptions, args.flip_test, args.site_identities, directions=args.directions,
            projection=args.projection, walker_segmenter=None if args.walker_masks == "noise" else args.walker_masks,
            device=args.device,
        )
        if args.out:
            Path(args.out).write_text(json.dumps(result, indent=1))
        return
    model, version = load_gait_model(args.weights)
    model.to(args.device)
    subjects = TRAIN_SUBJECTS if args.split == "train" else TEST_SUBJECTS
    keys = reader.keys(subjects=subjects)
    features = (
        Path(args.features).expanduser()
        if args.features
        else FEATURES_DIR / f"{Path(args.weights).stem}_{args.split}.npz"
    )
    t0 = time.time()
    feats = extract_casia_features(
        model, reader, keys, args.max_frames, features, corruption=args.corruption, flip_test=args.flip_test
    )
    seconds = time.time() - t0
    print(
        f"{len(keys)} sequences embedded in {seconds:.0f}s ({len(keys) / seconds:.1f} seq/s) -> {features}", flush=True
    )
    if args.action == "extract":
        return
    report = {
        "weights": args.weights,
        "version": version,
        "max_frames": args.max_frames,
        "corruption": args.corruption,
        "flip_test": args.flip_test,
        "metric": args.metric,
        "features": str(features),
        "gait": evaluate_casia_b(feats["embeddings"], feats["labels"], feats["types"], feats["views"], args.metric),
    }
    print(summary_line("gait", report["gait"]), flush=True)
    if args.gei:
        report["gei_pca"] = gei_baseline(reader, metric=args.metric)
        print(summary_line("GEI+PCA", report["gei_pca"]), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
