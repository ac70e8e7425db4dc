"""The engine on its own: tracklet windows, runner ordering/batching/errors, records against the schema.

The stages here are small deterministic ones written for the test (a box that moves across a blank
frame); the real detectors, trackers and sources are tested end to end elsewhere.
"""

from __future__ import annotations

import json
import threading
import time

import jsonschema
import numpy as np
import pytest
import supervision as sv

from pipeline.export import SCHEMA_PATH, ExportOptions, SilhouetteStripWriter, TrackRecordWriter, window_record
from pipeline.messages import Frame, FrameResult, GaitDetection, GaitSegment, IdentityMatch, SourceEvent, TrackWindow
from pipeline.runner import NamedStage, Runner, RunnerOptions, SourceEnd, merge_by_video_time
from stages.tracklets import TrackletAssembler

H, W = 240, 320


def person_mask(x: int, step: int) -> np.ndarray:
    """A crude walker: body rectangle plus two legs whose spread changes with the step."""
    mask = np.zeros((H, W), bool)
    mask[40:140, x : x + 30] = True
    spread = 4 + 8 * abs(np.sin(step / 4))
    for sign in (-1, 1):
        cx = int(x + 15 + sign * spread)
        mask[140:220, max(cx - 5, 0) : cx + 5] = True
    return mask


class MovingPersonSource:
    """A camera at ``fps`` (frame i at video time i / fps); ``delay_s`` per frame makes its decoder slow."""

    def __init__(self, source_id: str, frames: int, fail_at: int | None = None, fps: float = 25.0,
                 delay_s: float = 0.0) -> None:
        self.source_id, self.frames, self.fail_at, self.fps, self.delay_s = source_id, frames, fail_at, fps, delay_s
        self.closed = False

    def __iter__(self):
        yield SourceEvent(self.source_id, "opened", "opened")
        for i in range(self.frames):
            if self.fail_at == i:
                raise OSError("stream dropped")
            time.sleep(self.delay_s)
            yield Frame(self.source_id, i, i / self.fps, np.zeros((H, W, 3), np.uint8))

    def close(self) -> None:
        self.closed = True


class OracleDetector:
    """Detects the test walker exactly (its mask is known from the frame index)."""

    def __init__(self) -> None:
        self.batch_sizes: list[int] = []

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        self.batch_sizes.append(len(batch))
        out = []
        for r in batch:
            if r.frame.index >= 200:  # the person has left
                out.append(r)
                continue
            mask = person_mask(20 + r.frame.index, r.frame.index)
            ys, xs = np.nonzero(mask)
            det = sv.Detections(
                xyxy=np.array([[xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]], np.float32),
                mask=mask[None],
                confidence=np.array([0.9]),
                class_id=np.array([0]),
                tracker_id=np.array([7]),
            )
            out.append(FrameResult(r.frame, det))
        return out


class FailingOnce:
    """A track stage that fails on its first batch (the run must go on)."""

    def __init__(self) -> None:
        self.calls = 0

    def process(self, batch: list[TrackWindow]) -> list[TrackWindow]:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("model exploded\nsecond line")
        for w in batch:
            w.gait = GaitDetection([GaitSegment(0, len(w.sequence) // 2, 0.9)], 0.5, "gait")
            w.model_versions["probe"] = "1"
        return batch


def make_runner(detector, track_stage=None, **options):
    assembler = TrackletAssembler(window_every=20, max_length=50, min_length=5)
    tracks = [NamedStage("probe", track_stage, TrackWindow)] if track_stage else []
    return Runner([NamedStage("detect", detector, FrameResult)], NamedStage("tracklets", assembler, FrameResult),
                  tracks, RunnerOptions(**options))


def test_windows_are_emitted_while_in_view_and_bounded():
    windows: list[TrackWindow] = []
    result = make_runner(OracleDetector(), progress=False).run([MovingPersonSource("cam1", 120)], on_window=windows.append)
    assert result.frames == {"cam1": 120}
    intermediate = [w for w in windows if not w.is_final]
    finals = [w for w in windows if w.is_final]
    assert len(intermediate) == 120 // 20 and len(finals) == 1
    assert all(len(w.sequence) <= 50 for w in windows)  # old frames released
    assert [w.window_index for w in windows] == list(range(len(windows)))
    last = finals[0].sequence
    assert last.frame_indices[-1] == 119 and np.all(np.diff(last.frame_indices) == 1)
    assert last.silhouettes.shape[1:] == (64, 44) and last.crops.shape[1:] == (128, 64, 3)
    assert np.allclose(last.ratios, (last.boxes[:, 3] - last.boxes[:, 1]) / 64)


def test_track_end_closes_window_and_sources_are_batched_together():
    detector = OracleDetector()
    windows: list[TrackWindow] = []
    sources = [MovingPersonSource(f"cam{i}", 230) for i in range(3)]
    result = make_runner(detector, batch_size=6, max_open_sources=3, progress=False).run(sources, on_window=windows.append)
    assert sorted(result.sources_done) == ["cam0", "cam1", "cam2"]
    finals = [w for w in windows if w.is_final]
    assert sorted(w.source_id for w in finals) == ["cam0", "cam1", "cam2"]
    assert max(detector.batch_sizes) > 1  # frames of several sources share a call
    assert all(s.closed for s in sources)


def test_a_failing_source_and_a_failing_stage_do_not_stop_the_run():
    stage = FailingOnce()
    windows: list[TrackWindow] = []
    events: list[SourceEvent] = []
    sources = [MovingPersonSource("bad", 50, fail_at=30), MovingPersonSource("good", 100)]
    result = make_runner(OracleDetector(), stage, progress=False).run(sources, on_window=windows.append, on_event=events.append)
    errors = [e for e in events if e.kind == "error"]
    assert [e.source_id for e in errors] == ["bad"] and "stream dropped" in errors[0].message
    assert any(w.errors == ["probe failed: RuntimeError: model exploded"] for w in windows)
    assert any(w.gait is not None for w in windows if w.source_id == "good")
    assert {w.source_id for w in windows if w.is_final} == {"bad", "good"}
    assert result.stage_stats[-1]["errors"] == 1


def _merged(sources, max_open):
    opened: list[str] = []
    items = list(merge_by_video_time(sources, max_open, threading.Event(), lambda s: opened.append(s.source_id),
                                     lambda s: None))
    return items, opened


def test_files_are_merged_in_video_time_order():
    sources = [MovingPersonSource("a", 4, fps=2.0), MovingPersonSource("b", 6, fps=4.0),
               MovingPersonSource("c", 2, fps=1.0, fail_at=1)]
    items, opened = _merged(sources, max_open=3)
    frames = [(i.source_id, i.pts_s) for i in items if isinstance(i, Frame)]
    # earliest video time first, ties in the order the sources were given; each source's order kept
    assert frames == [("a", 0.0), ("b", 0.0), ("c", 0.0), ("b", 0.25), ("a", 0.5), ("b", 0.5), ("b", 0.75),
                      ("a", 1.0), ("b", 1.0), ("b", 1.25), ("a", 1.5)]
    ends = [(i.source_id, i.complete) for i in items if isinstance(i, SourceEnd)]
    assert ends == [("c", True), ("b", True), ("a", True)]  # c fails after its first frame and ends
    errors = [i for i in items if isinstance(i, SourceEvent) and i.kind == "error"]
    assert [(e.source_id, e.kind) for e in errors] == [("c", "error")] and "stream dropped" in errors[0].message
    assert items.index(errors[0]) < items.index(SourceEnd("c", True))
    assert all(s.closed for s in sources) and opened == ["a", "b", "c"]


def test_at_most_max_open_sources_and_the_next_opens_when_one_ends():
    sources = [MovingPersonSource(name, frames, fps=1.0) for name, frames in (("a", 2), ("b", 5), ("c", 2))]
    items, opened = _merged(sources, max_open=2)
    order = [i.source_id if isinstance(i, Frame) else f"end:{i.source_id}" for i in items
             if not isinstance(i, SourceEvent)]
    # c opens only when a has ended, then starts at its own video time 0 (before b's later frames)
    assert order == ["a", "b", "a", "end:a", "c", "b", "c", "end:c", "b", "b", "b", "end:b"]
    assert opened == ["a", "b", "c"]


def test_a_slow_decoder_does_not_change_what_the_stages_see():
    seen: list[tuple[str, int]] = []

    class Recorder:
        def process(self, batch):
            seen.extend((r.frame.source_id, r.frame.index) for r in batch)
            return batch

    runs = []
    for slow in ("a", "b"):
        seen.clear()
        sources = [MovingPersonSource(s, 12, fps=5.0, delay_s=0.002 if s == slow else 0.0) for s in ("a", "b")]
        make_runner(Recorder(), progress=False, max_open_sources=2).run(sources, on_window=lambda w: None)
        runs.append(list(seen))
    assert runs[0] == runs[1] == [(s, i) for i in range(12) for s in ("a", "b")]


def test_records_validate_against_the_published_schema(tmp_path):
    schema = json.loads(SCHEMA_PATH.read_text())
    windows: list[TrackWindow] = []
    make_runner(OracleDetector(), FailingOnce(), progress=False).run([MovingPersonSource("cam", 90)], on_window=windows.append)
    writer = TrackRecordWriter(tmp_path, ExportOptions(save_embeddings=True))
    for w in windows:
        w.gait_embedding = np.ones((16, 8), np.float32)
        w.identity = IdentityMatch(None, "gait", float("inf"), 0.0)  # an empty gallery: nothing to compare with
        writer.write_window(w)
    writer.write_event(SourceEvent("cam", "gap", "no data for 2.0 s", 3.0))
    path = writer.complete("cam")
    def strict(token: str):
        raise ValueError(f"not JSON: {token}")

    records = [json.loads(line, parse_constant=strict) for line in path.read_text().splitlines()]
    assert len(records) == len(windows) + 1
    assert all(r["identity"]["distance"] is None for r in records if r["type"] == "track")
    for record in records:
        jsonschema.validate(record, schema)
    with_gait = [r for r in records if r.get("gait")]
    assert with_gait and with_gait[0]["gait"]["non_gait_segments"]
    broken = dict(records[0], route="gait")
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(broken, schema)


def test_partial_file_until_source_completes_and_strips(tmp_path):
    windows: list[TrackWindow] = []
    make_runner(OracleDetector(), progress=False).run([MovingPersonSource("cam", 60)], on_window=windows.append)
    writer = TrackRecordWriter(tmp_path)
    writer.write_window(windows[0])
    assert not writer.is_complete("cam")
    assert list((tmp_path / "tracks").glob("*.jsonl.partial"))
    writer.complete("cam")
    assert writer.is_complete("cam")
    strips = SilhouetteStripWriter(tmp_path)
    paths = [strips.write(w) for w in windows]
    saved = [p for p in paths if p is not None]
    assert saved and all(p.exists() for p in saved)
    record = window_record(windows[-1], ExportOptions())
    assert record["frames"]["count"] == len(windows[-1].sequence)
