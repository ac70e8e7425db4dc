"""Annotated video writer: real H.264 encoding with PyAV, decoded back."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import supervision as sv

from pipeline.messages import Frame, FrameResult
from pipeline.video_writer import AnnotatedVideoWriter, draw_annotations, track_color


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
            writer.write(result(image, i / 10, boxes + [i, 0, i, 0], [1, 2]), {1: "alice 0.93 gait"})
        assert writer.frames_written == 25
    frames, times, rate = decode(path)
    assert len(frames) == 25 and frames[0].shape == (120, 160, 3) and rate == 10
    np.testing.assert_allclose(times, np.arange(25) / 10, atol=1e-6)
    # the box outline of track 2 is drawn in its colour on the grey background
    assert np.abs(frames[0][70, 100].astype(int) - track_color(2)).max() < 40
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
    labelled = draw_annotations(image, boxes, np.array([5, 6]), {5: "bob gait"})
    untracked = draw_annotations(image, boxes)
    assert image.max() == 0
    assert (labelled != plain).any()  # the label widens track 5's caption
    assert (labelled[:, 200:] == plain[:, 200:]).all()  # track 6 has none
    assert set(map(tuple, untracked.reshape(-1, 3))) <= {(0, 0, 0), (160, 160, 160)}  # grey boxes, no text
    assert track_color(5) != track_color(6)


def test_rejects_bad_input(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="fps"):
        AnnotatedVideoWriter(tmp_path / "x.mp4", fps=0)
    writer = AnnotatedVideoWriter(tmp_path / "x.mp4", fps=10)
    with pytest.raises(ValueError, match="uint8"):
        writer.write(result(np.zeros((10, 10, 3), np.float32), 0.0))
