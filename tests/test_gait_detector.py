"""GADER gait detector: DHS, classifier, windows/NMS/merge, routing and the stage, on hand-made arrays."""

from pathlib import Path

import numpy as np
import pytest
import torch

from pipeline.messages import SilhouetteSequence, TrackWindow
from stages.gait_detector.checkpoint import DEFAULT_WEIGHTS, load_checkpoint, save_checkpoint
from stages.gait_detector.detect import (
    Detection,
    DetectorParams,
    Segments,
    detect_segments,
    merge_close,
    nms_1d,
    window_grid,
    window_probabilities,
)
from stages.gait_detector.dhs import DHSConfig, dhs_to_image, extract_dhs
from stages.gait_detector.model import CLASSES, FULL_WALKING, ClassifierConfig, DHSClassifier, class_index
from stages.gait_detector.route import RoutingParams, route
from stages.gait_detector.stage import GaitDetectorStage
from training.gait_detector_data import Cut, LabeledDHS, cut_silhouettes, mask_noise, sample_windows, window_label

torch.set_num_threads(1)


def stick_figure(t: int, walking: bool) -> np.ndarray:
    """(t, 64, 44) uint8 0/255: a torso and two legs whose spread swings with time when walking."""
    frames = np.zeros((t, 64, 44), np.uint8)
    for i in range(t):
        frames[i, 2:34, 18:26] = 255  # head and torso
        spread = round(6 * np.sin(2 * np.pi * i / 12)) if walking else 0
        for leg in (-1, 1):
            centre = 22 + leg * (2 + abs(spread))
            frames[i, 34:64, centre - 2 : centre + 2] = 255
    return frames


def segs(*triples: tuple[int, int, float]) -> Segments:
    a = np.array(triples, dtype=np.float64).reshape(-1, 3)
    return Segments(a[:, 0].astype(np.int64), a[:, 1].astype(np.int64), a[:, 2].astype(np.float32))


# --- DHS -------------------------------------------------------------------------------------------


def test_knee_band_sits_a_quarter_above_the_feet():
    assert DHSConfig(0.25, 1).rows(64) == slice(47, 48)
    assert DHSConfig(0.25, 3).rows(64) == slice(46, 49)
    assert DHSConfig(0.5, 5).rows(64) == slice(30, 35)
    with pytest.raises(ValueError, match="odd"):
        DHSConfig(0.25, 2)
    with pytest.raises(ValueError, match="knee_height"):
        DHSConfig(1.2, 3)


def test_dhs_is_the_knee_band_over_time():
    sil = np.zeros((5, 64, 44), np.uint8)
    sil[:, 47, 10:20] = 255  # only the middle row of the band: a third of the band's mean
    sil[2, 46:49, 30] = 255  # the whole band at one column in frame 2
    dhs = extract_dhs(sil, DHSConfig(0.25, 3))
    assert dhs.shape == (44, 5) and dhs.dtype == np.float32
    np.testing.assert_allclose(dhs[10:20], 1 / 3, rtol=1e-6)
    assert dhs[30, 2] == 1.0 and dhs[30, [0, 1, 3, 4]].sum() == 0
    assert dhs[:10].sum() == 0
    # 0/1 silhouettes give the same signature as 0/255
    np.testing.assert_array_equal(extract_dhs((sil > 0).astype(np.uint8)), dhs)


def test_dhs_of_a_stander_is_constant_and_of_a_walker_periodic():
    standing = extract_dhs(stick_figure(24, walking=False))
    walking = extract_dhs(stick_figure(24, walking=True))
    assert np.all(standing == standing[:, :1])
    assert np.abs(np.diff(walking, axis=1)).sum() > 0
    np.testing.assert_array_equal(walking[:, :12], walking[:, 12:])  # period 12


def test_dhs_picture_marks_segments():
    picture = dhs_to_image(np.ones((44, 10), np.float32), [(2, 5)], scale=1)
    assert picture.shape == (44 + 2 + 6, 10, 3)
    marked = picture[-1].any(axis=-1)
    assert marked.tolist() == [False, False, True, True, True, False, False, False, False, False]


# --- classifier ------------------------------------------------------------------------------------


def test_classify_windows_equals_each_window_alone():
    torch.manual_seed(0)
    model = DHSClassifier().eval()
    rf = model.config.receptive_field
    assert rf == 17
    dhs = torch.rand(1, 1, 44, 60)
    starts, stops = torch.tensor([0, 5, 30, 43]), torch.tensor([20, 45, 60, 60])
    with torch.no_grad():
        batched = model.classify_windows(dhs, starts, stops)
        alone = torch.cat([model(dhs[..., s:e]) for s, e in zip(starts.tolist(), stops.tolist())])
    assert batched.shape == (4, len(CLASSES))
    torch.testing.assert_close(batched, alone, rtol=1e-5, atol=1e-5)


def test_classifier_takes_any_window_length_from_its_receptive_field():
    model = DHSClassifier().eval()
    with torch.no_grad():
        for t in (17, 18, 33, 100):
            assert model(torch.rand(3, 1, 44, t)).shape == (3, 4)
        with pytest.raises(ValueError, match="needs >= 17"):
            model(torch.rand(1, 1, 44, 16))


def test_classifier_config_round_trip_and_class_indices():
    cfg = ClassifierConfig(channels=(4, 8, 8, 16, 16), time_dilations=(1, 1, 1, 2, 2))
    assert ClassifierConfig.from_dict(cfg.to_dict()) == cfg
    assert cfg.receptive_field == 1 + 2 * 7
    with pytest.raises(ValueError, match="five"):
        ClassifierConfig(channels=(4, 8))
    assert [class_index(f, w) for f in (True, False) for w in (True, False)] == [0, 1, 2, 3]
    assert CLASSES[FULL_WALKING] == "full_walking"


# --- windows, NMS, merging -----------------------------------------------------------------------


def test_window_grid_covers_every_frame_and_clamps_to_short_tracks():
    starts, stops = window_grid(100, (20, 45), 0.25)
    assert set(stops - starts) == {20, 45}
    covered = np.zeros(100, bool)
    for s, e in zip(starts, stops):
        covered[s:e] = True
    assert covered.all() and stops.max() == 100 and starts.min() == 0
    assert len(set(zip(starts.tolist(), stops.tolist()))) == len(starts)
    s, e = window_grid(12, (20, 45), 0.25)
    assert s.tolist() == [0] and e.tolist() == [12]


def test_nms_keeps_the_best_of_overlapping_windows():
    kept = nms_1d(segs((0, 20, 0.6), (5, 25, 0.9), (10, 30, 0.7), (40, 60, 0.8)), 0.5)
    # (5,25) beats (0,20) [IoU 15/25 = 0.6] and (10,30) [0.6]; (40,60) does not overlap
    assert list(zip(kept.starts.tolist(), kept.stops.tolist())) == [(5, 25), (40, 60)]
    np.testing.assert_allclose(kept.scores, [0.9, 0.8])
    loose = nms_1d(segs((0, 20, 0.6), (5, 25, 0.9)), 0.7)
    assert len(loose) == 2


def test_merge_joins_close_segments_and_weights_scores_by_length():
    merged = merge_close(segs((0, 10, 1.0), (13, 23, 0.5), (40, 50, 0.9)), max_gap=4)
    assert list(zip(merged.starts.tolist(), merged.stops.tolist())) == [(0, 23), (40, 50)]
    np.testing.assert_allclose(merged.scores, [0.75, 0.9], rtol=1e-6)
    apart = merge_close(segs((0, 10, 1.0), (16, 23, 0.5)), max_gap=4)
    assert len(apart) == 2
    assert merged.frame_mask(60).sum() == 23 + 10


class ByMean(torch.nn.Module):
    """Stand-in classifier for detection tests: 'full walking' where >= 90% of the window is bright."""

    def __init__(self) -> None:
        super().__init__()
        self.config = ClassifierConfig(time_dilations=(1, 1, 1, 1, 1))  # receptive field 11

    def classify_windows(self, dhs, starts, stops):
        means = torch.stack([dhs[0, 0, :, s:e].mean() for s, e in zip(starts.tolist(), stops.tolist())])
        walking = (means - 0.9) * 50
        return torch.stack([walking, -walking, -walking - 5, -walking - 5], dim=1)


def test_detection_finds_the_bright_stretch():
    dhs = np.zeros((44, 120), np.float32)
    dhs[:, 30:90] = 1.0
    found = detect_segments(ByMean(), dhs, DetectorParams(window_lengths=(20, 30), stride_fraction=0.25, merge_gap=4))
    assert isinstance(found, Detection) and len(found.segments) == 1
    start, stop = int(found.segments.starts[0]), int(found.segments.stops[0])
    assert 26 <= start <= 36 and 84 <= stop <= 94  # NMS may drop an end window
    assert found.frame_scores.shape == (120,)
    assert found.frame_scores[60] > 0.99 and found.frame_scores[0] < 0.01


def test_short_tracks_are_padded_to_the_receptive_field():
    probs = window_probabilities(ByMean(), np.ones((44, 5), np.float32), np.array([0]), np.array([5]))
    assert probs.shape == (1, 4) and probs[0, FULL_WALKING] > 0.99
    nothing = detect_segments(ByMean(), np.zeros((44, 0), np.float32), DetectorParams())
    assert len(nothing.segments) == 0


# --- routing ---------------------------------------------------------------------------------------


def detection(num_frames: int, *triples) -> Detection:
    scores = np.zeros(num_frames, np.float32)
    for s, e, p in triples:
        scores[s:e] = p
    return Detection(segs(*triples) if triples else segs(), scores)


def test_long_segments_go_to_gait_and_the_rest_to_appearance():
    out = route(detection(100, (10, 40, 0.9), (60, 70, 0.8)), 100, RoutingParams(min_gait_frames=20))
    assert out.route == "gait"
    assert [(g.start, g.stop) for g in out.segments] == [(10, 40)]
    assert out.walking_fraction == pytest.approx(0.3)
    assert [(a.start, a.stop) for a in out.appearance_segments] == [(0, 10), (40, 100)]
    # the short walking stretch 60-70 lowers the appearance score of the stretch holding it
    assert out.appearance_segments[1].score == pytest.approx(1 - 10 * 0.8 / 60)


def test_no_long_segment_routes_to_appearance_and_empty_to_none():
    out = route(detection(30, (0, 12, 0.9)), 30, RoutingParams(min_gait_frames=20))
    assert out.route == "appearance" and out.segments == [] and out.walking_fraction == 0.0
    assert [(a.start, a.stop) for a in out.appearance_segments] == [(0, 30)]
    assert route(detection(3), 3, RoutingParams(min_appearance_frames=5)).route == "none"


def test_walking_fraction_threshold_sends_sparse_walking_to_appearance():
    out = route(detection(200, (0, 25, 0.9)), 200, RoutingParams(min_gait_frames=20, min_walking_fraction=0.2))
    assert out.route == "appearance" and out.segments == []
    assert [(a.start, a.stop) for a in out.appearance_segments] == [(0, 200)]


# --- training data -----------------------------------------------------------------------------------


def test_window_label_needs_pure_walking():
    labels = np.array([0] * 9 + [1])
    assert window_label(labels, 0.9) == FULL_WALKING
    assert window_label(np.array([0] * 8 + [1, 1]), 0.9) == 1
    assert window_label(np.array([0] * 5 + [3] * 3 + [2] * 2), 0.9) == 3


def test_bottom_cut_moves_the_knee_row_into_the_torso():
    walker = stick_figure(12, walking=True)
    cut = cut_silhouettes(walker, Cut("bottom", 0.4))
    assert cut.shape == walker.shape and cut.dtype == np.uint8
    full, partial = extract_dhs(walker), extract_dhs(cut)
    # the knee band now crosses the rescaled torso: wider in every frame and no longer two legs
    assert (partial > 0).sum(axis=0).min() > (full > 0).sum(axis=0).min()
    side = cut_silhouettes(walker, Cut("left", 0.5))
    assert (extract_dhs(side) > 0).sum() < (full > 0).sum()


def test_sampled_windows_and_noise_keep_shapes_and_labels():
    rng = np.random.default_rng(0)
    labels = np.array([0] * 50 + [1] * 50)
    track = LabeledDHS(mask_noise(np.tile(extract_dhs(stick_figure(100, True)), 1), rng), labels, "hand-made")
    x, y = sample_windows([track], rng, 40, 20, single_class=True)
    assert x.shape == (40, 44, 20) and set(y.tolist()) <= {0, 1}
    assert 0.0 <= x.min() and x.max() <= 1.0


# --- stage -----------------------------------------------------------------------------------------


def window_of(silhouettes: np.ndarray) -> TrackWindow:
    t = len(silhouettes)
    sequence = SilhouetteSequence(
        silhouettes=silhouettes,
        ratios=np.full(t, 2.0, np.float32),
        boxes=np.zeros((t, 4), np.float32),
        frame_indices=np.arange(t),
        pts_s=np.arange(t) / 10.0,
        frame_size=(360, 480),
    )
    return TrackWindow("cam", 1, 0, False, sequence)


def test_stage_fills_gait_and_version_from_a_checkpoint(tmp_path: Path):
    torch.manual_seed(0)
    path = tmp_path / "gader.pt"
    sha = save_checkpoint(path, DHSClassifier().eval(), DHSConfig(0.25, 3))
    _model, dhs_config, version = load_checkpoint(path)
    assert version == f"gader_dhs@{sha[:12]}" and dhs_config == DHSConfig(0.25, 3)
    stage = GaitDetectorStage(weights=str(path), min_gait_frames=10)
    windows = stage.process([window_of(stick_figure(50, True)), window_of(stick_figure(3, False))])
    for w in windows:
        assert w.model_versions["gait_detector"] == version
        assert w.gait is not None and 0.0 <= w.gait.walking_fraction <= 1.0
        covered = sum(s.stop - s.start for s in w.gait.segments + w.gait.appearance_segments)
        assert covered == len(w.sequence)  # every frame has exactly one route


def test_every_window_sends_standing_and_walking_windows_whole_to_gait(tmp_path: Path):
    path = tmp_path / "gader.pt"
    save_checkpoint(path, DHSClassifier().eval(), DHSConfig(0.25, 3))
    stage = GaitDetectorStage(weights=str(path), every_window=True)
    for w in stage.process([window_of(stick_figure(50, True)), window_of(stick_figure(30, False))]):
        assert w.gait.route == "gait" and w.gait.walking_fraction == 1.0 and w.gait.appearance_segments == []
        assert [(s.start, s.stop) for s in w.gait.segments] == [(0, len(w.sequence))]
        assert w.model_versions["gait_detector"].endswith("+every_window")


def test_missing_or_foreign_weights_are_one_line_errors(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match="training.gait_detector"):
        GaitDetectorStage(weights=str(tmp_path / "absent.pt"))
    torch.save({"something": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a gaitscope GADER"):
        GaitDetectorStage(weights=str(tmp_path / "other.pt"))


def test_a_short_training_run_separates_walking_from_standing_stick_figures():
    from training.gait_detector import train

    rng = np.random.default_rng(0)
    walk, stand = extract_dhs(stick_figure(120, True)), extract_dhs(stick_figure(120, False))
    tracks = [
        LabeledDHS(mask_noise(np.concatenate([walk, stand], axis=1), rng, 0.5), np.array([0] * 120 + [1] * 120), "mix")
        for _ in range(4)
    ]
    cfg = {
        "seed": 0,
        "model": {"channels": [4, 8, 8, 8, 8], "hidden": 16},
        "training": {
            "steps": 40, "batch_size": 16, "window_frames": [17, 30], "walking_purity": 0.9,
            "lr": 0.01, "weight_decay": 0.0,
        },
    }
    model = train(cfg, {"hand-made": tracks}, log=lambda _: None)
    with torch.no_grad():
        x, y = sample_windows(tracks, np.random.default_rng(1), 64, 24, single_class=True)
        accuracy = (model(torch.from_numpy(x)[:, None]).argmax(1).numpy() == y).mean()
    assert accuracy > 0.9


def test_synthetic_tracks_carry_the_walkers_ground_truth():
    from training.gait_detector_synth import synthetic_tracks

    tracks = synthetic_tracks(7, 1, 2, 30, seed=0, dhs_config=DHSConfig(), frame_steps=(1,), behaviours=("walk", "stand"))
    assert len(tracks) == 2
    for track in tracks:
        assert track.dhs.shape == (44, len(track.labels)) and 0 < len(track) <= 30
        expected = FULL_WALKING if "/walk@" in track.name else class_index(True, False)
        # the walker may be cut by the frame edge, but a walker never stands and a stander never walks
        walking = np.isin(track.labels, [0, 2])
        assert walking.all() if expected == FULL_WALKING else not walking.any()


def test_review_reads_back_the_silhouette_strips_the_pipeline_writes():
    from pipeline.export import tile
    from stages.gait_detector.review import untile

    frames = stick_figure(23, walking=True)
    frames[5] = 0  # an empty silhouette is still a frame, not padding
    np.testing.assert_array_equal(untile(tile(frames, per_row=20)), frames)


def test_the_shins_detector_routes_walkers_in_every_clothing_condition():
    """weights/gader_shins.pt sends people walking in full view to gait in coats too (the default,
    knee-row weights send most people in coats to appearance: docs/gait_detector.md)."""
    from evaluation.gait_detector import routed_by_condition

    model, dhs_config, _ = load_checkpoint(DEFAULT_WEIGHTS.with_name("gader_shins.pt"))
    result = routed_by_condition(model, dhs_config, DetectorParams(), RoutingParams(), identities=6, frames=60)
    assert set(result) == {"nm", "bg", "cl"}
    for condition, shares in result.items():
        assert 0.0 <= shares["people_with_none"] <= 1.0
        assert shares["routed_to_gait"] >= 0.5, (condition, shares)
