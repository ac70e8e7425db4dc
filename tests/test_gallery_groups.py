"""Tracks whose boxes hold several people: judged by the camera's person size (the assembler), identified
but never enrolled (the gallery)."""

from __future__ import annotations

import numpy as np
import pytest

import supervision as sv

from pipeline.messages import Frame, FrameResult, SilhouetteSequence, TrackWindow
from stages.detect.person_size import SizeLine, several_people
from stages.gallery.stage import GalleryMatcher
from stages.tracklets import TrackletAssembler
from tests.test_gallery import app_sample, appearances, identities, sample, scores_file  # noqa: F401 - fixture

FRAME = (360, 480)  # height, width


def person_height(foot: np.ndarray) -> np.ndarray:
    """A camera looking down on a ground plane: people grow towards the bottom of the frame."""
    return 0.5 * foot - 20.0


def boxes_at(feet: np.ndarray, xs: np.ndarray, people_side_by_side: int = 1) -> np.ndarray:
    h = person_height(feet)
    w = 0.4 * h * people_side_by_side
    return np.stack([xs - w / 2, feet - h, xs + w / 2, feet], axis=1).astype(np.float32)


def track_window(track: int, boxes: np.ndarray, start: int = 0, final: bool = True, source: str = "cam1",
                 gait: np.ndarray | None = None, appearance: np.ndarray | None = None,
                 group_share: float | None = None) -> TrackWindow:
    t = len(boxes)
    seq = SilhouetteSequence(silhouettes=np.zeros((t, 64, 44), np.uint8), ratios=np.ones(t, np.float32),
                             boxes=boxes, frame_indices=start + np.arange(t, dtype=np.int64),
                             pts_s=(start + np.arange(t)) / 25.0, frame_size=FRAME)
    w = TrackWindow(source, track, 0, final, seq, gait_embedding=gait, appearance_embedding=appearance,
                    group_share=group_share)
    w.model_versions.update({"gait": "gar@1", "reid": "reid@1"})
    return w


def walkers(n: int, frames: int = 30, seed: int = 0) -> list[np.ndarray]:
    """Boxes of ``n`` single people walking down the frame, each from its own foot row."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        foot0 = rng.uniform(140, 300)
        feet = foot0 + np.linspace(0, 40, frames)
        out.append(boxes_at(feet, np.full(frames, rng.uniform(80, 400))))
    return out


def frame_result(index: int, boxes: np.ndarray, track_ids: list[int], source: str = "cam1") -> FrameResult:
    """Tracked boxes of one frame, each with a solid mask inside its box."""
    masks = np.zeros((len(boxes), *FRAME), bool)
    for mask, (x1, y1, x2, y2) in zip(masks, np.round(boxes).astype(int)):
        mask[max(y1, 0):y2, max(x1, 0):x2] = True
    detections = sv.Detections(xyxy=np.asarray(boxes, np.float32).reshape(-1, 4), mask=masks,
                               tracker_id=np.asarray(track_ids, int))
    image = np.zeros((*FRAME, 3), np.uint8)
    return FrameResult(Frame(source, index, index / 25.0, image), detections)


def assemble(assembler: TrackletAssembler, tracks: dict[int, np.ndarray], start: int = 0,
             ended: bool = True) -> list[TrackWindow]:
    """Frames in which every track of ``tracks`` (id -> (T, 4) boxes, all of length T) is seen."""
    frames = len(next(iter(tracks.values())))
    out = []
    for t in range(frames):
        result = frame_result(start + t, np.stack([b[t] for b in tracks.values()]), list(tracks))
        if ended and t == frames - 1:
            result.ended_track_ids = tuple(tracks)
        out += assembler.process([result])
    return out


def test_windows_say_which_share_of_their_track_holds_several_people() -> None:
    assembler = TrackletAssembler(window_every=10, max_length=20, min_length=5)
    pair = boxes_at(np.linspace(200, 260, 30), np.full(30, 240.0), people_side_by_side=2)
    early = assemble(assembler, {99: pair})
    assert early and all(w.group_share is None for w in early)  # the camera's person size is not known yet
    for n, boxes in enumerate(walkers(10)):
        assemble(assembler, {n: boxes}, start=100 + 40 * n)
    windows = assemble(assembler, {20: walkers(1, seed=7)[0], 21: pair}, start=600)
    final = {w.track_id: w for w in windows if w.is_final}
    assert final[20].group_share == 0.0 and final[21].group_share == 1.0
    # the share covers the whole track, not only the frames its last window keeps
    half = np.concatenate([boxes_at(np.linspace(200, 230, 15), np.full(15, 240.0), 2),
                           boxes_at(np.linspace(230, 260, 45), np.full(45, 240.0), 1)])
    windows = assemble(assembler, {30: half}, start=700)
    assert [w.group_share for w in windows if w.is_final] == [pytest.approx(0.25)]
    assert max(windows[-1].sequence.frame_indices) - min(windows[-1].sequence.frame_indices) < 60
    # a track still open when its source ends is judged too
    assemble(assembler, {40: pair}, start=800, ended=False)
    assert [w.group_share for w in assembler.end_source("cam1")] == [1.0]


def test_boxes_cut_by_the_frame_edge_are_not_judged() -> None:
    assembler = TrackletAssembler(window_every=10, max_length=20, min_length=5)
    for n, boxes in enumerate(walkers(10)):
        assemble(assembler, {n: boxes}, start=40 * n)
    edge = boxes_at(np.full(30, 250.0), np.full(30, 20.0), people_side_by_side=2)
    edge[:, 0] = 0.0
    windows = assemble(assembler, {70: edge}, start=500)
    assert windows and all(w.group_share is None for w in windows)


def test_several_people_is_the_classic_detectors_group_test() -> None:
    line = SizeLine(slope=0.5, intercept=-20.0, width_ratio=0.4)
    boxes = np.concatenate([boxes_at(np.array([200.0]), np.array([240.0]), 1),
                            boxes_at(np.array([200.0]), np.array([240.0]), 2),
                            boxes_at(np.array([200.0]), np.array([5.0]), 2)])
    assert several_people(boxes, line, FRAME).tolist() == [0, 1, -1]
    # far up the frame, where the line gives no positive height, a box is not judged (not "several")
    assert several_people(np.array([[200.0, 20.0, 210.0, 35.0]]), line, FRAME).tolist() == [-1]


def _matcher(tmp_path, scores, **options) -> GalleryMatcher:
    return GalleryMatcher(gallery=str(tmp_path / "g"), scores=scores, reranker="none", source_centring=False,
                          auto_enrol=True, threshold=2.0, **options)


def _run_site(matcher: GalleryMatcher) -> tuple[list[TrackWindow], TrackWindow]:
    """Ten people walk alone (each a new identity), then two never seen before walk side by side."""
    gait, app = identities(12), appearances(12)
    rng = np.random.default_rng(4)
    alone = []
    for person, boxes in enumerate(walkers(10)):
        alone += matcher.process([track_window(person, boxes, gait=sample(gait[person], rng),
                                               appearance=app_sample(app[person], rng, 0.05),
                                               group_share=None if person < 2 else 0.1)])
    pair_boxes = boxes_at(np.linspace(200, 260, 30), np.full(30, 240.0), people_side_by_side=2)
    both = app_sample(app[10] + app[11], rng, 0.05)
    # its first window was judged before its camera's person size was known, the last one after
    pair_track = [track_window(20, pair_boxes[:15], final=False, gait=sample(gait[10], rng), appearance=both),
                  track_window(20, pair_boxes, gait=sample(gait[10], rng), appearance=both, group_share=0.9)]
    pair = matcher.process(pair_track)[-1]
    return alone, pair


def test_a_track_of_a_pair_is_identified_but_starts_no_identity(tmp_path, scores_file) -> None:  # noqa: F811
    matcher = _matcher(tmp_path, scores_file)
    alone, pair = _run_site(matcher)
    assert all(w.identity.enrolled and not w.identity.group for w in alone)
    assert pair.identity.group and not pair.identity.enrolled and pair.identity.identity is None
    assert len(matcher.gallery.identities()) == 10
    matcher.close()


def test_without_the_check_a_pair_becomes_an_identity(tmp_path, scores_file) -> None:  # noqa: F811
    matcher = _matcher(tmp_path, scores_file, group_share=None)
    _, pair = _run_site(matcher)
    assert not pair.identity.group and pair.identity.enrolled
    assert len(matcher.gallery.identities()) == 11
    matcher.close()


def test_records_carry_the_group_share_and_read_back() -> None:
    import json

    import jsonschema

    from evaluation.identity.records import window_from_record
    from pipeline.export import SCHEMA_PATH, ExportOptions, window_record

    schema = json.loads(SCHEMA_PATH.read_text())
    for share in (0.25, None):
        record = json.loads(json.dumps(window_record(track_window(5, walkers(1)[0], group_share=share), ExportOptions())))
        jsonschema.validate(record, schema)
        assert record["group_share"] == share
        record["embeddings"] = {"gait": None, "appearance": None}
        assert window_from_record(record).group_share == share
