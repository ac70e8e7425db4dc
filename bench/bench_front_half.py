"""Front-half throughput and memory: decode -> detect -> track -> segment -> silhouettes.

Prints frames per second of the front half next to decode-only speed of the same clip, measured in
the same process (the ratio is what to compare across machines), and the peak RSS. With
``--soak-minutes`` it loops the clip for that many minutes of video and reports the RSS growth
after warm-up (target: flat, < 50 MB).

    python -m bench.bench_front_half ../shared/data/videos/campus_road_480x360.mp4 --backend classic
    python -m bench.bench_front_half CLIP --backend yolo --model yolo11n-seg.yaml --imgsz 640
    python -m bench.bench_front_half CLIP --backend classic --soak-minutes 10
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path

from pipeline.messages import Frame, FrameResult, SourceEvent
from pipeline.runner import NamedStage, Runner, RunnerOptions
from pipeline.sources import SourceOptions, open_source


def rss_mb() -> float:
    """Current resident set size in MB (Linux)."""
    with open("/proc/self/statm") as fh:
        pages = int(fh.read().split()[1])
    return pages * resource.getpagesize() / 1e6


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3


class LoopedSource:
    """A file played again and again as one endless source, up to ``total_frames`` frames."""

    def __init__(self, path: str, total_frames: int) -> None:
        self.path, self.total_frames = path, total_frames
        self.source_id = f"{path}#loop"
        self._current = None
        self._closed = False

    def __iter__(self):
        delivered, offset_s, index = 0, 0.0, 0
        while delivered < self.total_frames and not self._closed:
            self._current = open_source(self.path, SourceOptions())
            last_pts = 0.0
            for item in self._current:
                if isinstance(item, SourceEvent):
                    continue
                last_pts = item.pts_s
                yield Frame(self.source_id, index, offset_s + item.pts_s, item.image)
                index += 1
                delivered += 1
                if delivered >= self.total_frames:
                    break
            self._current.close()
            offset_s += last_pts + 0.1

    def close(self) -> None:
        self._closed = True
        if self._current is not None:
            self._current.close()


def build_front_half(backend: str, model: str, imgsz: int):
    from stages.catalog import DETECTORS, SEGMENTERS, TRACKERS
    from stages.tracklets import TrackletAssembler

    if backend == "yolo":
        detector = DETECTORS.load("yolo")(weights=model, image_size=imgsz)
    else:
        detector = DETECTORS.load("classic")()
    return (
        [
            NamedStage("detect", detector, FrameResult),
            NamedStage("track", TRACKERS.load("bytetrack")(), FrameResult),
            NamedStage("segment", SEGMENTERS.load("detector")(), FrameResult),
        ],
        NamedStage("tracklets", TrackletAssembler(), FrameResult),
    )


def front_half_fps(path: str, backend: str, model: str, imgsz: int, frames: int, rss_samples: list | None = None) -> tuple[float, dict]:
    frame_stages, assembler = build_front_half(backend, model, imgsz)
    runner = Runner(frame_stages, assembler, [], RunnerOptions(progress=False))
    source = LoopedSource(path, frames)
    count = [0]

    def on_window(_window) -> None:
        count[0] += 1
        if rss_samples is not None:
            rss_samples.append((time.perf_counter(), rss_mb()))

    start = time.perf_counter()
    result = runner.run([source], on_window=on_window)
    elapsed = time.perf_counter() - start
    return sum(result.frames.values()) / elapsed, {s["stage"]: s["ms_per_item"] for s in result.stage_stats}


def main(argv: list[str] | None = None) -> int:
    from bench.decode_baseline import decode_only_fps

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clip")
    parser.add_argument("--backend", choices=["classic", "yolo"], default="classic")
    parser.add_argument("--model", default="yolo11n-seg.yaml", help="YOLO weights or YAML (yolo backend)")
    parser.add_argument("--imgsz", type=int, default=640)
    parser.add_argument("--frames", type=int, default=300, help="frames for the speed measurement")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="loop this many minutes of video for RSS")
    args = parser.parse_args(argv)
    if not Path(args.clip).is_file():
        parser.error(f"clip not found: {args.clip}")

    decode_fps = decode_only_fps(args.clip, max_frames=args.frames)
    fps, per_stage = front_half_fps(args.clip, args.backend, args.model, args.imgsz, args.frames)
    print(f"clip: {args.clip}  backend: {args.backend}{' ' + args.model if args.backend == 'yolo' else ''}")
    print(f"decode-only      : {decode_fps:8.1f} frames/s")
    print(f"front half       : {fps:8.1f} frames/s   ratio to decode-only: {fps / decode_fps:.3f}")
    print("per stage (ms/frame): " + ", ".join(f"{k} {v:.1f}" for k, v in per_stage.items()))
    print(f"peak RSS         : {peak_rss_mb():8.1f} MB")
    if args.soak_minutes > 0:
        import av

        with av.open(args.clip) as container:
            rate = float(container.streams.video[0].average_rate or 25)
        frames = int(args.soak_minutes * 60 * rate)
        samples: list[tuple[float, float]] = []
        soak_fps, _ = front_half_fps(args.clip, args.backend, args.model, args.imgsz, frames, samples)
        warm = [mb for _, mb in samples[len(samples) // 5 :]] or [rss_mb()]
        print(f"soak             : {frames} frames ({args.soak_minutes:g} min of video) at {soak_fps:.1f} frames/s")
        print(f"RSS after warm-up: start {warm[0]:.1f} MB, end {warm[-1]:.1f} MB, max {max(warm):.1f} MB, "
              f"growth {warm[-1] - warm[0]:+.1f} MB (target < 50 MB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
