"""Front-half and whole-chain throughput, detector cost and memory, per clip.

For each clip: decode-only frames per second (the baseline, measured in the same process), the
detector alone in milliseconds per frame (frames held in memory, one warm-up batch first), the front
half (decode -> detect -> track -> segment -> silhouettes) in frames per second and as a ratio to
decode-only, and with ``--whole-chain`` the full configured chain (gait, ReID, gallery, attributes)
in frames per second and as a ratio to the clip's own frame rate (>= 1 keeps up with real time).
Every speed is also given as CPU milliseconds per frame (all threads of the process): on a shared,
loaded machine wall-clock speeds swing with the other jobs while CPU time barely moves, and
``2000 / CPU ms`` is what two free cores could sustain when the stage threads keep both busy.
Peak RSS is the process's; run one backend per process for a clean figure. With ``--soak-minutes``
it loops the clip for that many minutes of video and reports the RSS growth after warm-up (target:
flat, < 50 MB).

    python -m bench.bench_front_half ../shared/data/videos/*.mp4 --backend classic
    GAITSCOPE_MODELS=../shared/models python -m bench.bench_front_half ../shared/data/videos/*.mp4 \\
        --backend yolox --whole-chain
    python -m bench.bench_front_half CLIP --backend yolox --option detect_every=2
    python -m bench.bench_front_half CLIP --backend yolo --model yolo11n-seg.yaml --option image_size=640
    python -m bench.bench_front_half CLIP --backend classic --soak-minutes 10
"""

from __future__ import annotations

import argparse
import resource
import time
from pathlib import Path
from typing import Any

import yaml

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


def build_detector(backend: str, options: dict[str, Any]) -> tuple[str, Any]:
    """(backend name, detector) for a registered backend, or ``auto``'s choice."""
    from stages.catalog import DETECTORS
    from stages.detect import build_auto_detector

    if backend == "auto":
        return build_auto_detector(options)
    return backend, DETECTORS.load(backend)(**options)


def build_front_half(detector: Any) -> tuple[list[NamedStage], NamedStage]:
    from stages.catalog import SEGMENTERS, TRACKERS
    from stages.tracklets import TrackletAssembler

    return (
        [
            NamedStage("detect", detector, FrameResult),
            NamedStage("track", TRACKERS.load("bytetrack")(), FrameResult),
            NamedStage("segment", SEGMENTERS.load("detector")(), FrameResult),
        ],
        NamedStage("tracklets", TrackletAssembler(), FrameResult),
    )


class Speed:
    """Frames over the wall-clock and CPU seconds (all threads of the process) one measurement took."""

    def __init__(self) -> None:
        self.frames = 0
        self._wall, self._cpu = time.perf_counter(), time.process_time()

    def stop(self, frames: int) -> Speed:
        self.frames = frames
        self.wall_s, self.cpu_s = time.perf_counter() - self._wall, time.process_time() - self._cpu
        return self

    @property
    def fps(self) -> float:
        return self.frames / max(self.wall_s, 1e-9)

    @property
    def cpu_ms(self) -> float:
        return 1000 * self.cpu_s / max(self.frames, 1)


def _run(
    chain: tuple[list[NamedStage], NamedStage, list[NamedStage]],
    path: str,
    frames: int,
    rss_samples: list | None = None,
) -> tuple[Speed, dict[str, float]]:
    frame_stages, assembler, track_stages = chain
    runner = Runner(frame_stages, assembler, track_stages, RunnerOptions(progress=False))

    def on_window(_window) -> None:
        if rss_samples is not None:
            rss_samples.append((time.perf_counter(), rss_mb()))

    speed = Speed()
    result = runner.run([LoopedSource(path, frames)], on_window=on_window)
    return speed.stop(sum(result.frames.values())), {s["stage"]: s["ms_per_item"] for s in result.stage_stats}


def decode_only(path: str, frames: int) -> Speed:
    from bench.decode_baseline import decode_only_fps

    speed = Speed()
    fps = decode_only_fps(path, max_frames=frames)
    speed.stop(0)
    speed.frames = round(fps * speed.wall_s)  # the clip may be shorter than ``frames``
    return speed


def front_half_fps(path: str, detector: Any, frames: int, rss_samples: list | None = None) -> tuple[Speed, dict]:
    return _run((*build_front_half(detector), []), path, frames, rss_samples)


def detector_ms(path: str, detector: Any, frames: int, batch_size: int = 8) -> Speed:
    """``detector.process`` alone over runner-sized batches of decoded frames (after a warm-up batch)."""
    images = []
    with open_source(path, SourceOptions(max_frames=frames + batch_size)) as source:
        images = [item for item in source if isinstance(item, Frame)]
    import supervision as sv

    batches = [
        [
            FrameResult(Frame("bench", f.index, f.pts_s, f.image), sv.Detections.empty())
            for f in images[i : i + batch_size]
        ]
        for i in range(0, len(images), batch_size)
    ]
    detector.process(batches[0])  # warm-up: lazy initialisation, first-call compilation
    speed = Speed()
    for batch in batches[1:]:
        detector.process(batch)
    return speed.stop(sum(len(batch) for batch in batches[1:]))


def whole_chain_fps(
    path: str, backend: str, options: dict[str, Any], config_name: str | None, frames: int
) -> tuple[Speed, dict]:
    """The configured chain with its detect section replaced by ``backend`` + ``options`` (and that
    detector's settings)."""
    from pipeline import app
    from pipeline.config import options_from

    config = app.load(config_name).with_detector(backend, options)
    app.set_compute_threads(options_from(RunnerOptions, config.runner, "runner"))
    built = app.build_stages(config)
    try:
        return _run((built.frame_stages, built.assembler, built.track_stages), path, frames)
    finally:
        built.close()


def clip_fps(path: str) -> float:
    import av

    with av.open(path) as container:
        return float(container.streams.video[0].average_rate or 25)


def main(argv: list[str] | None = None) -> int:
    from stages.catalog import DETECTORS

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("clips", nargs="+")
    parser.add_argument("--backend", choices=[*DETECTORS.names(), "auto"], default="classic")
    parser.add_argument(
        "--option",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="detector option, repeatable (e.g. --option detect_every=2, --option models_dir=DIR)",
    )
    parser.add_argument(
        "--model", default=None, help="the backend's model file (yolo: weights; yolox, openvino: model)"
    )
    parser.add_argument("--frames", type=int, default=300, help="frames for each speed measurement")
    parser.add_argument("--whole-chain", action="store_true", help="also time the whole configured chain")
    parser.add_argument("--config", default=None, help="pipeline config for --whole-chain (default: default)")
    parser.add_argument("--soak-minutes", type=float, default=0.0, help="loop this many minutes of video for RSS")
    args = parser.parse_args(argv)
    options = {key: yaml.safe_load(value) for key, _, value in (o.partition("=") for o in args.option)}
    if args.model is not None:
        options["weights" if args.backend == "yolo" else "model"] = args.model
    for clip in args.clips:
        if not Path(clip).is_file():
            parser.error(f"clip not found: {clip}")

    for clip in args.clips:
        backend, detector = build_detector(args.backend, options)
        decode = decode_only(clip, args.frames)
        alone = detector_ms(clip, build_detector(args.backend, options)[1], min(args.frames, 120))
        front, per_stage = front_half_fps(clip, detector, args.frames)
        rate = clip_fps(clip)
        print(f"clip: {clip} ({rate:g} fps)  backend: {backend} {options or ''}")
        print(f"  decode-only      : {decode.fps:8.1f} frames/s   CPU {decode.cpu_ms:7.1f} ms/frame")
        print(f"  detector alone   : {1000 / alone.fps:8.1f} ms/frame   CPU {alone.cpu_ms:7.1f} ms/frame")
        print(
            f"  front half       : {front.fps:8.1f} frames/s   CPU {front.cpu_ms:7.1f} ms/frame   "
            f"ratio to decode-only: {front.fps / decode.fps:.3f} (CPU {decode.cpu_ms / front.cpu_ms:.3f})   "
            f"x real time: {front.fps / rate:.2f} (2 free cores: {2000 / front.cpu_ms / rate:.2f})"
        )
        print("  per stage (ms/frame): " + ", ".join(f"{k} {v:.1f}" for k, v in per_stage.items()))
        if args.whole_chain:
            whole, stages = whole_chain_fps(clip, backend, options, args.config, args.frames)
            print(
                f"  whole chain      : {whole.fps:8.1f} frames/s   CPU {whole.cpu_ms:7.1f} ms/frame   "
                f"x real time: {whole.fps / rate:.2f} (2 free cores: {2000 / whole.cpu_ms / rate:.2f})"
            )
            print("  per stage (ms/item): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        print(f"  peak RSS so far  : {peak_rss_mb():8.1f} MB")
        if args.soak_minutes > 0:
            frames = int(args.soak_minutes * 60 * rate)
            samples: list[tuple[float, float]] = []
            soak, _ = front_half_fps(clip, build_detector(args.backend, options)[1], frames, samples)
            warm = [mb for _, mb in samples[len(samples) // 5 :]] or [rss_mb()]
            print(
                f"  soak             : {frames} frames ({args.soak_minutes:g} min of video) at {soak.fps:.1f} frames/s"
            )
            print(
                f"  RSS after warm-up: start {warm[0]:.1f} MB, end {warm[-1]:.1f} MB, max {max(warm):.1f} MB, "
                f"growth {warm[-1] - warm[0]:+.1f} MB (target < 50 MB)"
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
