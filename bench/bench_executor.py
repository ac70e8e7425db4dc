"""Archive throughput: video-hours per hour of a folder of clips, here vs on Ray (local mode).

Both runs process the same clips with the same configuration (fresh auto-enrolling galleries), one
after the other in this process. The Ray run also reports what a user needs to size a cluster:

- per-source cost: a worker's seconds on one source (stages built once per worker, not counted);
- Ray's overhead per source: seconds from handing a source to a worker to having written its
  outputs, minus that cost (scheduling, shipping records and pictures, writing them);
- start-up: starting or joining Ray and building the stages in every worker (once per batch).

With W workers in all (about one per core on each machine) a batch of N sources of D seconds of
video each takes about ``startup + ceil(N / W) * (cost + overhead)``, i.e. about
``W * D / (cost + overhead)`` video-hours per hour once N is large.

    python -m bench.bench_executor [--clips DIR] [--render 4] [--seconds 4] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")


def render_clips(folder: Path, count: int, seconds: float) -> None:
    """``count`` clips: two-camera sites of the test configuration with successive seeds."""
    import yaml

    from pipeline.app import PROJECT_ROOT
    from synth.scene import SiteConfig, write_site

    base = yaml.safe_load((PROJECT_ROOT / "configs" / "synth" / "two_camera_site.yaml").read_text())
    for i in range((count + 1) // 2):
        write_site(SiteConfig.from_dict({**base, "seed": 100 + i, "duration_s": seconds}), folder / f"site{i}")


def video_seconds(folder: Path) -> float:
    from pipeline.progress import probe_duration
    from pipeline.sources import expand_sources

    return sum(probe_duration(s) or 0.0 for s in expand_sources([str(folder)]))


def timed_run(clips: Path, out: Path, executor=None):
    from pipeline import app

    config = app.load(
        "default", [f"gallery.gallery={out / 'gallery'}", "gallery.auto_enrol=true", "runner.progress=false"]
    )
    started = time.perf_counter()
    outputs = app.run([str(clips)], out / "run", config, executor=executor)
    return time.perf_counter() - started, outputs


def stage_build_seconds(folder: Path) -> float:
    """Seconds to build the default stages once in this process (what every run pays first)."""
    from pipeline import app

    config = app.load("default", [f"gallery.gallery={folder / 'gallery'}"])
    started = time.perf_counter()
    app.build_stages(config).close()
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench executor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", default=None, help="folder of clips (default: render some)")
    parser.add_argument("--render", type=int, default=4, help="clips to render when --clips is not given")
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each rendered clip")
    parser.add_argument("--workers", type=int, default=2, help="Ray workers")
    args = parser.parse_args(argv)

    from pipeline.ray_executor import RayExecutor, import_ray

    import_ray()
    with tempfile.TemporaryDirectory(prefix="bench-executor-") as tmp:
        tmp_path = Path(tmp)
        clips = Path(args.clips) if args.clips else tmp_path / "clips"
        if not args.clips:
            render_clips(clips, args.render, args.seconds)
        video_s = video_seconds(clips)
        stage_build_seconds(tmp_path / "warm-up")  # imports and first loads, which the local run then skips
        build_s = stage_build_seconds(tmp_path / "build")
        local_s, local = timed_run(clips, tmp_path / "local")
        ray_s, ray_out = timed_run(clips, tmp_path / "ray", RayExecutor(workers=args.workers))
        result = ray_out.result
        sources = len(ray_out.summary["sources"])

    cost = statistics.mean(result.source_seconds.values())
    overhead = statistics.mean(result.dispatch_seconds[s] - result.source_seconds[s] for s in result.source_seconds)
    per_source_video = video_s / sources
    print(
        f"{sources} clips, {video_s:.1f} s of video ({per_source_video:.1f} s each), "
        f"{local.summary['frames_total']} frames"
    )
    print(
        f"  local (one process)        : {local_s:7.1f} s  {video_s / local_s:6.3f} video-h/h  "
        f"({video_s / (local_s - build_s):.3f} without building the stages, {build_s:.1f} s)"
    )
    print(
        f"  ray local mode, {args.workers} workers : {ray_s:7.1f} s  {video_s / ray_s:6.3f} video-h/h  "
        f"(x{local_s / ray_s:.2f} of local)"
    )
    steady = args.workers * per_source_video / (cost + overhead)
    print(
        f"  ray start-up (start Ray, build the stages in every worker): {result.startup_seconds:.1f} s; "
        f"after it {steady:.3f} video-h/h (x{steady / (video_s / (local_s - build_s)):.2f} of local without its build)"
    )
    print(f"  per-source cost on a worker: {cost:.1f} s ({per_source_video / cost:.3f} video-h/h per worker)")
    print(f"  ray overhead per source    : {overhead:.2f} s ({100 * overhead / cost:.1f} % of the cost)")
    rate = per_source_video / (cost + overhead)
    print(
        f"  expected at scale: {rate:.3f} video-h/h per worker (one per core), e.g. "
        + ", ".join(f"{m} x {k} cores = {m * k * rate:.1f}" for m, k in ((1, 8), (4, 8), (16, 16)))
        + " video-h/h"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
