"""The identity benchmark's scoring on hand-made records with known answers, and a tiny site run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evaluation.identity import front_cache
from evaluation.identity.benchmark import BenchConfig, markdown_table, open_set_folds, run_benchmark
from evaluation.identity.metrics import ProbeRanking, average_precision, closed_set, open_set, pairwise_links
from evaluation.identity.protocol import Probe, probe_rankings, track_decision
from evaluation.identity.runs import follow_merges, named_late, split_overrides
from evaluation.identity.truth import TrackTruth, box_iou, match_track, tracking_quality
from pipeline.messages import IdentityMatch, SilhouetteSequence, TrackWindow


def probe(identity, gallery, distances=None, changed=False, relevant=None):
    distances = distances if distances is not None else list(np.linspace(0.1, 0.9, len(gallery)))
    relevant = relevant if relevant is not None else sum(g == identity for g in gallery)
    return ProbeRanking(identity, changed, tuple(gallery), tuple(distances), relevant)


def test_average_precision_known_values():
    assert average_precision([True], 1) == 1.0
    assert average_precision([False, True, False, True], 2) == pytest.approx((1 / 2 + 2 / 4) / 2)
    # A relevant item that is not in the ranking at all counts with precision 0.
    assert average_precision([False, True], 2) == pytest.approx(0.25)
    assert average_precision([], 1) == 0.0
    assert average_precision([True], 0) == 0.0


def test_closed_set_rank1_map_and_coverage():
    probes = [probe(1, [1, 2, 3]), probe(2, [1, 2, 2]), probe(3, [])]
    scores = closed_set(probes)
    assert scores.probes == 3
    assert scores.rank1 == pytest.approx(1 / 3)
    assert scores.map == pytest.approx((1.0 + (1 / 2 + 2 / 3) / 2 + 0.0) / 3)
    assert scores.coverage == pytest.approx(2 / 3)
    assert scores.rank1_covered == pytest.approx(1 / 2)
    # probe 4's person has no ranked item (its gallery tracks had no embedding): covered, not reachable
    scores = closed_set([*probes, probe(4, [1, 2], relevant=1)])
    assert scores.coverage == pytest.approx(3 / 4) and scores.rank1_covered == pytest.approx(1 / 3)
    assert scores.reachable == pytest.approx(2 / 4) and scores.rank1_reachable == pytest.approx(1 / 2)
    assert closed_set([]).rank1 is None


def test_without_removes_identities_and_their_relevance():
    p = probe(1, [2, 1, 3], [0.1, 0.2, 0.3])
    known = p.without({2})
    assert known.gallery_identities == (1, 3) and known.distances == (0.2, 0.3) and known.relevant == 1
    unknown = p.without({1})
    assert unknown.gallery_identities == (2, 3) and unknown.relevant == 0


def test_open_set_threshold_under_the_nearest_impostor():
    # 10 never-enrolled probes: 1% of 10 allows no false accept, so the threshold is the nearest impostor (0.5).
    unknown = [probe(9, [1], [0.5 + 0.1 * i]) for i in range(10)]
    known = [probe(1, [1], [0.2]), probe(2, [2], [0.6]), probe(3, [4], [0.1]), probe(4, [])]
    scores = open_set(known, unknown, far=0.01)
    assert scores.threshold == pytest.approx(0.5)
    assert scores.far_measured == 0.0
    # accepted and right: only the first (0.6 is over the threshold, the third is accepted but wrong)
    assert scores.dir == pytest.approx(1 / 4)
    # At 10% one impostor may pass: threshold is the second nearest (0.6), still exclusive.
    loose = open_set(known, unknown, far=0.1)
    assert loose.threshold == pytest.approx(0.6) and loose.far_measured == pytest.approx(0.1)
    assert loose.dir == pytest.approx(1 / 4)
    assert open_set(known, [], far=0.01).dir is None


def test_open_set_folds_hold_out_half_the_enrolled_people():
    rankings = [probe(0, [0, 1], [0.1, 0.5]), probe(1, [1, 0], [0.2, 0.4]), probe(5, [0, 1], [0.3, 0.6])]
    known, unknown = open_set_folds(rankings, enrolled={0, 1})
    # fold 0 holds out identity 0, fold 1 identity 1; identity 5 was never enrolled (counted once)
    assert sorted(p.identity for p in known) == [0, 1]
    assert sorted(p.identity for p in unknown) == [0, 1, 5]
    for p in known:
        assert p.gallery_identities == (p.identity,) and p.relevant == 1
    for p in unknown:
        assert p.identity not in p.gallery_identities and p.relevant == 0


def test_pairwise_links_known_answers():
    scores = pairwise_links(["a", "a", "b", "b"], ["x", "x", "y", None])
    assert (scores.pairs_true, scores.pairs_linked, scores.pairs_right) == (2, 1, 1)
    assert scores.precision == 1.0 and scores.recall == 0.5 and scores.f1 == pytest.approx(2 / 3)
    assert scores.identities == 2 and scores.unnamed == 1
    merged = pairwise_links(["a", "a", "b"], ["x", "x", "x"])
    assert merged.precision == pytest.approx(1 / 3) and merged.recall == 1.0
    nothing = pairwise_links(["a", "a"], [None, None])
    assert nothing.precision is None and nothing.recall == 0.0 and nothing.f1 == 0.0
    with pytest.raises(ValueError):
        pairwise_links(["a"], [])


def test_box_iou_and_track_matching_by_votes():
    assert box_iou(np.array([0, 0, 10, 10.0]), np.array([[0, 0, 10, 10], [5, 0, 15, 10], [20, 20, 30, 30]])) == \
        pytest.approx([1.0, 50 / 150, 0.0])
    def person(visit, box):
        return {"visit": visit, "box": box}

    frames = [[person(0, [0, 0, 10, 20]), person(1, [30, 0, 40, 20])] for _ in range(4)]
    boxes = {0: np.array([0, 0, 10, 20.0]), 1: np.array([1, 0, 11, 20.0]), 2: np.array([30, 0, 40, 20.0]),
             3: np.array([0, 0, 10, 19.0])}
    assert match_track(boxes, frames) == (0, 3)
    # Three of four frames vote, but a share of 0.8 is asked: unmatched.
    assert match_track(boxes, frames, min_share=0.8) == (None, 3)
    assert match_track({0: np.array([100, 100, 120, 140.0])}, frames) == (None, 0)


def test_tracking_quality_counts_frames_on_the_person_and_tracks_per_visit():
    tracks = [TrackTruth("cam", 1, "cam", 7, 70, (0, False), 10, 9),   # visit 70 cut in two
              TrackTruth("cam", 2, "cam", 7, 70, (0, False), 10, 6),
              TrackTruth("cam", 3, "cam", 8, 80, (0, False), 20, 20),
              TrackTruth("other", 3, "other", 7, 71, (0, False), 10, 10),
              TrackTruth("cam", 4, "cam", None, None, None, 50, 0)]   # on nobody: not counted
    assert tracking_quality(tracks) == {"purity": 0.9, "tracks_per_visit": 1.333}
    assert tracking_quality(tracks[-1:]) == {"purity": None, "tracks_per_visit": None}


def test_probe_rankings_split_by_clothes():
    def track(camera, tid, identity, clothes):
        return TrackTruth(camera, tid, camera, identity, tid, clothes, 10, 10)

    g_same, g_coat, g_other = track("a", 1, 7, (0, False)), track("a", 2, 7, (0, True)), track("a", 3, 8, (0, False))
    probe_track = track("b", 4, 7, (0, False))
    tracks = {t.key: t for t in (g_same, g_coat, g_other, probe_track)}
    ranked = [(g_other.key, 0.1), (g_same.key, 0.2), (g_coat.key, 0.3)]
    natural, changed = probe_rankings([Probe(probe_track, ranked)], tracks, [g_same.key, g_coat.key, g_other.key])
    assert len(natural) == 1 and not natural[0].changed_clothes
    assert natural[0].gallery_identities == (8, 7, 7) and natural[0].relevant == 2
    # Changed clothes: the same-clothes gallery track of person 7 is removed, the coat one is the target.
    assert len(changed) == 1 and changed[0].changed_clothes
    assert changed[0].gallery_identities == (8, 7) and changed[0].distances == (0.1, 0.3) and changed[0].relevant == 1
    # A person seen by the gallery only in the probe's clothes gives no changed-clothes probe.
    natural, changed = probe_rankings([Probe(probe_track, ranked[:2])], tracks, [g_same.key, g_other.key])
    assert changed == [] and natural[0].relevant == 1


def test_clean_tracks_drop_the_probes_and_gallery_tracks_that_follow_their_person_part_time():
    """A gallery track on its person in 6 of 10 frames shows someone else in the rest: the clean
    scores rank the clean probes against the clean gallery tracks alone."""
    from evaluation.identity.protocol import clean_only

    def track(camera, tid, identity, matched):
        return TrackTruth(camera, tid, camera, identity, tid, (0, False), 10, matched)

    g_clean, g_mixed = track("a", 1, 7, 10), track("a", 2, 8, 6)
    p_clean, p_mixed = track("b", 3, 7, 9), track("b", 4, 8, 5)
    tracks = {t.key: t for t in (g_clean, g_mixed, p_clean, p_mixed)}
    assert g_mixed.purity == pytest.approx(0.6) and p_clean.purity == pytest.approx(0.9)
    assert track("a", 5, None, 0).purity == 0.0
    probes = [Probe(p_clean, [(g_mixed.key, -6.0), (g_clean.key, -2.0)]), Probe(p_mixed, [(g_mixed.key, -1.0)])]
    kept, gallery = clean_only(probes, tracks, [g_clean.key, g_mixed.key], min_purity=0.9)
    assert gallery == [g_clean.key]
    assert [p.track for p in kept] == [p_clean] and kept[0].ranked == [(g_clean.key, -2.0)]
    everything, gallery = clean_only(probes, tracks, [g_clean.key, g_mixed.key], min_purity=0.5)
    assert len(everything) == 2 and len(gallery) == 2 and everything[0].ranked == probes[0].ranked


def test_a_modality_ranks_gallery_tracks_by_calibrated_score_not_raw_distance():
    """CarGait re-scores the shortlist's first few on a scale of its own (about three times the plain
    metric's): sorted by raw distance, the re-scored nearest identities would sink to the bottom."""
    from types import SimpleNamespace

    from evaluation.identity.protocol import _probe_modality
    from pipeline.messages import RankedCandidate

    def track(camera, tid, identity):
        return TrackTruth(camera, tid, camera, identity, tid, (0, False), 10, 10)

    near, far, probe_track = track("a", 1, 7), track("a", 2, 8), track("b", 3, 7)
    ranked = [RankedCandidate("track-0000", 3.4, 1, 11, score=2.0),   # re-scored by CarGait
              RankedCandidate("track-0001", 1.3, 0, 12, score=-1.5)]  # the plain metric's distance
    gallery = SimpleNamespace(count=lambda modality: 2)
    stage = SimpleNamespace(gallery=gallery, match=lambda modality, chunk, version: [
        IdentityMatch(None, "gait", 3.4, 0.9, ranked) for _ in chunk])
    windows = {probe_track.key: [_window(True, None)]}
    windows[probe_track.key][0].gait_embedding = np.zeros((2, 4), np.float32)
    probes = _probe_modality(stage, "gait", windows, [probe_track.key], {probe_track.key: probe_track},
                             {"track-0000": near.key, "track-0001": far.key})
    assert [key for key, _ in probes[0].ranked] == [near.key, far.key]


def _window(final: bool, identity: str | None, index: int = 0) -> TrackWindow:
    seq = SilhouetteSequence(np.zeros((1, 64, 44), np.uint8), np.ones(1, np.float32), np.zeros((1, 4), np.float32),
                             np.array([index]), np.zeros(1), (10, 10))
    match = IdentityMatch(identity, "gait", 1.0, 0.5)
    return TrackWindow("cam", 1, index, final, seq, identity=match)


def test_track_decision_is_the_final_window():
    assert track_decision([_window(False, "a", 0), _window(True, "b", 1)]) == "b"
    assert track_decision([_window(False, "a", 0), _window(False, None, 1)]) is None


def test_a_track_named_on_a_second_look_ends_with_that_name_and_follows_later_merges():
    windows = [_window(False, None, 0), _window(True, None, 1)]
    named = named_late(windows, [{"source": "cam", "track_id": 1, "identity": "person-2", "score": 3.0}])
    assert track_decision(named) == "person-2" and named[0].identity.identity is None
    assert track_decision(follow_merges(named, [{"kept": "person-1", "absorbed": "person-2"}])) == "person-1"
    assert track_decision(named_late(windows, [{"source": "cam", "track_id": 2, "identity": "person-2"}])) is None


def test_split_overrides_keeps_gait_and_gallery_keys_apart():
    front, gait, gallery = split_overrides(["reid.routes=all", "gallery.reranker=none", "gait_detector.every_window=true",
                                            "gait.max_frames=60", "detect.backend=classic"])
    assert front == ["reid.routes=all", "detect.backend=classic"]
    assert gait == ["gait_detector.every_window=true", "gait.max_frames=60"] and gallery == ["gallery.reranker=none"]


def test_bench_config_reports_an_unknown_mask_source(tmp_path):
    (tmp_path / "site.yaml").write_text("cameras: [{name: c, position: [0, -9, 3], target: [0, 0, 0.8]}]\n")
    (tmp_path / "bench.yaml").write_text("sites: [site.yaml]\nvariants: [{name: a, masks: oracle}]\n")
    with pytest.raises(ValueError, match="oracle"):
        BenchConfig.load(tmp_path / "bench.yaml")
    (tmp_path / "bench.yaml").write_text("sites: [site.yaml]\nvariants: [{name: a, masks: truth}]\n")
    assert BenchConfig.load(tmp_path / "bench.yaml").variants[0].masks == "truth"


def test_truth_masks_give_each_box_the_visible_mask_of_the_person_it_overlaps(tmp_path):
    import supervision as sv

    from evaluation.identity.truth_masks import TruthMasks
    from pipeline.messages import Frame, FrameResult
    from synth.groundtruth import encode_mask

    size = (40, 60)
    left = np.zeros((20, 10), bool)
    left[2:18, 3:7] = True
    right = np.zeros((20, 10), bool)
    right[5:20, 1:9] = True
    people = [{"visit": 0, "box": [5, 10, 15, 30], "mask": encode_mask(left, (5, 10, 15, 30))},
              {"visit": 1, "box": [40, 15, 50, 35], "mask": encode_mask(right, (40, 15, 50, 35))}]
    (tmp_path / "groundtruth.json").write_text(
        json.dumps({"format": "gaitscope-synth-groundtruth/1", "frames": {"east": [people]}}))
    segmenter = TruthMasks(tmp_path / "groundtruth.json")
    # Boxes near the right person, near the left one (a little looser), and over nobody.
    boxes = np.array([[40, 14, 50, 35], [4, 9, 16, 31], [25, 0, 35, 10]], np.float32)
    detections = sv.Detections(xyxy=boxes, tracker_id=np.array([1, 2, 3]))
    frame = Frame("/videos/site/east.mp4", 0, 0.0, np.zeros((*size, 3), np.uint8))
    masks = segmenter.process([FrameResult(frame, detections)])[0].detections.mask
    assert masks.shape == (3, *size)
    assert np.array_equal(masks[0][15:35, 40:50], right) and masks[0].sum() == right.sum()
    assert np.array_equal(masks[1][10:30, 5:15], left) and masks[1].sum() == left.sum()
    assert not masks[2].any()
    with pytest.raises(ValueError, match="west"):
        segmenter.process([FrameResult(Frame("/videos/site/west.mp4", 0, 0.0, frame.image), detections)])


def test_bench_config_reports_unknown_scorer(tmp_path):
    (tmp_path / "site.yaml").write_text("cameras: [{name: c, position: [0, -9, 3], target: [0, 0, 0.8]}]\n")
    (tmp_path / "bench.yaml").write_text("sites: [site.yaml]\nvariants: [{name: a, closed_set: [fused3]}]\n")
    with pytest.raises(ValueError, match="fused3"):
        BenchConfig.load(tmp_path / "bench.yaml")


TINY_SITE = """
seed: 5
fps: 25
duration_s: 5.0
frame_size: [240, 320]
site_size: [12, 10]
cameras:
  - {name: south, position: [0.0, -9.0, 3.0], target: [0.0, 0.0, 0.8], hfov_deg: 65, background: paving}
  - {name: north, position: [0.0, 9.0, 3.0], target: [0.0, 0.0, 0.8], hfov_deg: 65, background: asphalt}
identities: 3
visits: 3
crossings: 0
stand_probability: 0.0
noise_sigma: 2.0
"""


def test_tiny_site_end_to_end(tmp_path, monkeypatch):
    """Render two cameras, run the chain, score it: every number is present, bounded and valid JSON."""
    (tmp_path / "tiny.yaml").write_text(TINY_SITE)
    (tmp_path / "bench.yaml").write_text(
        "overrides: [runner.batch_size=4, gait.batch_frames=120]\nsites: [tiny.yaml]\n"
        "enrol_orders: {count: 2, max_offset_s: 2.0}\n"
        "variants: [{name: default, closed_set: [system, gait, appearance]},\n"
        "           {name: every, overrides: [gait_detector.every_window=true], closed_set: [gait]},\n"
        "           {name: truth, masks: truth, closed_set: [gait]}]\n")
    result = run_benchmark(BenchConfig.load(tmp_path / "bench.yaml"), cache=tmp_path / "cache")
    json.dumps(result, allow_nan=False)
    site = result["sites"][0]
    assert site["cameras"] == 2 and site["people"] >= 2
    assert site["front_end"][0]["tracks_matched"] >= 2, "tracks should be mapped to the rendered people"
    assert 0.5 <= site["front_end"][0]["purity"] <= 1 and site["front_end"][0]["tracks_per_visit"] >= 1
    # One front-end run; the second variant re-ran only the gait stages, on every window; the third
    # ran the front end again with the rendered masks in place of the segmenter.
    assert [f.get("gait_stages_only", False) for f in site["front_end"]] == [False, True, False]
    assert "masks=truth" in site["front_end"][2]["overrides"] and site["front_end"][2]["tracks_matched"] >= 2
    assert result["variants"][2]["masks"] == "truth" and result["variants"][2]["closed_set"]["gait"]["all"]["probes"]
    every = result["variants"][1]["closed_set"]["gait"]["all"]
    assert every["coverage"] == 1.0
    variant = result["variants"][0]
    assert set(variant["closed_set"]) == {"system", "gait", "appearance"}
    assert variant["closed_set"]["gait"]["all"]["probes"] == every["probes"]
    for scores in variant["closed_set"].values():
        for split in ("same_clothes", "changed_clothes", "all"):
            for key in ("rank1", "map", "coverage"):
                value = scores[split][key]
                assert value is None or 0.0 <= value <= 1.0
    links = variant["auto_enrol"]
    assert links["pairs_right"] <= min(links["pairs_true"], links["pairs_linked"])
    assert "| default | system |" in markdown_table(result)
    # The clean-track scores rank a subset of the same probes against a subset of the same galleries.
    assert result["track_match"]["clean_purity"] == 0.9 and "clean tracks (>= 0.9)" in markdown_table(result)
    for scores in variant["closed_set"].values():
        clean, whole = scores["clean_tracks"], scores["open_set"]
        assert clean["same_clothes"]["probes"] <= scores["same_clothes"]["probes"]
        assert clean["open_set"]["known"] <= whole["known"] and clean["open_set"]["unknown"] <= whole["unknown"]
    # Auto-enrol replayed in two more orders: the first order is the emitted one, every variant saw the same shifts.
    orders = links["orders"]
    assert orders["count"] == 3 and orders["per_order"][0]["f1"] == links["f1"]
    assert orders["f1"]["min"] <= orders["f1"]["mean"] <= orders["f1"]["max"]
    shifts = [[o["offsets_s"] for o in v["orders"]] for v in site["variants"].values()]
    assert shifts[0][0] == {} and all(s == shifts[0] for s in shifts) and shifts[0][1] != shifts[0][2]
    assert all(abs(o) <= 2.0 for o in shifts[0][1].values())
    assert "link F1, 3 orders" in markdown_table(result)
    # The render is cached: a second load reuses the folder.
    assert (tmp_path / "cache").is_dir() and len(list((tmp_path / "cache").iterdir())) == 1
    # So are the front-end runs: a second benchmark run reads both back (the gait stages of the second
    # variant are re-run on the read windows) and scores exactly as the first.
    assert not any(f.get("cached") for f in site["front_end"])

    def no_front_end(*args):
        raise AssertionError("the front end ran again")

    monkeypatch.setattr(front_cache, "run_front_end_isolated", no_front_end)
    again = run_benchmark(BenchConfig.load(tmp_path / "bench.yaml"), cache=tmp_path / "cache")
    assert [f.get("cached") for f in again["sites"][0]["front_end"]] == [True, None, True]
    assert again["variants"] == result["variants"]
    # The diagnosis reads the same cached front end and agrees with the benchmark's open set and identities.
    from evaluation.identity.diagnose import diagnose

    found = diagnose(BenchConfig.load(tmp_path / "bench.yaml"), "default", cache=tmp_path / "cache")
    json.dumps(found, allow_nan=False)
    assert found["open_set"]["dir"] == pytest.approx(variant["closed_set"]["system"]["open_set"]["dir"])
    assert found["open_set"]["known"] == variant["closed_set"]["system"]["open_set"]["known"]
    assert found["identities"]["tiny"]["identities"] == links["identities"]
    assert set(found["views"]) == {"same group", "neighbouring groups", "front/back vs side"}


def test_records_round_trip_to_windows(tmp_path):
    from evaluation.identity.records import windows_from_records
    from pipeline.export import ExportOptions, window_record
    from pipeline.messages import RankedCandidate

    seq = SilhouetteSequence(np.zeros((3, 64, 44), np.uint8), np.ones(3, np.float32),
                             np.array([[1, 2, 11, 32], [2, 2, 12, 32], [3, 2, 13, 32]], np.float32),
                             np.array([10, 11, 12]), np.array([0.4, 0.44, 0.48]), (240, 320))
    match = IdentityMatch("person-00001", "gait", 0.25, 0.9, [RankedCandidate("person-00001", 0.25, 0, 7)])
    window = TrackWindow("cam.mp4", 4, 2, True, seq, gait_embedding=np.full((2, 3), 0.5, np.float32),
                         appearance_embedding=np.array([0.6, 0.8], np.float32), identity=match,
                         model_versions={"gait": "g1", "reid": "r1"})
    path = tmp_path / "cam.jsonl"
    path.write_text(json.dumps(window_record(window, ExportOptions(save_embeddings=True))) + "\n"
                    + json.dumps({"type": "event", "kind": "ended"}) + "\n")
    (back,) = windows_from_records([path])
    assert (back.source_id, back.track_id, back.window_index, back.is_final) == ("cam.mp4", 4, 2, True)
    np.testing.assert_allclose(back.sequence.boxes, seq.boxes)
    assert back.sequence.frame_indices.tolist() == [10, 11, 12] and back.sequence.silhouettes.shape == (3, 64, 44)
    np.testing.assert_allclose(back.gait_embedding, window.gait_embedding)
    np.testing.assert_allclose(back.appearance_embedding, window.appearance_embedding)
    assert back.identity.identity == "person-00001" and back.identity.candidates[0].entry_id == 7
    assert track_decision([back]) == "person-00001"
    path.write_text(json.dumps(window_record(window, ExportOptions(save_embeddings=False))) + "\n")
    with pytest.raises(ValueError, match="save_embeddings"):
        windows_from_records([path])


def test_cached_site_windows_are_made_again_when_the_front_end_settings_change():
    from pipeline.app import load
    from training.site_windows import FRONT_END_OVERRIDES, front_end_fingerprint

    base = front_end_fingerprint(load(None, FRONT_END_OVERRIDES))
    assert front_end_fingerprint(load(None, FRONT_END_OVERRIDES)) == base
    assert front_end_fingerprint(load(None, [*FRONT_END_OVERRIDES, "track.minimum_matching_iou=0.45"])) != base
    # the embedding stages are told apart by their model versions, not by this fingerprint
    assert front_end_fingerprint(load(None, [*FRONT_END_OVERRIDES, "gait.flip_test=mean"])) == base


def test_cached_site_windows_are_made_again_when_the_model_files_change(tmp_path, monkeypatch):
    """detect: auto builds YOLOX-Nano where its file is in the models directory and the classic
    detector where not, with the same settings: the fingerprint follows the files."""
    from pipeline.app import load
    from training.site_windows import FRONT_END_OVERRIDES, front_end_fingerprint

    monkeypatch.setenv("GAITSCOPE_MODELS", str(tmp_path))
    config = load(None, FRONT_END_OVERRIDES)
    empty = front_end_fingerprint(config)
    (tmp_path / "yolox_nano").mkdir()
    (tmp_path / "yolox_nano" / "yolox_nano.onnx").write_bytes(b"\0" * 16)
    with_yolox = front_end_fingerprint(config)
    assert with_yolox != empty and front_end_fingerprint(config) == with_yolox
    monkeypatch.setenv("GAITSCOPE_MODELS", str(tmp_path / "elsewhere"))
    assert front_end_fingerprint(config) == empty  # the same (empty) set of files, wherever it lies


def test_a_fusion_fit_records_the_detector_and_models_directory_it_ran_with(tmp_path, monkeypatch):
    """A fit's manifest names the detector its fitting sites were embedded with and a command that
    reproduces it: ``detect: auto`` chooses from the models directory's files."""
    from training.fusion import fit_command
    from training.site_windows import detector_in_use

    monkeypatch.setenv("GAITSCOPE_MODELS", str(tmp_path / "my models"))
    assert detector_in_use([]).startswith("centre (no third-party model")
    assert detector_in_use(["detect.backend=classic"]) == "classic"
    (tmp_path / "my models" / "yolox_nano").mkdir(parents=True)
    (tmp_path / "my models" / "yolox_nano" / "yolox_nano.onnx").write_bytes(b"\0" * 16)
    assert detector_in_use([]).startswith("yolox (YOLOX-Nano")
    command = fit_command("configs/train/fusion_yolox.yaml", None)
    assert command == f"GAITSCOPE_MODELS='{tmp_path}/my models' python -m training.fusion --config configs/train/fusion_yolox.yaml"
    monkeypatch.delenv("GAITSCOPE_MODELS")
    assert fit_command("configs/train/fusion.yaml", "/tmp/x.params.json") == \
        "python -m training.fusion --config configs/train/fusion.yaml --out /tmp/x.params.json"


def test_cached_site_windows_are_made_again_when_the_front_end_code_changes(tmp_path):
    from training.site_windows import front_end_code_digest

    (tmp_path / "stages" / "detect").mkdir(parents=True)
    (tmp_path / "stages" / "gallery").mkdir()
    detector, gallery = tmp_path / "stages" / "detect" / "classic.py", tmp_path / "stages" / "gallery" / "stage.py"
    detector.write_text("THRESHOLD = 1\n")
    gallery.write_text("TOP_K = 5\n")
    base = front_end_code_digest(tmp_path)
    assert front_end_code_digest(tmp_path) == base
    gallery.write_text("TOP_K = 6\n")
    assert front_end_code_digest(tmp_path) == base, "the gallery works on finished windows"
    detector.write_text("THRESHOLD = 2\n")
    assert front_end_code_digest(tmp_path) != base


def _site_with_empty_front_end(tmp_path, monkeypatch):
    """A cached site scene whose front end finds nothing; returns its config and the list of the
    override lists each front-end run was given."""
    import training.site_windows as site_windows_module
    from training.site_windows import SiteWindows

    config = tmp_path / "site.yaml"
    config.write_text("{}")
    scene = tmp_path / "cache" / "site" / "scene"
    scene.mkdir(parents=True)
    (scene / "groundtruth.json").write_text("{}")
    runs = []

    def front_end(videos, overrides):
        runs.append(list(overrides))
        return []

    def windows(site, _windows, _truth):
        n = np.zeros(0)
        return SiteWindows(site, n, n, n, n, n, n, n, np.zeros((0, 16, 8)), n, np.zeros((0, 4)), n, n, n, n, n,
                           {"gait": "g@1", "reid": "r@1"})

    monkeypatch.setattr(site_windows_module, "run_front_end", front_end)
    monkeypatch.setattr(site_windows_module, "to_site_windows", windows)
    return config, runs


def test_cached_site_windows_from_another_emission_order_are_made_again(tmp_path, monkeypatch):
    from training.site_windows import WINDOW_ORDER, SiteWindows, site_windows

    config, runs = _site_with_empty_front_end(tmp_path, monkeypatch)
    made = site_windows(config, tmp_path / "cache", {"gait": "g@1"})
    assert made.versions["order"] == WINDOW_ORDER and len(runs) == 1
    site_windows(config, tmp_path / "cache", {"gait": "g@1"})
    assert len(runs) == 1  # cached
    cache = tmp_path / "cache" / "site" / "windows.npz"
    stale = SiteWindows.load(cache)
    del stale.versions["order"]  # made by the racing readers of earlier versions
    stale.save(cache)
    assert site_windows(config, tmp_path / "cache", {"gait": "g@1"}).versions["order"] == WINDOW_ORDER
    assert len(runs) == 2


def test_site_windows_run_with_overrides_are_cached_beside_the_default_ones(tmp_path, monkeypatch):
    from training.site_windows import site_windows

    config, runs = _site_with_empty_front_end(tmp_path, monkeypatch)
    other = ["gait_detector.every_window=true"]
    site_windows(config, tmp_path / "cache", {"gait": "g@1"})
    site_windows(config, tmp_path / "cache", {"gait": "g@1"}, other)
    site_windows(config, tmp_path / "cache", {"gait": "g@1"})
    site_windows(config, tmp_path / "cache", {"gait": "g@1"}, other)
    assert runs == [[], other]  # each setting ran once; neither evicted the other


def test_shifted_camera_clocks_reorder_windows_and_keep_each_cameras_order():
    from evaluation.identity.runs import clock_shifted_order
    from training.site_windows import SiteWindows

    camera = np.array(["a", "b", "a", "b", "a"])
    t_end = np.array([1.0, 1.5, 2.0, 2.5, 1.9])  # a's last window ends before its previous one (a final window)
    n = len(camera)
    site = SiteWindows("s", camera, np.arange(n), np.arange(n), np.zeros(n, bool), t_end - 1, t_end,
                       np.zeros(n, bool), np.zeros((n, 2, 2)), np.zeros(n, bool), np.zeros((n, 3)),
                       np.arange(n), np.zeros(n), np.ones(n), np.full(n, np.nan), np.zeros(n, int), {"gait": "g"})
    assert clock_shifted_order(site.t_end, site.camera, {}).tolist() == [0, 1, 2, 4, 3]
    order = clock_shifted_order(site.t_end, site.camera, {"b": -1.0})  # b's clock 1 s earlier: its windows come first
    assert order.tolist() == [1, 0, 3, 2, 4]
    moved = site.in_order(order)
    assert moved.track_id.tolist() == [1, 0, 3, 2, 4] and moved.gait.shape == site.gait.shape
    for cam in ("a", "b"):
        rows = [r for r in order.tolist() if camera[r] == cam]
        assert rows == sorted(rows)  # each camera's windows in their own order


def test_a_run_with_shifted_clocks_has_the_same_windows_in_the_new_order():
    from evaluation.identity.runs import EnrolOrders, FrontEndRun, with_shifted_clocks

    def window(source: str, track: int, end: float) -> TrackWindow:
        seq = SilhouetteSequence(np.zeros((2, 64, 44), np.uint8), np.ones(2, np.float32), np.zeros((2, 4), np.float32),
                                 np.arange(2), np.array([end - 1.0, end]), (240, 320))
        return TrackWindow(source, track, 0, True, seq)

    run = FrontEndRun([window("a", 1, 1.0), window("b", 2, 1.5), window("a", 3, 2.0)], 1.0, 10, [], 4)
    moved = with_shifted_clocks(run, {"a": 1.0})  # a's clock a second late: b's window first
    assert [w.track_id for w in moved.windows] == [2, 1, 3] and moved.batch_size == 4
    assert [w.track_id for w in with_shifted_clocks(run, {}).windows] == [1, 2, 3]
    drawn = EnrolOrders(3, 2.0, seed=7).shifts(["b", "a", "a"])
    assert drawn == EnrolOrders(3, 2.0, seed=7).shifts(["a", "b"]) and len(drawn) == 3
    assert all(set(d) == {"a", "b"} and all(abs(o) <= 2.0 for o in d.values()) for d in drawn)


def test_link_scores_over_orders_pool_sites_per_order():
    from evaluation.identity.benchmark import order_spread

    right = pairwise_links([1, 1, 2], ["x", "x", "y"])      # F1 1.0
    split = pairwise_links([1, 1, 2], ["x", "z", "y"])      # nothing linked
    spread = order_spread([[(right, 2), (split, 3)], [(right, 1), (right, 1)]])
    assert spread["count"] == 2
    assert spread["per_order"][0]["f1"] == 1.0 and spread["per_order"][0]["identities"] == 3
    assert spread["per_order"][1]["pairs_linked"] == 1 and spread["per_order"][1]["recall"] == 0.5
    assert spread["f1"]["max"] == 1.0 and spread["f1"]["min"] < 1.0
    assert spread["identities"] == {"mean": 3.5, "min": 3, "max": 4}


def test_bench_config_rejects_bad_enrol_orders(tmp_path):
    for text in ("enrol_orders: {count: -1}", "enrol_orders: {counts: 2}"):
        (tmp_path / "bench.yaml").write_text(f"{text}\nvariants: [{{name: default}}]\n")
        with pytest.raises(ValueError, match="enrol_orders"):
            BenchConfig.load(tmp_path / "bench.yaml")
    (tmp_path / "bench.yaml").write_text("enrol_orders: {count: 3}\nvariants: [{name: default}]\n")
    assert BenchConfig.load(tmp_path / "bench.yaml").enrol_orders.count == 3


def test_bench_config_rejects_a_bad_track_match(tmp_path):
    bad = (("track_match: {clean_purity: 0}", "clean_purity"), ("track_match: {min_ious: 0.5}", "min_ious"))
    for text, message in bad:
        (tmp_path / "bench.yaml").write_text(f"{text}\nvariants: [{{name: default}}]\n")
        with pytest.raises(ValueError, match=message):
            BenchConfig.load(tmp_path / "bench.yaml")
    (tmp_path / "bench.yaml").write_text("track_match: {clean_purity: 0.8}\nvariants: [{name: default}]\n")
    assert BenchConfig.load(tmp_path / "bench.yaml").clean_purity == 0.8


@pytest.mark.parametrize("name", ["identity.yaml", "identity_yolox.yaml"])
def test_the_shipped_benchmark_configs_load_with_every_variant(name):
    from pipeline import app
    from tests.helpers import PROJECT_ROOT

    bench = BenchConfig.load(PROJECT_ROOT / "configs" / "bench" / name)
    assert [site for site, _ in bench.sites] == ["plaza", "station"] and bench.variants[0].name == "default"
    for variant in bench.variants:  # a wrong key or backend in any variant is an error here, not an hour in
        app.load(bench.pipeline, [*bench.overrides, *variant.overrides])
