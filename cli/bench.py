"""``run_pipeline.py bench NAME [ARGS]``: run ``bench/bench_NAME.py`` (``bench list`` shows them)."""

from __future__ import annotations

import importlib
import sys
from pathlib import Path


def available() -> list[str]:
    import bench

    return sorted(p.stem.removeprefix("bench_") for p in Path(bench.__file__).parent.glob("bench_*.py"))


def main(argv: list[str]) -> int:
    if not argv or argv[0] in ("list", "-h", "--help"):
        print("benchmarks: " + ", ".join(available()))
        print("usage: run_pipeline.py bench NAME [ARGS]  (NAME --help for its options)")
        return 0
    name = argv[0]
    if name not in available():
        print(f"error: unknown benchmark {name!r}; choose one of: {', '.join(available())}", file=sys.stderr)
        return 2
    module = importlib.import_module(f"bench.bench_{name}")
    return int(module.main(argv[1:]) or 0)
