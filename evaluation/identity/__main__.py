"""``python -m evaluation.identity --out OUT [--quick]``: the end-to-end identity benchmark.

Renders the benchmark's sites (cached), runs every variant of the chain over them and scores its
identities against the ground truth: closed-set cross-camera rank-1 / mAP (same and changed
clothes), open-set identification at a false-accept rate, auto-enrol link precision / recall / F1
and identity counts. Writes OUT/identity.json and OUT/identity.md, and prints the table. Front-end
runs are kept beside the rendered sites and read back while the front end stays the same
(``evaluation.identity.front_cache``); ``--fresh`` runs them again.

    python -m evaluation.identity --out out/identity
    python -m evaluation.identity --quick --out out/identity-quick
    python -m evaluation.identity --variants default,no_cargait --sites plaza --out out/identity
    python -m evaluation.identity --quick --orders 4 --out out/identity-quick   # + link F1 over 5 orders
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
from pathlib import Path

from evaluation.identity.benchmark import DEFAULT_BENCH, BenchConfig, markdown_table, run_benchmark
from evaluation.identity.runs import EnrolOrders
from evaluation.identity.sites import DEFAULT_CACHE


def main(argv: list[str] | None = None) -> int:
    import evaluation.identity as package

    parser = argparse.ArgumentParser(prog="python -m evaluation.identity", description=__doc__,
                                     epilog="What the numbers mean" + package.__doc__.split("What the numbers mean", 1)[1],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, help="folder for identity.json and identity.md")
    parser.add_argument("--config", default=str(DEFAULT_BENCH), help="benchmark config (sites and variants)")
    parser.add_argument("--quick", action="store_true", help="the config's small sites only (a few minutes)")
    parser.add_argument("--variants", default=None, help="comma-separated variant names (default: all)")
    parser.add_argument("--sites", default=None, help="comma-separated site names (default: the config's sites)")
    parser.add_argument("--cache", default=str(DEFAULT_CACHE), help="where rendered sites are kept between runs")
    parser.add_argument("--orders", type=int, default=None,
                        help="auto-enrol also replayed in N orders with shifted camera clocks (default: the config's)")
    parser.add_argument("--fresh", action="store_true",
                        help="run the front end again even where an earlier run with the same front end was kept")
    parser.add_argument("--verbose", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("evaluation.identity").setLevel(logging.INFO)
    try:
        bench = BenchConfig.load(args.config)
        variants = [v.strip() for v in args.variants.split(",") if v.strip()] if args.variants else None
        sites = [v.strip() for v in args.sites.split(",") if v.strip()] if args.sites else None
        orders = None
        if args.orders is not None:
            orders = EnrolOrders.from_dict({**dataclasses.asdict(bench.enrol_orders), "count": args.orders})
        result = run_benchmark(bench, quick=args.quick, cache=args.cache, variants=variants, site_names=sites,
                               enrol_orders=orders, reuse_front_end=not args.fresh)
    except (ValueError, TypeError, FileNotFoundError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    table = markdown_table(result)
    (out / "identity.json").write_text(json.dumps(result, indent=1, allow_nan=False) + "\n")
    (out / "identity.md").write_text(f"# Identity benchmark{' (quick)' if args.quick else ''}\n\n{table}\n"
                                     f"{len(result['sites'])} site(s), {result['seconds']:.0f} s. "
                                     "What each column means: evaluation/identity/__init__.py.\n")
    print(table)
    print(f"{len(result['sites'])} site(s) in {result['seconds']:.0f} s -> {out / 'identity.json'}, {out / 'identity.md'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
