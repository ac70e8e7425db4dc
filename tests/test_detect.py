"""Classic detector on a real clip and on made-up masks; choosing a detector backend."""

from __future__ import annotations

import logging
from pathlib import Path

import av
import numpy as np
import pytest
import supervision as sv

from pipeline.messages import Frame, FrameResult
from stages.detect import detector_candidates
from stages.detect.classic import ClassicDetector

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
CAMPUS = DATA / "videos" / "campus_road_480x360.mp4"


def _frames(path: Path, count: int) -> list[np.ndarray]:
    if not path.is_file():
        pytest.skip(f"real clip {path} absent (shared data not available)")
    images = []
    with av.open(str(path)) as container:
        for decoded in container.decode(video=0):
            images.append(decoded.to_ndarray(format="bgr24"))
            if len(images) == count:
                break
    return images


def test_classic_finds_people_on_campus_clip() -> None:
    detector = ClassicDetector(warmup_frames=20)
    images = _frames(CAMPUS, 80)
    batch = [FrameResult(Frame("campus", i, i / 10, image), sv.Detections.empty()) for i, image in enumerate(images)]
    results = []
    for start in range(0, len(batch), 8):
        results += detector.process(batch[start : start + 8])
    assert [r.frame.index for r in results] == list(range(len(images)))
    assert all(len(r.detections) == 0 for r in results[:20]), "warm-up frames give no detections"
    after = results[20:]
    with_people = [r for r in after if len(r.detections) > 0]
    assert len(with_people) >= 0.8 * len(after)
    height, width = images[0].shape[:2]
    for result in with_people:
        det = result.detections
        assert det.xyxy.dtype == np.float32 and det.mask.shape == (len(det), height, width)
        assert det.mask.dtype == bool and np.all((det.confidence > 0) & (det.confidence <= 1))
        assert np.all(det.class_id == 0)
        for box, mask in zip(det.xyxy, det.mask):
            x1, y1, x2, y2 = box
            box_height, box_width = y2 - y1, x2 - x1
            touches_edge = x1 <= 0 or y1 <= 0 or x2 >= width or y2 >= height
            assert box_height >= (0.6 if touches_edge else 1.2) * box_width
            ys, xs = np.nonzero(mask)
            assert len(ys) > 0.3 * box_height * box_width
            assert xs.min() >= x1 - 1 and xs.max() <= x2 and ys.min() >= y1 - 1 and ys.max() <= y2


def _person(mask: np.ndarray, x: int, y: int, w: int, h: int) -> None:
    mask[y : y + h, x : x + w] = True


def test_people_splits_side_by_side_walkers_and_merges_body_fragments() -> None:
    detector = ClassicDetector()
    fg = np.zeros((360, 480), dtype=bool)
    # Two walkers touching shoulder to shoulder: one blob, two bodies (a thin bridge between).
    _person(fg, 100, 100, 30, 90)
    _person(fg, 136, 100, 30, 90)
    fg[140:146, 130:136] = True
    # One body in two pieces: torso and legs with a 6-pixel gap (a belt like the background).
    _person(fg, 300, 100, 30, 40)
    _person(fg, 302, 146, 26, 44)
    # Noise: a wide flat blob (a car roof) and a speck.
    _person(fg, 20, 300, 120, 30)
    fg[10:13, 10:13] = True
    blobs = sorted(detector.people(fg), key=lambda b: b.x1)
    boxes = [(b.x1, b.y1, b.x2, b.y2) for b in blobs]
    assert len(boxes) == 3, boxes
    assert boxes[0][0] == 100 and boxes[0][2] <= 136
    assert boxes[1][0] >= 130 and boxes[1][2] == 166
    assert boxes[2] == (300, 100, 330, 190)


def test_global_change_gives_no_detections() -> None:
    detector = ClassicDetector(warmup_frames=3)
    rng = np.random.default_rng(0)
    background = rng.integers(60, 120, (120, 160, 3), dtype=np.uint8)
    for _ in range(5):
        assert len(detector.detect("cam", background)) == 0
    brighter = np.clip(background.astype(int) + 90, 0, 255).astype(np.uint8)  # exposure jump
    assert len(detector.detect("cam", brighter)) == 0


def test_detector_candidates_put_configured_weights_first_and_classic_last(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    weights = tmp_path / "people.pt"
    weights.write_bytes(b"weights")
    empty_models = tmp_path / "models"
    chosen = detector_candidates(str(weights), str(empty_models))
    assert [c.backend for c in chosen] == ["yolo", "centre", "classic"]
    assert chosen[0].options == {"weights": str(weights)}
    with caplog.at_level(logging.WARNING, logger="stages.detect"):
        missing = detector_candidates(str(tmp_path / "absent.pt"), str(empty_models))
    assert [c.backend for c in missing] == ["centre", "classic"] and "no third-party model" in missing[0].reason
    lines = [r.getMessage() for r in caplog.records]
    assert len(lines) == 1 and "absent.pt not found" in lines[0] and "\n" not in lines[0]
    assert [c.backend for c in detector_candidates(None, str(empty_models))] == ["centre", "classic"]


def _scene(person_x: int | None, gain: float = 1.0) -> np.ndarray:
    """A smooth static backdrop (160x120) with a dark 12x36 "person" at column person_x."""
    rows, cols = np.mgrid[0:120, 0:160]
    grey = 90 + 0.4 * cols + 0.2 * rows
    image = np.repeat(grey[..., None], 3, axis=2)
    if person_x is not None:
        image[60:96, person_x : person_x + 12] = 25
    return np.clip(image * gain, 0, 255).astype(np.uint8)


def _centres(detections: sv.Detections) -> list[float]:
    return sorted(float((x1 + x2) / 2) for x1, _, x2, _ in detections.xyxy)


def test_person_who_stops_stays_detected_and_ghost_is_dropped() -> None:
    detector = ClassicDetector(warmup_frames=10, protect_frames=40)
    for _ in range(10):  # someone already standing at x=20 while the background is learnt
        detector.detect("cam", _scene(20))
    x = 20
    for _ in range(20):  # walks right, then stops at x=100
        x = min(x + 6, 100)
        detections = detector.detect("cam", _scene(x))
    assert _centres(detections) == [106.0], "the place the person left is a ghost, not a person"
    for _ in range(30):  # standing still for 30 frames: selective update keeps them in view
        detections = detector.detect("cam", _scene(100))
    assert _centres(detections) == [106.0]


def test_exposure_change_keeps_the_person_and_adds_nothing() -> None:
    detector = ClassicDetector(warmup_frames=10)
    for _ in range(12):
        detector.detect("cam", _scene(None))
    for gain in (1.0, 1.25, 1.4):  # the camera brightens the whole view
        assert _centres(detector.detect("cam", _scene(70, gain))) == [76.0]


def test_end_source_forgets_the_background_model() -> None:
    detector = ClassicDetector(warmup_frames=3)
    for _ in range(6):
        detector.detect("clip", _scene(None))
    assert len(detector.detect("clip", _scene(70))) == 1
    assert detector.end_source("clip") == []
    # The next clip under that name warms up from scratch instead of reusing the old scene.
    assert len(detector.detect("clip", _scene(70))) == 0
