"""Tracks split where the person in the box changes; ids stay unique; the tracker stage reports the ends."""

from __future__ import annotations

import numpy as np
import pytest
import supervision as sv

from pipeline.messages import Frame, FrameResult
from stages.crowding import CrowdedBoxes
from stages.track import ByteTrackStage
from stages.track_split import CROSSING_AFTER, CROSSING_BEFORE, CROSSING_GAP, SPLIT_ID_BASE, AppearanceSplitter

SIZE = (120, 200)
RED, BLUE = (0, 0, 255), (255, 0, 0)


def _colour_embed(crops: np.ndarray) -> np.ndarray:
    """A stand-in appearance model: the unit mean colour of each crop (distinct colours ~ orthogonal)."""
    x = crops.reshape(len(crops), -1, 3).mean(1).astype(np.float32) + 1e-3
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _box_crop(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    x1, y1, x2, y2 = box.astype(int)
    patch = image[y1:y2, x1:x2]
    return np.resize(patch, (128, 64, 3))


def _splitter(**kw) -> AppearanceSplitter:
    return AppearanceSplitter(_colour_embed, _box_crop, **{"distance": 0.5, "frames": 3, "every": 1, **kw})


def _image(colour: tuple[int, int, int], box: tuple[int, int, int, int]) -> np.ndarray:
    image = np.zeros((*SIZE, 3), np.uint8)
    x1, y1, x2, y2 = box
    image[y1:y2, x1:x2] = colour
    return image


BOX = (40, 20, 60, 80)


def _feed(splitter: AppearanceSplitter, colours: list[tuple[int, int, int]], track: int = 7):
    out = []
    for index, colour in enumerate(colours):
        ids, ended = splitter.update("cam", index, _image(colour, BOX), np.array([track]), np.array([BOX], np.float32))
        out.append((int(ids[0]), ended))
    return out


def test_a_track_that_changes_person_goes_on_under_a_new_id_and_the_old_one_ends() -> None:
    out = _feed(_splitter(), [RED] * 10 + [BLUE] * 10)
    ids = [i for i, _ in out]
    assert ids[:12] == [7] * 12  # the first two blue checks are not yet a switch
    assert ids[12:] == [SPLIT_ID_BASE] * 8
    assert out[12][1] == (7,) and all(not e for k, (_, e) in enumerate(out) if k != 12)


def test_a_brief_change_does_not_split() -> None:
    out = _feed(_splitter(), [RED] * 10 + [BLUE] * 2 + [RED] * 8)
    assert {i for i, _ in out} == {7} and not any(e for _, e in out)


def test_split_ids_are_unique_per_source_and_tracks_are_independent() -> None:
    splitter = _splitter()
    boxes = np.array([BOX, (120, 20, 140, 80)], np.float32)
    ids_seen = []
    for index in range(20):
        image = _image(RED if index < 8 else BLUE, BOX)
        image[20:80, 120:140] = BLUE if index < 14 else RED
        ids, _ = splitter.update("cam", index, image, np.array([3, 4]), boxes)
        ids_seen.append(tuple(ids.tolist()))
    assert ids_seen[0] == (3, 4)
    assert ids_seen[-1] == (SPLIT_ID_BASE, SPLIT_ID_BASE + 1)
    assert splitter.end("cam", (3, 4)) == (SPLIT_ID_BASE, SPLIT_ID_BASE + 1)
    assert splitter.output_ids("cam", np.array([3])).tolist() == [3]  # forgotten: a new track of that id


def test_checks_only_every_nth_frame() -> None:
    embedded = []

    def embed(crops: np.ndarray) -> np.ndarray:
        embedded.append(len(crops))
        return _colour_embed(crops)

    splitter = AppearanceSplitter(embed, _box_crop, distance=0.5, frames=3, every=4)
    _feed(splitter, [RED] * 12)
    assert len(embedded) == 3


def _frame(index: int, image: np.ndarray, box: tuple[int, int, int, int]) -> FrameResult:
    detections = sv.Detections(xyxy=np.array([box], np.float32), mask=np.ones((1, *SIZE), bool),
                               confidence=np.array([0.9], np.float32), class_id=np.zeros(1, int))
    return FrameResult(Frame("cam", index, index / 10, image), detections)


def test_tracker_stage_renames_the_rest_of_a_switched_track_and_reports_the_end() -> None:
    stage = ByteTrackStage(minimum_consecutive_frames=1)
    stage._splitter = _splitter(every=1)  # the stand-in model instead of the shipped weights
    ids, ended = {}, []
    for index in range(24):
        box = (40 + index, 20, 60 + index, 80)
        result = stage.track(_frame(index, _image(RED if index < 12 else BLUE, box), box))
        if len(result.detections):  # the track is confirmed from its first frame on
            ids[index] = int(result.detections.tracker_id[0])
        ended += list(result.ended_track_ids)
    first = ids[min(ids)]
    assert first < SPLIT_ID_BASE and {ids[i] for i in ids if i < 14} == {first}  # blue from 12: split on the third
    assert {ids[i] for i in ids if i >= 14} == {SPLIT_ID_BASE} and 23 in ids
    assert ended == [first]
    assert stage.finish("cam") == (SPLIT_ID_BASE,)


def test_split_is_off_unless_asked() -> None:
    stage = ByteTrackStage(minimum_consecutive_frames=1)
    ids = []
    for index in range(24):
        box = (40 + index, 20, 60 + index, 80)
        ids += stage.track(_frame(index, _image(RED if index < 12 else BLUE, box), box)).detections.tracker_id.tolist()
    assert len(set(ids)) == 1


def test_split_with_the_shipped_appearance_model_keeps_one_person_in_one_track() -> None:
    stage = ByteTrackStage(minimum_consecutive_frames=1, split_on_appearance=True, split_every=1)
    rng = np.random.default_rng(0)
    person = rng.integers(0, 255, (60, 20, 3), dtype=np.uint8)
    ids = set()
    for index in range(12):
        box = (40 + index, 20, 60 + index, 80)
        image = np.full((*SIZE, 3), 90, np.uint8)
        image[20:80, 40 + index:60 + index] = person
        ids.update(stage.track(_frame(index, image, box)).detections.tracker_id.tolist())
    assert len(ids) == 1 and next(iter(ids)) < SPLIT_ID_BASE


def test_missing_split_weights_are_one_line_at_construction(tmp_path) -> None:
    with pytest.raises(FileNotFoundError, match="appearance ReID weights not found"):
        ByteTrackStage(split_on_appearance=True, split_weights=str(tmp_path / "absent.pt"))



def _blend(a: tuple[int, int, int], b: tuple[int, int, int], t: float) -> tuple[int, int, int]:
    return tuple(int(round((1 - t) * x + t * y)) for x, y in zip(a, b))


def _mix(t: float) -> tuple[int, int, int]:
    """Red turning blue: what the crops of a box around two crossing people drift through."""
    return _blend(RED, BLUE, t)


def _crossing(splitter: AppearanceSplitter, crowding: CrowdedBoxes | None,
              merged_box: tuple[int, int, int, int] | None) -> list[int]:
    """Track 7 follows red for 10 frames, crosses a blue person for 10 frames (crops drifting from red
    to blue; ``merged_box``: one box around both, else a second box overlapping track 7's) and carries
    on with the blue person. The track's output id per frame; ``crowding`` None: every box is checked."""
    other = (50, 20, 70, 80)  # covers half of BOX
    ids = []
    for index in range(40):
        image = np.zeros((*SIZE, 3), np.uint8)
        boxes, tracks = [BOX], [7]
        if index < 10:
            image[20:80, 40:60] = RED
        elif index < 20:
            colour = _mix((index - 9) / 10)
            if merged_box is None:
                image[20:80, 40:60] = colour
                boxes, tracks = [BOX, other], [7, 8]
            else:
                x1, y1, x2, y2 = merged_box
                image[y1:y2, x1:x2] = colour
                boxes = [merged_box]
        else:
            image[20:80, 40:60] = BLUE
        boxes = np.array(boxes, np.float32)
        crowded = None if crowding is None else crowding.update("cam", np.array(tracks), boxes)
        out, _ = splitter.update("cam", index, image, np.array(tracks), boxes, crowded)
        ids.append(int(out[0]))
    return ids


@pytest.mark.parametrize("merged_box", [None, (40, 20, 80, 80)], ids=["overlapping boxes", "one box around both"])
def test_a_switch_through_a_crossing_is_found_because_crowded_boxes_leave_the_reference_alone(merged_box) -> None:
    ids = _crossing(_splitter(smoothing=0.5), CrowdedBoxes(), merged_box)
    assert set(ids[:20]) == {7} and set(ids[23:]) == {SPLIT_ID_BASE}
    # checking the crowded crops too, the reference follows the drift and the switch goes unseen
    assert set(_crossing(_splitter(smoothing=0.5), None, merged_box)) == {7}



@pytest.mark.parametrize("merged_box", [None, (40, 20, 80, 80)], ids=["overlapping boxes", "one box around both"])
def test_the_crossing_rule_finds_the_switch_a_drifting_reference_follows(merged_box) -> None:
    """Crowded boxes checked like any other (the reference drifts to the new person), with their flags kept
    for the crossing rule: the mean look after the crossing is far from the one before, and the track splits."""
    drifting = _splitter(smoothing=0.5, crossing_distance=0.35, skip_crowded=False)
    ids = _crossing(drifting, CrowdedBoxes(), merged_box)
    split_at = ids.index(SPLIT_ID_BASE)
    assert set(ids[:split_at]) == {7} and set(ids[split_at:]) == {SPLIT_ID_BASE}
    assert split_at == CROSSING_BEFORE + CROSSING_GAP + CROSSING_AFTER - 1  # as soon as the rule sees the crossing
    # without the crowding flags there was no crossing to cut at, and the ordinary rule follows the drift
    assert set(_crossing(_splitter(smoothing=0.5, crossing_distance=0.35, skip_crowded=False), None, merged_box)) == {7}
    # a bar higher than the change between the two looks keeps the track whole
    assert set(_crossing(_splitter(smoothing=0.5, crossing_distance=0.95, skip_crowded=False), CrowdedBoxes(),
                         merged_box)) == {7}


def test_one_person_who_changes_look_away_from_others_is_not_cut_by_the_crossing_rule() -> None:
    """Red turning to teal without any crowded box: a change of look (turning round, shade), not a crossing."""
    colours = [RED] * 12 + [_blend(RED, TEAL, k / 6) for k in range(1, 7)] + [TEAL] * 12
    out = _feed(_splitter(smoothing=0.5, crossing_distance=0.1, skip_crowded=False), colours)
    assert {i for i, _ in out} == {7}


def test_the_tracker_stage_leaves_crowded_boxes_unchecked_when_asked() -> None:
    for skip in (False, True):
        embedded = []

        def embed(crops: np.ndarray) -> np.ndarray:
            embedded.append(len(crops))
            return _colour_embed(crops)

        stage = ByteTrackStage(minimum_consecutive_frames=1, split_skip_crowded=skip)
        stage._splitter = AppearanceSplitter(embed, _box_crop, distance=0.5, frames=3, every=1)
        boxes = np.array([BOX, (50, 20, 70, 80)], np.float32)  # each half covered by the other
        for index in range(6):
            detections = sv.Detections(xyxy=boxes, mask=np.ones((2, *SIZE), bool),
                                       confidence=np.full(2, 0.9, np.float32), class_id=np.zeros(2, int))
            stage.track(FrameResult(Frame("cam", index, index / 10, _image(RED, BOX)), detections))
        assert (sum(embedded) == 0) == skip


# The unit mean colour of TEAL is about 0.38 (cosine) from RED's: a check beyond the recheck distance
# (0.35) but within the ordinary one (0.5).
TEAL = (0, 255, 200)


def test_a_track_back_from_being_lost_is_split_by_one_check_beyond_the_recheck_distance() -> None:
    def feed(splitter: AppearanceSplitter, returning_at: int | None) -> list[int]:
        ids = []
        for index, colour in enumerate([RED] * 6 + [TEAL] * 6):
            returning = np.array([index == returning_at])
            out, _ = splitter.update("cam", index, _image(colour, BOX), np.array([7]), np.array([BOX], np.float32),
                                     returning=returning)
            ids.append(int(out[0]))
        return ids

    assert 1 - float(np.dot(*_colour_embed(np.stack([np.resize(np.array(c, np.uint8), (128, 64, 3))
                                                       for c in (RED, TEAL)])))) == pytest.approx(0.38, abs=0.02)
    assert feed(_splitter(recheck_distance=0.35), returning_at=6) == [7] * 6 + [SPLIT_ID_BASE] * 6
    assert set(feed(_splitter(recheck_distance=0.35), returning_at=None)) == {7}  # ordinary checks: within 0.5
    assert set(feed(_splitter(), returning_at=6)) == {7}  # no recheck distance: a return is an ordinary check
    assert set(feed(_splitter(recheck_distance=0.45), returning_at=6)) == {7}  # close enough to come back


def test_the_tracker_stage_rechecks_a_track_that_comes_back_after_frames_without_a_box() -> None:
    def run(recheck_after: int, gap: range) -> dict[int, int]:
        stage = ByteTrackStage(minimum_consecutive_frames=1, split_recheck_after=recheck_after)
        stage._splitter = _splitter(every=1, recheck_distance=0.35)
        ids = {}
        for index in range(24):
            box = (40 + index, 20, 60 + index, 80)
            image = _image(RED if index < 10 else TEAL, box)
            if index in gap:
                result = stage.track(FrameResult(Frame("cam", index, index / 10, image), sv.Detections.empty()))
            else:
                result = stage.track(_frame(index, image, box))
            ids.update({index: int(t) for t in result.detections.tracker_id})
        return ids

    lost_five = run(4, range(10, 15))
    first = lost_five[min(lost_five)]
    assert first < SPLIT_ID_BASE and {lost_five[i] for i in lost_five if i < 10} == {first}
    assert {lost_five[i] for i in lost_five if i >= 10} == {SPLIT_ID_BASE} and 15 in lost_five  # split on its return
    assert len(set(run(0, range(10, 15)).values())) == 1  # recheck off
    assert len(set(run(8, range(10, 15)).values())) == 1  # lost for fewer frames than asked
    assert len(set(run(4, range(0)).values())) == 1  # never lost: the change is within the ordinary distance


def test_the_default_config_rechecks_returns_after_eight_frames_at_its_own_distance() -> None:
    """The classic detector's default: returns after 8+ lost frames, checked at 0.55 (docs/detect.md)."""
    from pipeline import app

    stage, backend = app.build_stage(app.load("default"), "track")
    assert backend == "bytetrack"
    assert stage._recheck_after == 8 and stage._splitter.recheck_distance == pytest.approx(0.55)
    off, _ = app.build_stage(app.load("default", overrides=["track.split_recheck_after=0"]), "track")
    assert off._recheck_after == 0 and off._splitter.recheck_distance is None


def test_the_centre_detectors_default_splits_at_crossings_and_still_checks_crowded_boxes() -> None:
    """The crossing rule needs the crowding flags, not the skipping of crowded boxes: with
    ``split_at_crossings`` alone the stage flags crowded boxes and the splitter checks them all."""
    from pipeline import app

    centre = app.load("default").with_detector("centre", {})
    stage, _ = app.build_stage(centre, "track")
    assert stage._crowding is not None
    assert stage._splitter.crossing_distance == pytest.approx(0.35) and not stage._splitter.skip_crowded
    classic, _ = app.build_stage(app.load("default").with_detector("classic", {}), "track")
    assert classic._crowding is None and classic._splitter.crossing_distance is None
