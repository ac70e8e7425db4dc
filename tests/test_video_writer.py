"""Annotated video writer: real H.264 encoding with PyAV, decoded back."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import supervision as sv

from pipeline.messages import Frame, FrameResult, GaitDetection, GaitSegment, SilhouetteSequence, TrackWindow
from pipeline.video_writer import (
    UNKNOWN_COLOR,
    AnnotatedVideoWriter,
    TrackCaption,
    draw_annotations,
    identity_color,
    track_state,
)


def result(
    image: np.ndarray, pts_s: float, boxes: np.ndarray | None = None, ids: list[int] | None = None
) -> FrameResult:
    boxes = np.zeros((0, 4), np.float32) if boxes is None else boxes.astype(np.float32)
    detections = sv.Detections(xyxy=boxes, tracker_id=None if ids is None else np.array(ids))
    return FrameResult(Frame("cam", round(pts_s * 10), pts_s, image), detections)


def decode(path: Path) -> tuple[list[np.ndarray], list[float], float]:
    """Frames (BGR), their times in seconds and the stream's average rate."""
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        frames = list(container.decode(stream))
        return ([f.to_ndarray(format="bgr24") for f in frames], [float(f.pts * f.time_base) for f in frames],
                float(stream.average_rate))


def test_writes_an_h264_clip_that_decodes_back(tmp_path: Path) -> None:
    path = tmp_path / "out" / "cam1.mp4"  # the folder is created
    boxes = np.array([[10, 20, 60, 110], [100, 30, 150, 115]], dtype=np.float32)
    with AnnotatedVideoWriter(path, fps=10) as writer:
        for i in range(25):
            image = np.full((120, 160, 3), 40, dtype=np.uint8)
            writer.write(result(image, i / 10, boxes + [i, 0, i, 0], [1, 2]), {2: TrackCaption("alice", "walking")})
        assert writer.frames_written == 25
    frames, times, rate = decode(path)
    assert len(frames) == 25 and frames[0].shape == (120, 160, 3) and rate == 10
    np.testing.assert_allclose(times, np.arange(25) / 10, atol=1e-6)
    # the box outline of track 2 is drawn in its identity's colour on the grey background
    assert np.abs(frames[0][70, 100].astype(int) - identity_color("alice")).max() < 40
    assert np.abs(frames[0][70, 10].astype(int) - UNKNOWN_COLOR).max() < 40  # track 1: not identified
    assert np.abs(frames[0][70, 80].astype(int) - 40).max() < 10  # between the boxes: untouched


def test_without_fps_frames_keep_their_own_times(tmp_path: Path) -> None:
    path = tmp_path / "live.mp4"
    pts = [0.0, 0.2, 0.4, 0.6, 3.6, 3.8, 4.0]  # a stride of 2 at 10 fps, then a 3 s gap
    with AnnotatedVideoWriter(path) as writer:
        for t in pts:
            writer.write(result(np.zeros((48, 64, 3), np.uint8), t))
    frames, times, _ = decode(path)
    assert len(frames) == len(pts)
    np.testing.assert_allclose(times, pts, atol=1e-3)


def test_odd_size_and_later_size_changes(tmp_path: Path) -> None:
    path = tmp_path / "odd.mp4"
    writer = AnnotatedVideoWriter(path, fps=12.5)
    writer.write(result(np.zeros((61, 81, 3), np.uint8), 0.0))
    writer.write(result(np.zeros((120, 160, 3), np.uint8), 0.08))  # a stream came back bigger
    writer.close()
    writer.close()  # twice is fine
    frames, _, rate = decode(path)
    assert len(frames) == 2 and all(f.shape == (60, 80, 3) for f in frames) and rate == 12.5


def test_no_frame_no_file(tmp_path: Path) -> None:
    writer = AnnotatedVideoWriter(tmp_path / "empty.mp4", fps=10)
    writer.close()
    assert not (tmp_path / "empty.mp4").exists()


def test_draw_annotations_captions_tracks_and_leaves_the_input_alone() -> None:
    image = np.zeros((100, 300, 3), np.uint8)
    boxes = np.array([[20, 40, 60, 90], [220, 40, 260, 90]], np.float32)
    plain = draw_annotations(image, boxes, np.array([5, 6]))
    labelled = draw_annotations(image, boxes, np.array([5, 6]), {5: TrackCaption("bob", "walking")})
    untracked = draw_annotations(image, boxes)
    assert image.max() == 0
    assert (labelled != plain).any()  # the name and state replace track 5's "#5"
    assert (labelled[:, 200:] == plain[:, 200:]).all()  # track 6 has none
    assert set(map(tuple, untracked.reshape(-1, 3))) <= {(0, 0, 0), (120, 120, 120)}  # grey boxes, no text


def test_identity_colours_follow_the_name_not_the_track() -> None:
    """The same person has the same colour in every source, whatever its track id there."""
    boxes = np.array([[20, 30, 60, 90]], np.float32)
    blank = np.zeros((120, 200, 3), np.uint8)
    a = draw_annotations(blank, boxes, np.array([3]), {3: TrackCaption("ann", "walking")})
    b = draw_annotations(blank, boxes, np.array([41]), {41: TrackCaption("ann", "standing")})
    assert tuple(a[60, 20]) == tuple(b[60, 20]) == identity_color("ann")  # left edge of the box
    names = [f"person-{i:05d}" for i in range(1, 13)]
    colours = {identity_color(n) for n in names}
    assert len(colours) == len(names) and UNKNOWN_COLOR not in colours
    assert all(max(c) - min(c) > 80 for c in colours)  # saturated, unlike the grey of unknown tracks


@pytest.mark.parametrize("height", [480, 1080])
def test_captions_are_readable_at_480p_and_1080p(height: int) -> None:
    width = height * 16 // 9
    person_h = height // 4
    box = np.array([[width // 2, height // 3, width // 2 + person_h // 3, height // 3 + person_h]], np.float32)
    image = np.full((height, width, 3), 90, np.uint8)
    drawn = draw_annotations(image, box, np.array([7]), {7: TrackCaption("person-00012", "partial")})
    # The caption tag sits right above the box, filled with the identity colour, holding black text.
    tag = np.all(drawn == identity_color("person-00012"), axis=2)
    rows = np.flatnonzero(tag[: int(box[0, 1]) - 1].any(axis=1))
    assert len(rows), "no caption above the box"
    tag_height = rows.max() - rows.min() + 1
    assert tag_height >= 0.05 * height  # two lines of text, each tall enough to read
    top, bottom = rows.min(), rows.max()
    cols = np.flatnonzero(tag[top : bottom + 1].any(axis=0))
    text = np.all(drawn[top : bottom + 1, cols.min() : cols.max() + 1] < 40, axis=2)
    ink_rows = np.flatnonzero(text.any(axis=1))
    assert ink_rows.size and (ink_rows.max() - ink_rows.min()) >= 0.035 * height
    assert cols.max() < width and cols.max() - cols.min() >= 0.08 * width  # the whole name fits in the frame


def test_caption_near_the_frame_edge_stays_inside() -> None:
    boxes = np.array([[290, 0, 319, 60]], np.float32)  # touches the top and right edges
    blank = np.zeros((240, 320, 3), np.uint8)
    drawn = draw_annotations(blank, boxes, np.array([1]), {1: TrackCaption("zed", "walking")})
    tag = np.all(drawn == identity_color("zed"), axis=2)
    assert tag[:, :290].any()  # shifted left into the frame
    assert tag[:60].any()  # drawn inside the box when there is no room above


def window_with(boxes: np.ndarray, segments: list[GaitSegment], size=(240, 320)) -> TrackWindow:
    n = len(boxes)
    seq = SilhouetteSequence(np.zeros((n, 64, 44), np.uint8), np.ones(n, np.float32), boxes.astype(np.float32),
                             np.arange(n), np.arange(n) / 25.0, size)
    window = TrackWindow("cam", 1, 0, False, seq)
    window.gait = GaitDetection(segments, 0.5, "gait" if segments else "appearance")
    return window


def test_track_state_from_the_gait_segments() -> None:
    boxes = np.tile(np.array([[100, 50, 140, 170]], np.float32), (60, 1))
    assert track_state(window_with(boxes, [GaitSegment(35, 60, 0.9)])) == "walking"
    assert track_state(window_with(boxes, [GaitSegment(0, 20, 0.9)])) == "standing"
    cut = boxes.copy()
    cut[-1] = [100, 50, 140, 239]  # reaches the bottom edge
    assert track_state(window_with(cut, [])) == "partial"
    hidden = boxes.copy()
    hidden[-1] = [100, 50, 140, 120]  # legs hidden behind something
    assert track_state(window_with(hidden, [])) == "partial"
    no_gait = window_with(boxes, [])
    no_gait.gait = None
    assert track_state(no_gait) is None


def test_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fps"):
        AnnotatedVideoWriter(tmp_path / "x.mp4", fps=0)
    writer = AnnotatedVideoWriter(tmp_path / "x.mp4", fps=10)
    with pytest.raises(ValueError, match="uint8"):
        writer.write(result(np.zeros((10, 10, 3), np.float32), 0.0))
