"""Front-end runs kept between identity benchmark runs: exact round trip, keys, refusals."""

from __future__ import annotations

import numpy as np
import pytest

from evaluation.identity import front_cache
from evaluation.identity.front_cache import front_end_key, front_end_run, load_run, save_run
from evaluation.identity.runs import FrontEndRun
from pipeline import app
from pipeline.messages import GaitDetection, GaitSegment, IdentityMatch, SilhouetteSequence, TrackWindow


def window(track: int, index: int, frames: int, rng, gait: bool, appearance: bool, parts: bool) -> TrackWindow:
    sequence = SilhouetteSequence(
        silhouettes=rng.integers(0, 256, (frames, 64, 44), dtype=np.uint8),
        ratios=rng.random(frames).astype(np.float32), boxes=rng.random((frames, 4)).astype(np.float32) * 100,
        frame_indices=np.arange(frames, dtype=np.int64) + 10 * index, pts_s=np.arange(frames) / 25.0 + 0.4 * index,
        frame_size=(240, 320), group_parts=rng.random(frames) < 0.3 if parts else None)
    detection = GaitDetection([GaitSegment(0, frames // 2, 0.87)], 0.5, "gait",
                              [GaitSegment(frames // 2, frames, 0.25)]) if gait else None
    return TrackWindow(f"/videos/cam{track % 2}.mp4", track, index, index == 2, sequence, detection,
                       rng.random((16, 8)).astype(np.float32) if gait else None,
                       rng.random(12).astype(np.float32) if appearance else None,
                       model_versions={"gait": "gar@abc", "reid": "reid@def"},
                       errors=["reid: one crop too small"] if parts else [])


def a_run(seed: int = 0, errors: list[str] | None = None) -> FrontEndRun:
    rng = np.random.default_rng(seed)
    windows = [window(t, i, 5 + 3 * i, rng, gait=(t + i) % 2 == 0, appearance=i != 1, parts=t == 1)
               for t in range(3) for i in range(3)]
    return FrontEndRun(windows, 12.5, 300, errors or [], 4)


def test_a_run_comes_back_exactly(tmp_path):
    run = a_run()
    save_run(tmp_path / "run.npz", run)
    back = load_run(tmp_path / "run.npz")
    assert (back.seconds, back.frames, back.errors, back.batch_size) == (12.5, 300, [], 4)
    assert len(back.windows) == len(run.windows)
    for a, b in zip(run.windows, back.windows):
        assert (a.source_id, a.track_id, a.window_index) == (b.source_id, b.track_id, b.window_index)
        assert a.is_final == b.is_final
        for name in ("silhouettes", "ratios", "boxes", "frame_indices", "pts_s"):
            x, y = getattr(a.sequence, name), getattr(b.sequence, name)
            assert x.dtype == y.dtype and np.array_equal(x, y)
        assert b.sequence.frame_size == (240, 320)
        assert (a.sequence.group_parts is None and b.sequence.group_parts is None) or \
            np.array_equal(a.sequence.group_parts, b.sequence.group_parts)
        assert a.gait == b.gait
        for name in ("gait_embedding", "appearance_embedding"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None and y is None) or (y.dtype == np.float32 and np.array_equal(x, y))
        assert (a.model_versions, a.errors) == (b.model_versions, b.errors)
    assert not list(tmp_path.glob("*.partial*")), "the file is written under another name and moved in place"


def test_windows_with_identities_are_not_front_end_windows(tmp_path):
    run = a_run()
    run.windows[0].identity = IdentityMatch("person-00001", "fused", 0.2, 0.9)
    with pytest.raises(ValueError, match="front-end windows"):
        save_run(tmp_path / "run.npz", run)


def test_an_unreadable_or_foreign_file_is_refused_in_one_line(tmp_path):
    (tmp_path / "broken.npz").write_bytes(b"not a zip")
    with pytest.raises(ValueError, match="not a readable front-end run") as err:
        load_run(tmp_path / "broken.npz")
    assert "\n" not in str(err.value)
    np.savez(tmp_path / "other.npz", meta=np.asarray('{"format": "something-else/1"}'))
    with pytest.raises(ValueError, match="format 'something-else/1'"):
        load_run(tmp_path / "other.npz")


def test_the_key_follows_the_front_end_and_not_the_gallery(tmp_path):
    base = front_end_key(app.load("default", []))
    assert front_end_key(app.load("default", ["gallery.reranker=none", "gallery.merge=false"])) == base
    assert front_end_key(app.load("default", ["segment.backend=pose_refine"])) != base
    assert front_end_key(app.load("default", ["gait.batch_frames=240"])) != base
    assert front_end_key(app.load("default", []), truth_masks=_file(tmp_path / "truth.json", b"{}")) != base


def test_the_key_follows_the_content_of_the_files_the_config_names(tmp_path):
    weights = _file(tmp_path / "reid.pt", b"one")
    config = app.load("default", [f"reid.appearance.weights={weights}"])
    first = front_end_key(config)
    weights.write_bytes(b"two")
    assert front_end_key(config) != first


def test_the_key_follows_the_front_end_code_and_shipped_weights(tmp_path):
    root = tmp_path / "repo"
    tracker = _file(root / "stages" / "track.py", b"A = 1\n")
    _file(root / "stages" / "gallery" / "stage.py", b"B = 1\n")
    weights = _file(root / "weights" / "gar.pt", b"w1")
    config = app.load("default", [])
    first = front_end_key(config, root=root)
    (root / "stages" / "gallery" / "stage.py").write_text("B = 2\n")
    assert front_end_key(config, root=root) == first, "the gallery's code does not change the windows"
    tracker.write_text("A = 2\n")
    second = front_end_key(config, root=root)
    assert second != first
    weights.write_bytes(b"w2")
    assert front_end_key(config, root=root) != second


def test_the_key_is_the_same_in_another_checkout_and_after_a_gallery_side_refit(tmp_path):
    def checkout(folder):
        _file(folder / "stages" / "track.py", b"A = 1\n")
        _file(folder / "weights" / "gar.pt", b"w1")
        _file(folder / "weights" / "reid_synth.pt", b"r1")
        for name in ("score_fusion.params.json", "cargait_site.pt", "gait_projection_site.npz", "clip_gar.pt"):
            _file(folder / "weights" / name, b"g1")
        return folder

    config = app.load("default", [])
    first, second = checkout(tmp_path / "one"), checkout(tmp_path / "two")
    key = front_end_key(config, root=first)
    assert front_end_key(config, root=second) == key, "the same files in another folder: the same runs"
    for name in ("score_fusion.params.json", "cargait_site.pt", "gait_projection_site.npz", "clip_gar.pt"):
        (first / "weights" / name).write_bytes(b"g2")
    assert front_end_key(config, root=first) == key, "weights only the gallery side reads do not change the windows"
    (first / "weights" / "reid_synth.pt").write_bytes(b"r2")
    assert front_end_key(config, root=first) != key


def test_a_run_is_made_once_then_read_back_and_made_again_when_asked(tmp_path, monkeypatch):
    calls = []

    def fake_front_end(config, videos, truth_masks=None):
        calls.append(videos)
        return a_run(seed=len(calls))

    monkeypatch.setattr(front_cache, "run_front_end_isolated", fake_front_end)
    config = app.load("default", [])
    first, cached = front_end_run(config, ["a.mp4"], tmp_path)
    assert not cached and len(calls) == 1
    again, cached = front_end_run(config, ["a.mp4"], tmp_path)
    assert cached and len(calls) == 1
    assert np.array_equal(again.windows[3].sequence.silhouettes, first.windows[3].sequence.silhouettes)
    fresh, cached = front_end_run(config, ["a.mp4"], tmp_path, reuse=False)
    assert not cached and len(calls) == 2
    # The fresh run replaced the kept one.
    kept, cached = front_end_run(config, ["a.mp4"], tmp_path)
    assert cached and np.array_equal(kept.windows[3].sequence.silhouettes, fresh.windows[3].sequence.silhouettes)


def test_a_broken_cached_run_is_made_again_and_a_run_with_errors_is_not_kept(tmp_path, monkeypatch, caplog):
    errors: list[str] = []
    monkeypatch.setattr(front_cache, "run_front_end_isolated", lambda c, v, t=None: a_run(errors=errors))
    config = app.load("default", [])
    path = front_cache.cached_run_path(tmp_path, front_end_key(config))
    path.parent.mkdir(parents=True)
    path.write_bytes(b"truncated")
    run, cached = front_end_run(config, ["a.mp4"], tmp_path)
    assert not cached and "running the front end again" in caplog.text
    assert load_run(path).frames == 300, "the broken file was replaced"
    path.unlink()
    errors.append("b.mp4: cannot open")
    run, cached = front_end_run(config, ["a.mp4", "b.mp4"], tmp_path)
    assert run.errors and not path.exists()


def _file(path, data: bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def test_only_the_most_recently_used_runs_are_kept(tmp_path, monkeypatch):
    import os

    monkeypatch.setattr(front_cache, "run_front_end_isolated", lambda c, v, t=None: a_run())
    folder = tmp_path / front_cache.FOLDER
    folder.mkdir()
    for i in range(front_cache.KEEP):  # older runs of other front ends
        (folder / f"old{i}.npz").write_bytes(b"x")
        os.utime(folder / f"old{i}.npz", (1000 + i, 1000 + i))
    front_end_run(app.load("default", []), ["a.mp4"], tmp_path)
    kept = sorted(p.name for p in folder.glob("*.npz"))
    assert len(kept) == front_cache.KEEP and "old0.npz" not in kept and "old1.npz" in kept
