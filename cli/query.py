"""``run_pipeline.py query``: print the exported track records whose gait attributes match a filter.

    python run_pipeline.py query TRACKS.jsonl --where "limping=yes,height=tall" [--min-probability 0.5] [--out FILE]

Filter syntax: :mod:`stages.attributes.query`. Matching lines are printed unchanged.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path

from cli.parsing import ArgumentParser
from stages.attributes.query import filter_records, parse_attribute_filter


def main(argv: list[str] | None = None) -> int:
    parser = ArgumentParser(
        prog="query", description="Print the exported track records whose gait attributes match a filter."
    )
    parser.add_argument("tracks", help="JSON Lines file of exported tracks")
    parser.add_argument("--where", required=True, help='filter, e.g. "limping=yes,height=tall|very tall"')
    parser.add_argument("--min-probability", type=float, default=0.0, help="minimum probability per term (0..1)")
    parser.add_argument("--out", default=None, help="write matches here instead of stdout")
    args = parser.parse_args(argv)
    try:
        filt = parse_attribute_filter(args.where)
    except ValueError as exc:
        parser.error(str(exc))
    path = Path(args.tracks)
    if not path.is_file():
        parser.error(f"no such file: {path}")
    count = 0
    with open(path) as src, open(args.out, "w") if args.out else contextlib.nullcontext(sys.stdout) as out:
        try:
            for line in filter_records(src, filt, args.min_probability):
                out.write(line)
                count += 1
        except ValueError as exc:
            print(f"query: {path}: {exc}", file=sys.stderr)
            return 1
    print(f"{count} record(s) match {filt}", file=sys.stderr)
    return 0
