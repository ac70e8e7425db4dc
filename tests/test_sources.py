"""Video sources on real files: the shared clips, folders of clips, damaged and bogus inputs."""

from __future__ import annotations

import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from pipeline.messages import Frame, SourceEvent
from pipeline.sources import SourceOptions, expand_sources, mask_credentials, open_source

VIDEOS = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "videos"
CAMPUS = VIDEOS / "campus_road_480x360.mp4"

needs_campus = pytest.mark.skipif(not CAMPUS.exists(), reason=f"shared clip {CAMPUS} is absent")


def read_all(spec: str, **options: object) -> tuple[list[Frame], list[SourceEvent]]:
    frames: list[Frame] = []
    events: list[SourceEvent] = []
    with open_source(spec, SourceOptions(**options)) as source:
        for item in source:
            (frames if isinstance(item, Frame) else events).append(item)
    return frames, events


def write_clip(path: Path, n_frames: int, size: tuple[int, int] = (48, 64), fps: int = 10) -> None:
    """A small H.264 MP4 whose frame i is grey 30 * i (so order can be checked), n_frames <= 8."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), mode="w") as container:
        stream = container.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "qp": "0"})
        stream.height, stream.width = size
        stream.pix_fmt = "yuv420p"
        for i in range(n_frames):
            image = np.full((*size, 3), 30 * i, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(image, format="bgr24")
            frame.pts, frame.time_base = i, Fraction(1, fps)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)


@needs_campus
def test_campus_clip_decodes_every_frame_with_monotonic_pts() -> None:
    frames, events = read_all(str(CAMPUS))
    assert len(frames) == 795
    assert [f.index for f in frames] == list(range(795))
    assert frames[0].image.shape == (360, 480, 3) and frames[0].image.dtype == np.uint8
    assert all(f.source_id == str(CAMPUS.resolve()) for f in frames)  # ids are resolved paths
    pts = np.array([f.pts_s for f in frames])
    assert pts[0] == pytest.approx(0.0)
    np.testing.assert_allclose(np.diff(pts), 0.1, atol=1e-6)
    assert [e.kind for e in events] == ["opened", "ended"]
    assert events[0].message == "opened: 480x360 h264 10 fps, 795 frames"
    assert events[1].message == "ended after 795 frames"


@needs_campus
def test_stride_and_max_frames() -> None:
    frames, events = read_all(str(CAMPUS), frame_stride=3, max_frames=10)
    assert [f.index for f in frames] == list(range(0, 30, 3))
    np.testing.assert_allclose([f.pts_s for f in frames], np.arange(0, 3.0, 0.3), atol=1e-6)
    assert events[-1].kind == "ended"

    frames, _ = read_all(str(CAMPUS), frame_stride=100)
    assert [f.index for f in frames] == list(range(0, 795, 100))


@needs_campus
def test_frames_match_a_plain_pyav_decode() -> None:
    frames, _ = read_all(str(CAMPUS), max_frames=3)
    with av.open(str(CAMPUS)) as container:
        for frame, reference in zip(frames, container.decode(video=0)):
            np.testing.assert_array_equal(frame.image, reference.to_ndarray(format="bgr24"))


def test_folder_expands_recursively_sorted_and_skips_other_files(tmp_path: Path) -> None:
    write_clip(tmp_path / "cam2" / "b.mp4", 5)
    write_clip(tmp_path / "cam1" / "night" / "c.MP4", 5)
    write_clip(tmp_path / "cam1" / "a.mp4", 5)
    (tmp_path / "cam1" / "notes.txt").write_text("not a video")
    (tmp_path / "cam1" / "thumb.jpg").write_bytes(b"\xff\xd8")
    url = "rtsp://user:pw@10.0.0.1/live"
    sources = expand_sources([str(tmp_path), url, str(tmp_path / "cam2" / "b.mp4")])
    assert sources == [
        str(tmp_path / "cam1" / "a.mp4"),
        str(tmp_path / "cam1" / "night" / "c.MP4"),
        str(tmp_path / "cam2" / "b.mp4"),
        url,
    ]
    for spec in sources[:3]:
        frames, events = read_all(spec)
        assert len(frames) == 5 and events[-1].kind == "ended"
        np.testing.assert_allclose([f.image.mean() for f in frames], [0, 30, 60, 90, 120], atol=6)


def test_empty_folder_is_kept_and_reports_no_video(tmp_path: Path) -> None:
    (tmp_path / "readme.txt").write_text("x")
    assert expand_sources([str(tmp_path)]) == [str(tmp_path)]
    frames, events = read_all(str(tmp_path))
    assert frames == [] and [e.kind for e in events] == ["error"]
    assert "no video files" in events[0].message


@needs_campus
def test_truncated_file_yields_what_decodes_then_an_error(tmp_path: Path) -> None:
    data = CAMPUS.read_bytes()
    truncated = tmp_path / "truncated.mp4"
    truncated.write_bytes(data[: len(data) // 2])
    frames, events = read_all(str(truncated))
    assert 300 < len(frames) < 795
    assert [e.kind for e in events] == ["opened", "error"]
    assert "truncated" in events[-1].message and "\n" not in events[-1].message


@needs_campus
def test_file_damaged_in_the_middle_decodes_around_the_damage(tmp_path: Path) -> None:
    data = bytearray(CAMPUS.read_bytes())
    middle = len(data) // 2
    data[middle : middle + 20_000] = np.random.default_rng(0).integers(0, 256, 20_000, dtype=np.uint8).tobytes()
    damaged = tmp_path / "damaged.mp4"
    damaged.write_bytes(bytes(data))
    frames, events = read_all(str(damaged))
    assert 700 < len(frames) < 795  # frames after the damage still decode
    assert frames[-1].index == len(frames) - 1
    assert events[-1].kind == "error" and "corrupt" in events[-1].message


def test_text_file_named_mp4_is_one_clear_error(tmp_path: Path) -> None:
    fake = tmp_path / "fake.mp4"
    fake.write_text("this is not a video\n" * 50)
    frames, events = read_all(str(fake))
    assert frames == []
    assert [e.kind for e in events] == ["error"]
    assert events[0].source_id == str(fake) and events[0].message.startswith("cannot open as video: ")


def test_missing_path_is_one_clear_error(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "cam.mp4"
    assert expand_sources([str(missing)]) == [str(missing)]
    frames, events = read_all(str(missing))
    assert frames == []
    assert [(e.source_id, e.kind, e.message) for e in events] == [(str(missing), "error", "file not found")]


def test_unsupported_url_scheme_is_an_error_with_masked_credentials() -> None:
    frames, events = read_all("ftp://bob:hunter2@example.org/cam.mp4")
    assert frames == [] and [e.kind for e in events] == ["error"]
    assert events[0].source_id == "ftp://bob:***@example.org/cam.mp4"
    assert events[0].message == "unsupported URL scheme 'ftp' (use rtsp:// or a path)"


def test_mask_credentials() -> None:
    assert mask_credentials("rtsp://admin:p@ss:w0rd@10.0.0.2:554/h264") == "rtsp://admin:***@10.0.0.2:554/h264"
    assert mask_credentials("rtsp://10.0.0.2/h264") == "rtsp://10.0.0.2/h264"
    masked = mask_credentials("failed rtsp://u:x@h/a and rtsp://v:y@g/b")
    assert masked == "failed rtsp://u:***@h/a and rtsp://v:***@g/b"
    assert (mask_credentials("rtsp://h/cam?user=admin&password=12@34&channel=1")
            == "rtsp://h/cam?user=admin&password=***&channel=1")


@needs_campus
def test_close_stops_the_decode_thread_blocked_on_a_full_queue() -> None:
    source = open_source(str(CAMPUS), SourceOptions(queue_size=2))
    items = iter(source)
    next(items)
    next(items)
    time.sleep(0.2)  # the decoder fills the queue and blocks on back-pressure
    source.close()
    assert source._thread is not None
    source._thread.join(timeout=30.0)  # a decoder still blocked on the full queue would never end
    assert not source._thread.is_alive()
    assert list(items) == []


@needs_campus
def test_back_pressure_keeps_the_queue_bounded() -> None:
    source = open_source(str(CAMPUS), SourceOptions(queue_size=3))
    items = iter(source)
    next(items)
    time.sleep(0.3)
    assert source._queue.qsize() <= 3
    assert source._decoded <= 3 + 2  # queue + the item being put + the one delivered
    source.close()


def test_options_are_validated() -> None:
    with pytest.raises(ValueError, match="frame_stride"):
        SourceOptions(frame_stride=0)
    with pytest.raises(ValueError, match="rtsp_transport"):
        SourceOptions(rtsp_transport="http")


def test_a_source_iterates_once(tmp_path: Path) -> None:
    clip = tmp_path / "a.mp4"
    write_clip(clip, 2)
    source = open_source(str(clip))
    assert len(list(source)) == 4  # opened, 2 frames, ended
    with pytest.raises(RuntimeError, match="only once"):
        iter(source)



def test_archive_that_paused_recording_reports_a_gap(tmp_path: Path) -> None:
    clip = tmp_path / "motion.mp4"
    times = [0.0, 0.1, 0.2, 0.3, 5.0, 5.1]  # recording paused between 0.3 s and 5.0 s
    with av.open(str(clip), mode="w") as container:
        stream = container.add_stream("libx264", rate=10, options={"preset": "ultrafast"})
        stream.height, stream.width, stream.pix_fmt = 48, 64, "yuv420p"
        for t in times:
            frame = av.VideoFrame.from_ndarray(np.zeros((48, 64, 3), np.uint8), format="bgr24")
            frame.pts, frame.time_base = round(t * 10), Fraction(1, 10)
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    with open_source(str(clip)) as source:
        items = list(source)
    kinds = ["frame" if isinstance(item, Frame) else item.kind for item in items]
    assert kinds == ["opened", "frame", "frame", "frame", "frame", "gap", "frame", "frame", "ended"]
    gap = items[5]
    assert gap.pts_s == pytest.approx(0.3) and "(0.30 s .. 5.00 s)" in gap.message
    np.testing.assert_allclose([item.pts_s for item in items if isinstance(item, Frame)], times, atol=1e-6)
