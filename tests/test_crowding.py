"""Crowded tracked boxes: covered by another box, or suddenly much larger than the track's own."""

from __future__ import annotations

import numpy as np

from stages.crowding import CrowdedBoxes, covered_share


def test_covered_share_is_the_largest_share_one_other_box_covers() -> None:
    boxes = np.array([[0, 0, 10, 10], [5, 0, 15, 10], [100, 100, 110, 120]], float)
    assert np.allclose(covered_share(boxes), [0.5, 0.5, 0.0])
    assert covered_share(boxes[:1]).tolist() == [0.0]


def test_a_box_that_takes_in_a_second_person_is_crowded_until_it_shrinks_back() -> None:
    crowding = CrowdedBoxes()
    flags = [bool(crowding.update("cam", np.array([3]), np.array([[0, 0, w, 60]], float))[0])
             for w in [20] * 10 + [40] * 10 + [20] * 5]
    assert flags == [False] * 10 + [True] * 10 + [False] * 5


def test_a_person_growing_towards_the_camera_is_not_crowded() -> None:
    crowding = CrowdedBoxes()
    flags = []
    for index in range(60):
        height = 30 * 1.02**index  # 2 % taller every frame (fast and close): 3.3 times the first box
        flags.append(bool(crowding.update("cam", np.array([3]), np.array([[0, 0, height / 3, height]]))[0]))
    assert not any(flags)


def test_tracks_and_sources_are_independent_and_forgotten_when_they_end() -> None:
    crowding = CrowdedBoxes(overlap=1.0)
    crowding.update("a", np.array([1]), np.array([[0, 0, 10, 10]], float))
    assert crowding.update("b", np.array([1]), np.array([[0, 0, 30, 30]], float)).tolist() == [False]
    assert crowding.update("a", np.array([1]), np.array([[0, 0, 30, 30]], float)).tolist() == [True]
    crowding.end("a", (1,))
    assert crowding.update("a", np.array([1]), np.array([[0, 0, 30, 30]], float)).tolist() == [False]
    crowding.end_source("b")
    assert crowding.update("b", np.array([1]), np.array([[0, 0, 90, 90]], float)).tolist() == [False]
