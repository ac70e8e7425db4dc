"""The batch progress line: its formatting and what it counts (a fake clock, no timing)."""

from __future__ import annotations

import io

from pipeline.progress import BatchProgress, ProgressSnapshot, format_progress


def test_format_shows_sources_hours_done_and_left_and_speed():
    line = format_progress(
        ProgressSnapshot(
            sources_total=4,
            sources_done=2,
            frames=270_000,
            video_s_done=3 * 3600,
            video_s_total=6 * 3600,
            elapsed_s=1800,
        ),
        width=10,
    )
    assert line.startswith("[#####-----] 2/4 sources")
    assert "3.00 h of 6.00 h video, 3.00 h left" in line
    assert "270000 frames" in line
    assert "6.00 video-h/h" in line  # three hours of video in half an hour
    assert line.endswith("eta 30m00s")


def test_format_without_known_lengths_or_speed():
    line = format_progress(ProgressSnapshot(3, 1, 0, 0.0, None, 0.0), width=9)
    assert line.startswith("[###------] 1/3 sources")
    assert "0.0 min video" in line and "video-h/h" not in line and "eta" not in line


def test_short_runs_are_counted_in_minutes():
    line = format_progress(ProgressSnapshot(1, 0, 150, 90.0, 300.0, 30.0))
    assert "1.5 min of 5.0 min video, 3.5 min left" in line and "3.00 video-h/h" in line


def test_snapshot_counts_finished_sources_whole_and_open_ones_so_far():
    now = [100.0]
    progress = BatchProgress(
        {"a.mp4": 60.0, "b.mp4": 120.0, "c.mp4": 30.0}, enabled=True, stream=io.StringIO(), clock=lambda: now[0]
    )
    now[0] = 130.0
    snap = progress.snapshot({"a.mp4": 1400, "b.mp4": 250}, {"a.mp4": 59.96, "b.mp4": 10.0}, ["a.mp4"])
    assert snap == ProgressSnapshot(3, 1, 1650, 70.0, 210.0, 30.0)
    unknown = BatchProgress({"a.mp4": 60.0, "rtsp://cam": None}, enabled=True, stream=io.StringIO())
    assert unknown.snapshot({}, {"rtsp://cam": 5.0}, []).video_s_total is None


def test_drawn_only_when_enabled_and_redrawn_in_place():
    quiet = io.StringIO()
    BatchProgress({"a": 10.0}, enabled=False, stream=quiet).update({"a": 5}, {"a": 1.0}, [])
    assert quiet.getvalue() == ""
    now = [0.0]
    shown = io.StringIO()
    progress = BatchProgress({"a": 10.0}, enabled=True, stream=shown, clock=lambda: now[0])
    progress.update({"a": 5}, {"a": 1.0}, [])
    progress.update({"a": 6}, {"a": 1.2}, [])  # within the redraw interval: skipped
    now[0] = 1.0
    progress.update({"a": 25}, {"a": 10.0}, ["a"])
    progress.close()
    lines = shown.getvalue().split("\r")[1:]
    assert len(lines) == 2 and "1/1 sources" in lines[-1] and shown.getvalue().endswith("\n")
    assert BatchProgress({}, stream=io.StringIO()).enabled is False  # not a terminal
