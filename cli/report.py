"""``run_pipeline.py report OUT``: the HTML report of an existing output folder (see pipeline/report.py)."""

from __future__ import annotations

import argparse

from pipeline.report import ReportLimits, write_report


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="run_pipeline.py report",
        description="Write OUT/report.html: one self-contained page of who was seen where, from a run's outputs.",
    )
    parser.add_argument("out", help="a run's output folder (holds tracks/ and summary.json)")
    parser.add_argument("--output", default=None, help="where to write the page (default: OUT/report.html)")
    parser.add_argument("--crops-per-identity", type=int, default=ReportLimits.crops_per_identity)
    parser.add_argument("--strips-per-identity", type=int, default=ReportLimits.strips_per_identity)
    parser.add_argument(
        "--unknown-with-pictures",
        type=int,
        default=ReportLimits.unknown_cards_with_pictures,
        help="unknown tracks whose cards carry pictures (the longest first)",
    )
    args = parser.parse_args(argv)
    limits = ReportLimits(args.crops_per_identity, args.strips_per_identity, args.unknown_with_pictures)
    path = write_report(args.out, args.output, limits)
    print(f"report: {path} ({path.stat().st_size / 1e6:.2f} MB)")
    return 0
