"""Tracks whose boxes hold several people: judged by the camera's person size, identified, never enrolled."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.messages import SilhouetteSequence, TrackWindow
from stages.gallery.groups import GroupBoxes
from stages.gallery.stage import GalleryMatcher
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
                 gait: np.ndarray | None = None, appearance: np.ndarray | None = None) -> TrackWindow:
    t = len(boxes)
    seq = SilhouetteSequence(silhouettes=np.zeros((t, 64, 44), np.uint8), ratios=np.ones(t, np.float32),
                             boxes=boxes, frame_indices=start + np.arange(t, dtype=np.int64),
                             pts_s=(start + np.arange(t)) / 25.0, frame_size=FRAME)
    w = TrackWindow(source, track, 0, final, seq, gait_embedding=gait, appearance_embedding=appearance)
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


def test_a_camera_learns_its_person_size_and_then_tells_a_pair_from_one_person() -> None:
    groups = GroupBoxes()
    pair = track_window(99, boxes_at(np.linspace(200, 260, 30), np.full(30, 240.0), people_side_by_side=2))
    groups.observe(pair)
    assert groups.share("cam1", 99) is None  # the camera's person size is not known yet
    for track, boxes in enumerate(walkers(10)):
        groups.observe(track_window(track, boxes))
    assert groups.share("cam1", 99) == 1.0
    assert groups.share("cam1", 3) == 0.0
    # a pair for only half of a track's frames (then one of them walks on alone)
    half = np.concatenate([boxes_at(np.linspace(200, 230, 15), np.full(15, 240.0), 2),
                           boxes_at(np.linspace(230, 260, 15), np.full(15, 240.0), 1)])
    groups.observe(track_window(50, half))
    assert groups.share("cam1", 50) == pytest.approx(0.5)
    # overlapping windows count each frame once
    groups.observe(track_window(50, half[10:], start=10))
    assert groups.share("cam1", 50) == pytest.approx(0.5)
    groups.forget("cam1", 99)
    assert groups.share("cam1", 99) is None
    assert groups.share("cam2", 3) is None  # each camera learns its own people


def test_boxes_cut_by_the_frame_edge_are_not_judged() -> None:
    groups = GroupBoxes()
    for track, boxes in enumerate(walkers(10)):
        groups.observe(track_window(track, boxes))
    edge = boxes_at(np.full(10, 250.0), np.full(10, 20.0), people_side_by_side=2)
    edge[:, 0] = 0.0
    groups.observe(track_window(70, edge))
    assert groups.share("cam1", 70) is None


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
                                               appearance=app_sample(app[person], rng, 0.05))])
    pair_boxes = boxes_at(np.linspace(200, 260, 30), np.full(30, 240.0), people_side_by_side=2)
    both = app_sample(app[10] + app[11], rng, 0.05)
    pair = matcher.process([track_window(20, pair_boxes, gait=sample(gait[10], rng), appearance=both)])[0]
    return alone, pair


def test_a_track_of_a_pair_is_identified_but_starts_no_identity(tmp_path, scores_file) -> None:  # noqa: F811
    matcher = _matcher(tmp_path, scores_file)
    alone, pair = _run_site(matcher)
    assert all(w.identity.enrolled and not w.identity.group for w in alone[1:])
    assert pair.identity.group and not pair.identity.enrolled and pair.identity.identity is None
    assert len(matcher.gallery.identities()) == 10
    matcher.close()


def test_without_the_check_a_pair_becomes_an_identity(tmp_path, scores_file) -> None:  # noqa: F811
    matcher = _matcher(tmp_path, scores_file, group_share=None)
    _, pair = _run_site(matcher)
    assert not pair.identity.group and pair.identity.enrolled
    assert len(matcher.gallery.identities()) == 11
    matcher.close()
