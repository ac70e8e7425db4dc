"""Evaluation of the GADER gait detector on held-out data.

Two measurements (GADER sec. 4.2, "Gait Detector Evaluation"):

* window accuracy and the 4x4 confusion matrix on single-class windows of held-out tracks;
* frame-level TP/FP/FN/TN of "full body walking" on mixed tracks, for the windows + NMS + merge
  detector and for the paper's baseline that classifies the whole DHS at once and gives every frame
  that one label.

and one of this project: the share of frames routed to gait by clothing condition (nm, bg, cl), for
rendered people who walk in full view throughout, seen as the identity benchmark's cameras see them
with segmenter-like mask errors. A detector that reads the signature where a coat hangs sends
people in coats to appearance, and with them most of the walks that gait should identify after a
change of clothes.

Usage::

    python -m evaluation.gait_detector --config configs/train/gader.yaml [--weights PATH] [--out FILE]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

import numpy as np
import torch

from stages.gait_detector.checkpoint import DEFAULT_WEIGHTS, load_checkpoint
from stages.gait_detector.detect import DetectorParams, classify_whole, detect_segments
from stages.gait_detector.dhs import DHSConfig, extract_dhs
from stages.gait_detector.model import CLASSES, FULL_WALKING, DHSClassifier
from stages.gait_detector.route import RoutingParams, route
from training.gait_detector_data import (
    LabeledDHS,
    cached_tracks,
    casia_tracks,
    read_config,
    sample_windows,
    subject_range,
)
from training.gait_detector_synth import ALL_BEHAVIOURS, MIXED_BEHAVIOURS, synth_tracks

CONDITION_SEED = 4242  # the walkers of the clothing-condition measurement (never trained on)


@torch.inference_mode()
def window_confusion(
    model: DHSClassifier, tracks: list[LabeledDHS], rng: np.random.Generator, count: int, lengths: tuple[int, ...]
) -> np.ndarray:
    """Confusion matrix (4, 4) int64, rows = true class, columns = predicted, over ``count`` windows
    split evenly across ``lengths``, each window a single class over all of its frames."""
    confusion = np.zeros((len(CLASSES), len(CLASSES)), np.int64)
    per_length = max(1, count // len(lengths))
    for length in lengths:
        x, y = sample_windows(tracks, rng, per_length, length, single_class=True)
        predicted = model(torch.from_numpy(x)[:, None]).argmax(dim=1).numpy()
        np.add.at(confusion, (y, predicted), 1)
    return confusion


def frame_counts(predicted: np.ndarray, truth: np.ndarray) -> dict[str, int]:
    """TP/FP/FN/TN counts of boolean per-frame predictions against boolean ground truth."""
    return {
        "tp": int(np.sum(predicted & truth)),
        "fp": int(np.sum(predicted & ~truth)),
        "fn": int(np.sum(~predicted & truth)),
        "tn": int(np.sum(~predicted & ~truth)),
    }


def summarise_counts(counts: dict[str, int]) -> dict[str, float]:
    """Counts -> shares of all frames (as the paper reports them), accuracy, precision, recall."""
    total = max(1, sum(counts.values()))
    out = {k: round(v / total, 4) for k, v in counts.items()}
    out["accuracy"] = round((counts["tp"] + counts["tn"]) / total, 4)
    out["precision"] = round(counts["tp"] / max(1, counts["tp"] + counts["fp"]), 4)
    out["recall"] = round(counts["tp"] / max(1, counts["tp"] + counts["fn"]), 4)
    out["frames"] = int(total)
    return out


def frame_level(
    model: DHSClassifier, tracks: list[LabeledDHS], params: DetectorParams, routing: RoutingParams
) -> dict[str, dict]:
    """Frame-level detection of full-body walking: windows + NMS + merge (all segments, and only those
    long enough to be routed to gait) vs whole-sequence classification."""
    totals = {name: {"tp": 0, "fp": 0, "fn": 0, "tn": 0} for name in ("windows_nms", "routed_to_gait", "whole_sequence")}
    for track in tracks:
        truth = track.labels == FULL_WALKING
        found = detect_segments(model, track.dhs, params)
        routed = np.zeros(len(track), dtype=bool)
        for segment in route(found, len(track), routing).segments:
            routed[segment.start : segment.stop] = True
        whole_walk = int(classify_whole(model, track.dhs).argmax()) == FULL_WALKING
        for name, predicted in (
            ("windows_nms", found.segments.frame_mask(len(track))),
            ("routed_to_gait", routed),
            ("whole_sequence", np.full(len(track), whole_walk)),
        ):
            for k, v in frame_counts(predicted, truth).items():
                totals[name][k] += v
    return {name: summarise_counts(counts) for name, counts in totals.items()}


def confusion_report(confusion: np.ndarray) -> dict:
    total = max(1, int(confusion.sum()))
    binary_truth = np.arange(len(CLASSES)) == FULL_WALKING
    fw_correct = confusion[np.ix_(binary_truth, binary_truth)].sum() + confusion[np.ix_(~binary_truth, ~binary_truth)].sum()
    return {
        "classes": list(CLASSES),
        "confusion": confusion.tolist(),
        "accuracy": round(float(np.trace(confusion)) / total, 4),
        "full_walking_vs_rest_accuracy": round(float(fw_correct) / total, 4),
        "windows": total,
    }


def routed_by_condition(
    model: DHSClassifier, dhs_config: DHSConfig, params: DetectorParams, routing: RoutingParams,
    identities: int = 40, frames: int = 90, seed: int = CONDITION_SEED,
) -> dict[str, dict[str, float]]:
    """Per clothing condition: of ``identities`` rendered people walking in full view throughout
    (site cameras, 360x480 frames, mask noise 1), the share of their frames routed to gait and the
    share of people with no frame routed to gait."""
    from synth.dataset import CONDITIONS, SITE, SITE_FRAME_SIZE, generate_sequences

    out = {}
    for condition in CONDITIONS:
        walkers = generate_sequences(identities, 1, frames, seed, conditions=(condition,), crops=False, cameras=SITE,
                                     frame_size=SITE_FRAME_SIZE, mask_noise=1.0)
        shares = []
        for walker in walkers:
            silhouettes = walker.silhouettes[walker.visible]
            found = detect_segments(model, extract_dhs(silhouettes, dhs_config), params)
            shares.append(route(found, len(silhouettes), routing).walking_fraction)
        out[condition] = {"routed_to_gait": round(float(np.mean(shares)), 4),
                          "people_with_none": round(float(np.mean(np.asarray(shares) == 0.0)), 4)}
    return out


def evaluate(model: DHSClassifier, datasets: dict[str, tuple[list[LabeledDHS], list[LabeledDHS]]], cfg: dict,
             dhs_config: DHSConfig) -> dict:
    """datasets: name -> (tracks for window accuracy, mixed tracks for frame level); the routing by
    clothing condition is measured with the signature read as ``dhs_config`` says (the model's)."""
    ev = cfg["evaluation"]
    params = DetectorParams(**{k: tuple(v) if isinstance(v, list) else v for k, v in cfg["detector"].items()})
    routing = RoutingParams(**cfg.get("routing", {}))
    results = {}
    for name, (window_tracks, mixed_tracks) in datasets.items():
        rng = np.random.default_rng(ev["seed"])
        confusion = window_confusion(model, window_tracks, rng, ev["windows"], tuple(ev["window_lengths"]))
        results[name] = {"windows": confusion_report(confusion), "frames": frame_level(model, mixed_tracks, params, routing)}
    results["walking_by_condition"] = routed_by_condition(model, dhs_config, params, routing)
    return results


def build_eval_datasets(cfg: dict, dhs_config: DHSConfig) -> dict[str, tuple[list[LabeledDHS], list[LabeledDHS]]]:
    """name -> (tracks for window accuracy, mixed tracks for frame-level metrics), all held out."""
    ev = cfg["evaluation"]
    c = cfg["data"]["casia"]
    # The signature as the evaluated model reads it, which may not be the recipe's.
    key = {"purpose": "evaluate", "dhs": dataclasses.asdict(dhs_config), "evaluation": ev}
    casia = cached_tracks(
        {**key, "casia": c},
        lambda: casia_tracks(
            cfg, dhs_config, np.random.default_rng(ev["seed"]), subject_range(c["test_subjects"]),
            c["test_sequences_per_subject"], ev["mixed_track_frames"],
        ),
    )
    out = {"casia_test_075_124": (casia, casia[: ev["mixed_tracks"]])}
    if cfg["data"].get("synth"):
        s = cfg["data"]["synth"]
        every_kind = cached_tracks(
            {**key, "synth": s, "behaviours": ALL_BEHAVIOURS},
            lambda: synth_tracks(cfg, dhs_config, held_out=True, behaviours=ALL_BEHAVIOURS),
        )
        mixed = cached_tracks(
            {**key, "synth": s, "behaviours": MIXED_BEHAVIOURS},
            lambda: synth_tracks(cfg, dhs_config, held_out=True, behaviours=MIXED_BEHAVIOURS),
        )
        out["synth_held_out"] = (every_kind, mixed[: ev["mixed_tracks"]])
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m evaluation.gait_detector", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="training recipe (configs/train/gader.yaml)")
    parser.add_argument("--weights", default=str(DEFAULT_WEIGHTS), help="checkpoint to evaluate")
    parser.add_argument("--out", default=None, help="also write the results to this JSON file")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    cfg = read_config(args.config)
    model, dhs_config, version = load_checkpoint(args.weights)
    results = {"weights": version, **evaluate(model, build_eval_datasets(cfg, dhs_config), cfg, dhs_config)}
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        Path(args.out).write_text(text + "\n")


if __name__ == "__main__":
    main()
