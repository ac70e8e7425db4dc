"""The identity diagnosis on hand-made tracks, probes and truth with known answers."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.identity.benchmark import open_set_folds
from evaluation.identity.diagnose import (
    ProbeOutcome,
    ViewedWindow,
    dir_at_far,
    fold_outcomes,
    identity_composition,
    open_set_report,
    others_share,
    people_in_boxes,
    roc_auc,
    view_group_of,
    view_separation,
    window_views,
)
from evaluation.identity.metrics import open_set
from evaluation.identity.protocol import Probe, probe_rankings
from evaluation.identity.truth import TrackTruth
from pipeline.messages import IdentityMatch, SilhouetteSequence, TrackWindow


def window(source: str, track: int, frames: list[int], boxes: list[list[float]], identity: str | None = None,
           final: bool = True) -> TrackWindow:
    seq = SilhouetteSequence(np.zeros((len(frames), 64, 44), np.uint8), np.ones(len(frames), np.float32),
                             np.array(boxes, np.float32), np.array(frames), np.zeros(len(frames)), (100, 100))
    match = None if identity is None else IdentityMatch(identity, "fused", 1.0, 0.5)
    return TrackWindow(source, track, 0, final, seq, identity=match)


def person(identity: int, visit: int, box: list[float], view: float = 0.0) -> dict:
    return {"identity": identity, "visit": visit, "box": box, "view_deg": view}


def truth_track(camera: str, tid: int, identity: int | None, clothes=(0, False), purity: float = 1.0) -> TrackTruth:
    return TrackTruth(camera, tid, camera, identity, identity, None if identity is None else clothes, 10,
                      int(round(10 * purity)) if identity is not None else 0)


def test_people_in_boxes_counts_the_frames_a_box_shows_each_person():
    # Person 0 in every frame; person 1 walks beside them for the last two of four frames.
    frames = [[person(0, 0, [0, 0, 10, 20])], [person(0, 0, [0, 0, 10, 20])],
              [person(0, 0, [0, 0, 10, 20]), person(1, 1, [4, 0, 14, 18])],
              [person(0, 0, [0, 0, 10, 20]), person(1, 1, [4, 0, 14, 18])]]
    truth = {"frames": {"cam": frames}}
    w = window("/site/cam.mp4", 3, [0, 1, 2, 3], [[0, 0, 10, 20], [0, 0, 10, 20], [0, 0, 14, 20], [0, 0, 14, 20]])
    shown = people_in_boxes([w], truth)
    assert shown[("/site/cam.mp4", 3)] == {0: 1.0, 1: 0.5}
    assert others_share(shown[("/site/cam.mp4", 3)], 0) == 0.5
    assert others_share(shown[("/site/cam.mp4", 3)], 1) == 1.0
    assert others_share({}, 0) == 0.0
    # A stricter overlap no longer sees the second person (IoU 180/280 with the box around both).
    assert people_in_boxes([w], truth, min_iou=0.7)[("/site/cam.mp4", 3)] == {0: 1.0}


def test_fold_outcomes_give_the_benchmarks_open_set_scores():
    tracks = {("g", 0): truth_track("g", 0, 0), ("g", 1): truth_track("g", 1, 1),
              ("p", 0): truth_track("p", 0, 0), ("p", 1): truth_track("p", 1, 1), ("p", 5): truth_track("p", 5, 5)}
    # rank keys are negated scores: smaller is nearer
    probes = [Probe(tracks[("p", 0)], [(("g", 0), -3.0), (("g", 1), -1.0)]),
              Probe(tracks[("p", 1)], [(("g", 0), -2.5), (("g", 1), -2.0)]),
              Probe(tracks[("p", 5)], [(("g", 1), -1.5), (("g", 0), -0.5)])]
    outcomes = fold_outcomes("site", probes, tracks, enrolled={0, 1})
    assert sorted((o.person, o.known) for o in outcomes) == [(0, False), (0, True), (1, False), (1, True), (5, False)]
    natural, _ = probe_rankings(probes, tracks, [("g", 0), ("g", 1)])
    known, unknown = open_set_folds(natural, {0, 1})
    for far in (0.01, 0.34, 0.5):
        expected = open_set(known, unknown, far)
        threshold, rate = dir_at_far(outcomes, far)
        assert rate == pytest.approx(expected.dir)
        assert -threshold == pytest.approx(expected.threshold)


def test_open_set_report_names_the_two_person_probes_that_set_the_threshold():
    shown = {("cam", 1): {1: 1.0, 2: 0.8}, ("cam", 2): {2: 1.0, 1: 0.8}, ("cam", 3): {3: 1.0}, ("cam", 4): {4: 1.0}}
    outcomes = [
        # a never-enrolled two-person track scores high against the other person it shows
        ProbeOutcome("s", ("cam", 1), 1, False, 5.0, ("gal", 2), 2),
        ProbeOutcome("s", ("cam", 3), 3, False, 1.0, ("gal", 4), 4),
        ProbeOutcome("s", ("cam", 4), 4, True, 3.0, ("gal", 4), 4),
        ProbeOutcome("s", ("cam", 2), 2, True, 6.0, ("gal", 2), 2),
    ]
    report = open_set_report(outcomes, shown, far=0.01)
    assert report["threshold"] == 5.0 and report["dir"] == 0.5  # only the 6.0 clears the two-person impostor
    assert report["threshold_setters"] == 1 and report["threshold_setters_two_person"] == 1
    assert report["two_person_probes"] == 2 and report["by_site"] == {"s": {"threshold": 5.0, "dir": 0.5}}
    assert report["without_two_person"] == {"known": 1, "unknown": 1, "threshold": 1.0, "dir": 1.0}
    assert report["top_unknown"][0]["others"] == 0.8 and report["top_unknown"][0]["gallery"]["person"] == 2


def test_identity_composition_sorts_identities_by_what_their_tracks_follow():
    tracks = {("c", 1): truth_track("c", 1, 0), ("c", 2): truth_track("c", 2, 0), ("c", 3): truth_track("c", 3, 1),
              ("c", 4): truth_track("c", 4, None), ("c", 5): truth_track("c", 5, 1), ("c", 6): truth_track("c", 6, 2)}
    decided = [window("c", 1, [0], [[0, 0, 1, 1]], "a"), window("c", 2, [0], [[0, 0, 1, 1]], "a"),
               window("c", 3, [0], [[0, 0, 1, 1]], "a"), window("c", 4, [0], [[0, 0, 1, 1]], "junk"),
               window("c", 5, [0], [[0, 0, 1, 1]], "b"), window("c", 6, [0], [[0, 0, 1, 1]], None)]
    result = identity_composition(decided, tracks)
    assert result["identities"] == 3 and result["people"] == 3
    assert (result["one person"], result["several people"], result["nobody"]) == (1, 1, 1)
    assert result["people_over_several_identities"] == 1  # person 1 is in "a" and "b"
    assert {r["identity"]: r["kind"] for r in result["by_identity"]} == {"a": "several people", "b": "one person",
                                                                          "junk": "nobody"}


def test_view_groups_fold_front_and_back_and_both_sides():
    assert [view_group_of(v) for v in (0, 10, 175, 185, 350)] == [0, 0, 0, 0, 0]
    assert [view_group_of(v) for v in (45, 135, 225, 315)] == [1, 1, 1, 1]
    assert [view_group_of(v) for v in (90, 270, 80, 100)] == [2, 2, 2, 2]


def test_window_view_is_the_view_of_most_of_its_persons_frames():
    frames = [[person(0, 7, [0, 0, 1, 1], 90.0), person(1, 8, [5, 5, 6, 6], 0.0)],
              [person(0, 7, [0, 0, 1, 1], 85.0)], [person(0, 7, [0, 0, 1, 1], 0.0)]]
    tracks = {("/s/cam.mp4", 1): TrackTruth("/s/cam.mp4", 1, "cam", 0, 7, (0, False), 3, 3)}
    w = window("/s/cam.mp4", 1, [0, 1, 2], [[0, 0, 1, 1]] * 3)
    stranger = window("/s/cam.mp4", 9, [0], [[0, 0, 1, 1]])
    assert window_views([w, stranger], tracks, {"frames": {"cam": frames}}) == [2, None]


def test_roc_auc_known_values():
    assert roc_auc([0.1, 0.2], [0.5, 0.6]) == 1.0
    assert roc_auc([0.5, 0.6], [0.1, 0.2]) == 0.0
    assert roc_auc([0.3], [0.3]) == 0.5  # a tie counts half
    assert roc_auc([0.1, 0.4], [0.2, 0.3]) == 0.5
    assert roc_auc([], [0.1]) is None


def test_view_separation_splits_pairs_by_view_relation():
    rng = np.random.default_rng(0)
    look = {p: rng.normal(size=8).astype(np.float32) for p in range(3)}
    walk = {(p, v): rng.normal(size=(2, 4)).astype(np.float32) for p in range(3) for v in (0, 2)}
    windows = []
    for p in range(3):
        for v in (0, 2):
            for k in range(2):
                # gait: one person's walks agree within a view group only; appearance always agrees
                gait = walk[(p, v)] + 0.01 * rng.normal(size=(2, 4)).astype(np.float32)
                windows.append(ViewedWindow((f"cam{v}", 10 * p + k), p, (0, False), v, gait, look[p]))
    result = view_separation([windows])
    same, far = result["same group"], result["front/back vs side"]
    assert same["gait"]["auc"] == 1.0 and same["appearance"]["auc"] == 1.0
    assert far["appearance"]["auc"] == 1.0 and far["gait"]["auc"] < 0.9
    assert result["neighbouring groups"]["gait"]["genuine"] == 0  # no oblique windows
    assert same["gait"]["changed_clothes"] == 0 and same["gait"]["auc_changed_clothes"] is None


def test_an_unknown_variant_or_site_is_one_line_and_exit_code_1(tmp_path, capsys):
    from evaluation.identity.diagnose import main

    assert main(["--out", str(tmp_path), "--variant", "no_such_variant"]) == 1
    assert main(["--out", str(tmp_path), "--sites", "atlantis"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and "no_such_variant" in err[0] and "atlantis" in err[1]
    assert not (tmp_path / "diagnosis.json").exists()
