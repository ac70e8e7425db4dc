"""Learned centre detector: decoding, training targets, checkpoints, training on a rendered scene, and the
shipped weights on rendered and real walkers.

The real-clip test reads the campus clip from ../shared/data (skipped where absent): the network was
trained on rendered sites only, so on real people it must still find the walkers.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from evaluation.front_end import box_iou
from pipeline.config import read_yaml
from stages.checkpoints import sha256_of
from stages.detect.centre import DEFAULT_WEIGHTS, CentreNetDetector, load_detector, save_detector
from stages.detect.centre_net import STRIDE, CentreNetConfig, PersonCentreNet, decode_centres, network_input
from stages.model_files import ModelFileError
from tests.helpers import PROJECT_ROOT, VIDEOS, require
from training.person_detector import (
    Samples,
    batch_tensors,
    centre_targets,
    corrupted_foreground,
    detection_scores,
    focal_loss,
    train,
)

TINY = CentreNetConfig(widths=(4, 8, 8, 8), context_dilations=(1,))


def test_network_input_pads_to_a_multiple_of_eight_and_keeps_the_foreground() -> None:
    image = np.full((30, 45, 3), 255, np.uint8)
    foreground = np.zeros((30, 45), bool)
    foreground[5:10, 7:9] = True
    x = network_input(image, foreground)
    assert x.shape == (4, 32, 48)
    assert x[:3, :30, :45].min() == 1.0 and x[:3, 30:].max() == 0.0 and x[:3, :, 45:].max() == 0.0
    assert x[3].sum() == 10 and x[3, 5:10, 7:9].all()


def test_targets_decode_back_to_their_boxes() -> None:
    boxes = np.array([[40.0, 20.0, 62.0, 90.0], [52.0, 24.0, 70.0, 84.0], [150.0, 60.0, 170.0, 100.0]], np.float32)
    heatmap, size, offset, centre = centre_targets(boxes, (32, 48), spread=6.0)
    assert centre.sum() == 3 and heatmap.max() == 1.0
    found, scores = decode_centres(heatmap, size, offset, score_threshold=0.99)
    assert len(found) == 3 and (scores == 1.0).all()
    iou = box_iou(boxes, found)
    assert (iou.max(axis=1) > 0.99).all()  # two overlapping people stay two boxes


def test_decoding_keeps_local_peaks_above_the_threshold_only() -> None:
    heatmap = np.zeros((20, 20), np.float32)
    heatmap[5, 5], heatmap[5, 6] = 0.9, 0.8  # a peak and its shoulder: one person
    heatmap[15, 15] = 0.2  # below the threshold
    size = np.zeros((2, 20, 20), np.float32)
    size[:, 5, 5] = np.log([2.0, 4.0])
    offset = np.full((2, 20, 20), 0.5, np.float32)
    boxes, scores = decode_centres(heatmap, size, offset, score_threshold=0.3)
    assert len(boxes) == 1 and scores[0] == pytest.approx(0.9)
    cx, cy = 5.5 * STRIDE, 5.5 * STRIDE
    np.testing.assert_allclose(boxes[0], [cx - 4, cy - 8, cx + 4, cy + 8], atol=1e-4)


def test_focal_loss_is_lower_for_the_right_heatmap() -> None:
    target = torch.zeros(1, 8, 8)
    target[0, 3, 4] = 1.0
    right = torch.full((1, 8, 8), -6.0)
    right[0, 3, 4] = 6.0
    wrong = torch.full((1, 8, 8), -6.0)
    wrong[0, 6, 1] = 6.0
    assert focal_loss(right, target) < 0.1 < focal_loss(wrong, target)


def test_zoomed_and_mirrored_samples_carry_their_boxes_along() -> None:
    image = np.zeros((1, 64, 96, 3), np.uint8)
    foreground = np.zeros((1, 64, 96), bool)
    foreground[0, 8:56, 40:56] = True
    samples = Samples(image, foreground, np.array([[0, 40, 8, 56, 56]], np.float32), np.zeros((0, 5), np.float32))
    rng = np.random.default_rng(0)
    config = {"spread": 6.0, "morph": 0.0, "holes": 0.0, "clutter": 0.0, "crop": [64, 96], "zoom": [0.5, 2.0],
              "keep_cut": 0.4}
    scales = set()
    for _ in range(40):
        x, heatmap, size, _, centre = batch_tensors(samples, np.array([0]), rng, config)
        fg = x[0, 3].numpy()
        ys, xs = np.nonzero(centre[0].numpy())
        if not len(xs):  # the person fell out of the window
            continue
        assert len(xs) == 1
        cy, cx = ys[0] * STRIDE + STRIDE // 2, xs[0] * STRIDE + STRIDE // 2
        assert fg[max(cy - STRIDE, 0) : cy + STRIDE, max(cx - STRIDE, 0) : cx + STRIDE].any()
        height = np.exp(size[0, 1, ys[0], xs[0]].item()) * STRIDE
        assert height <= np.count_nonzero(fg.any(axis=1)) + STRIDE
        scales.add(round(height / 48, 1))
    assert len(scales) > 3  # seen at several scales


def test_foreground_corruption_makes_holes_and_clutter() -> None:
    foreground = np.zeros((120, 160), bool)
    foreground[20:100, 60:90] = True
    rng = np.random.default_rng(1)
    holed = [corrupted_foreground(foreground, rng, {"morph": 0.0, "holes": 1.0, "clutter": 0.0}) for _ in range(5)]
    assert all(not (h & ~foreground).any() and 0.3 < h.sum() / foreground.sum() < 0.95 for h in holed)
    cluttered = corrupted_foreground(foreground, rng, {"morph": 0.0, "holes": 0.0, "clutter": 1.0})
    assert cluttered[foreground].all() and (cluttered & ~foreground).any()


def test_detection_scores_count_hits_misses_and_false_alarms() -> None:
    samples = Samples(np.zeros((1, 8, 8, 3), np.uint8), np.zeros((1, 8, 8), bool),
                      np.array([[0, 0, 0, 10, 40], [0, 50, 0, 60, 40]], np.float32), np.zeros((0, 5), np.float32))
    found = [np.array([[0, 0, 10, 40], [100, 0, 110, 40]], np.float32)]
    assert detection_scores(found, samples, min_height=30) == {"precision": 0.5, "recall": 0.5, "f1": 0.5}


def test_checkpoint_round_trip_and_refusals(tmp_path: Path) -> None:
    model = PersonCentreNet(TINY)
    path = tmp_path / "detector.pt"
    sha = save_detector(path, model, 0.4)
    loaded = load_detector(path)
    assert loaded.version == f"person_centrenet@{sha[:12]}" and loaded.model.config == TINY
    assert loaded.score_threshold == 0.4
    x = torch.rand(1, 4, 32, 48)
    model.eval()
    with torch.inference_mode():
        for a, b in zip(model(x), loaded.model(x)):
            assert torch.allclose(a, b)
    torch.save({"format": "something else"}, tmp_path / "other.pt")
    with pytest.raises(ModelFileError, match="not a gaitscope person detector"):
        load_detector(tmp_path / "other.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ModelFileError, match="not a readable torch checkpoint"):
        load_detector(tmp_path / "garbage.pt")
    with pytest.raises(ModelFileError, match="not found; restore .* training.person_detector"):
        load_detector(tmp_path / "missing.pt")
    data = torch.load(path, weights_only=True)
    data["state_dict"] = {k: v[:1] if v.ndim else v for k, v in data["state_dict"].items()}
    torch.save(data, tmp_path / "cut.pt")
    with pytest.raises(ModelFileError, match="do not fit"):
        load_detector(tmp_path / "cut.pt")


def test_training_on_a_rendered_scene_writes_loadable_weights_and_a_manifest(tmp_path: Path) -> None:
    config = read_yaml(PROJECT_ROOT / "configs" / "train" / "person_detector.yaml")
    site = {"config": str(PROJECT_ROOT / "configs" / "synth" / "ci_scene.yaml")}
    config.update(sites=[site], val_sites=[site], cache=str(tmp_path / "cache"), every=40, widths=[4, 8, 8, 8],
                  context_dilations=[1], iterations=3, val_every=3, batch=2, threads=1,
                  output=str(tmp_path / "weights" / "detector.pt"))
    manifest = train(config)
    weights = tmp_path / "weights" / "detector.pt"
    assert manifest["sha256"] == sha256_of(weights)
    assert manifest["data"]["train_samples"] > 0 and manifest["data"]["train_people"] > 0
    assert set(manifest["metrics"]["classic_detector"]) == {"precision", "recall", "f1"}
    written = json.loads(weights.with_suffix(".json").read_text())
    assert written["sha256"] == manifest["sha256"]
    load_detector(weights)


def test_shipped_weights_match_their_manifest_and_recipe() -> None:
    manifest = json.loads(DEFAULT_WEIGHTS.with_suffix(".json").read_text())
    assert manifest["sha256"] == sha256_of(DEFAULT_WEIGHTS)
    assert manifest["config"] == read_yaml(PROJECT_ROOT / "configs" / "train" / "person_detector.yaml")
    kept, classic = manifest["metrics"]["kept"], manifest["metrics"]["classic_detector"]
    assert kept["f1"] > classic["f1"]  # what it was shipped for, on a held-out site
    loaded = load_detector(DEFAULT_WEIGHTS)
    assert loaded.version.startswith("person_centrenet@")
    assert loaded.score_threshold == kept["score_threshold"]


def _rendered_people(tmp_path: Path) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Frames of the CI scene and the visible boxes of the people at least half visible in each."""
    from synth.groundtruth import load_groundtruth
    from synth.video import read_video
    from training.person_detector import rendered_seed

    scene = rendered_seed(PROJECT_ROOT / "configs" / "synth" / "ci_scene.yaml", None, tmp_path)
    truth = load_groundtruth(scene / "groundtruth.json")
    records = truth["frames"]["cam0"]
    frames = read_video(scene / "cam0.mp4")
    boxes = [np.array([p["box"] for p in r if p["visible_fraction"] >= 0.5], np.float32).reshape(-1, 4)
             for r in records]
    return frames, boxes


def test_shipped_detector_finds_the_rendered_walkers(tmp_path: Path) -> None:
    frames, truth = _rendered_people(tmp_path)
    detector = CentreNetDetector()
    hits = people = false_alarms = 0
    for index, frame in enumerate(frames):
        found = detector.detect("cam0", frame)
        if index < detector.warmup_frames:  # frames 0-19 only learn the background
            assert len(found) == 0
            continue
        assert found.mask.shape == (len(found), *frame.shape[:2])
        tall = truth[index][truth[index][:, 3] - truth[index][:, 1] >= 30]
        iou = box_iou(tall, found.xyxy) if len(tall) and len(found) else np.zeros((len(tall), len(found)))
        hits += int((iou.max(axis=1, initial=0.0) >= 0.5).sum())
        people += len(tall)
        false_alarms += int((box_iou(truth[index], found.xyxy).max(axis=0, initial=0.0) < 0.3).sum()
                            if len(truth[index]) else len(found))
    assert people > 100
    assert hits / people > 0.8
    assert false_alarms < 0.1 * hits


def test_shipped_detector_finds_real_walkers() -> None:
    from synth.video import iter_video

    clip = require(VIDEOS / "campus_road_480x360.mp4")
    detector = CentreNetDetector()
    found = None
    for index, frame in enumerate(iter_video(clip)):
        found = detector.detect("campus", frame)
        if index == 200:
            break
    from tests.test_segment_pose_crop import BOXES

    tall = BOXES[BOXES[:, 3] - BOXES[:, 1] >= 40]
    iou = box_iou(tall, found.xyxy)
    assert (iou.max(axis=1) >= 0.5).sum() >= len(tall) - 1
