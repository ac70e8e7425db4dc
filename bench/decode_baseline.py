"""Decode-only speed: the baseline that pipeline benchmarks divide by.

``decode_only_fps`` reads a clip through ``pipeline.sources`` exactly as a pipeline run does (decode
thread, bounded queue, BGR conversion) and does nothing with the frames. Run as a script, it also
times a plain single-threaded PyAV loop over the same frames, so the ratio shows what the source
machinery costs or gains (threaded decoding overlapping the conversion)::

    python -m bench.decode_baseline ../shared/data/videos/campus_road_480x360.mp4 [--frames 500]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import av

from pipeline.messages import Frame, SourceEvent
from pipeline.sources import SourceOptions, open_source


def decode_only_fps(path: str | Path, max_frames: int | None = None) -> float:
    """Frames per second of decoding ``path`` (up to ``max_frames`` frames) with the pipeline's sources."""
    frames = 0
    started = time.perf_counter()
    with open_source(str(path), SourceOptions(max_frames=max_frames)) as source:
        for item in source:
            if isinstance(item, Frame):
                frames += 1
            elif isinstance(item, SourceEvent) and item.kind == "error":
                raise RuntimeError(item.message)
    elapsed = time.perf_counter() - started
    if frames == 0:
        raise RuntimeError(f"{path}: no frames decoded")
    return frames / elapsed


def plain_pyav_fps(path: str | Path, max_frames: int | None = None) -> float:
    """Frames per second of a bare PyAV decode + BGR conversion loop in the calling thread."""
    frames = 0
    started = time.perf_counter()
    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            frame.to_ndarray(format="bgr24")
            frames += 1
            if max_frames is not None and frames >= max_frames:
                break
    return frames / (time.perf_counter() - started)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+")
    parser.add_argument("--frames", type=int, default=None, help="decode at most this many frames per clip")
    parser.add_argument("--repeat", type=int, default=3, help="best of this many runs")
    args = parser.parse_args(argv)
    for clip in args.clips:
        if not Path(clip).is_file():
            parser.error(f"clip not found: {clip}")
        plain = max(plain_pyav_fps(clip, args.frames) for _ in range(args.repeat))
        source = max(decode_only_fps(clip, args.frames) for _ in range(args.repeat))
        print(f"{clip}\n  plain PyAV loop : {plain:8.1f} frames/s\n"
              f"  pipeline source : {source:8.1f} frames/s   ratio to plain: {source / plain:.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
