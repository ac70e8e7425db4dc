"""How much auto-enrolment depends on the order in which the cameras' tracks arrive.

Auto-enrolment decides each finished track against the gallery as it is then, so a site's identities
depend on which sighting of a person came first. A run merges its files by video time, which fixes
one order; cameras whose clocks were started a few seconds apart would give another, equally
plausible one. This replays a rendered site's windows (``training.site_windows``, cached) through the
gallery matcher in the order as emitted and in orders with each camera's clock shifted by a random
offset (each camera keeps its own order), and prints the link scores of each (consolidation as
configured in the score-fusion parameters). The spread is the noise floor of any comparison of
auto-enrol link scores on that site.

    python -m evaluation.enrol_order --site configs/synth/fusion_fit_c.yaml --orders 4 --max-offset 3
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from evaluation.identity.runs import EnrolOrders, clock_shifted_order
from stages.gallery.scoring import CONSOLIDATE, ScoreModel
from stages.gallery.search import load_gait_rescorer
from stages.gallery.stage import DEFAULT_RERANKER, DEFAULT_SCORES
from training.fusion import replay_auto_enrol, replay_options
from training.site_windows import embedding_versions, site_fps, site_windows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m evaluation.enrol_order", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--site", required=True, help="rendered site config (configs/synth/*.yaml)")
    parser.add_argument("--orders", type=int, default=4, help="orders with shifted clocks besides the emitted one")
    parser.add_argument("--max-offset", type=float, default=3.0, help="largest clock shift, seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scores", default=str(DEFAULT_SCORES), help="score-fusion parameters")
    parser.add_argument("--cache", default="~/.cache/gaitscope/fusion_sites")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    model = ScoreModel.load(args.scores)
    key = ScoreModel.threshold_key("fused", load_gait_rescorer(DEFAULT_RERANKER).scorer, "mean")
    if f"link:{key}" not in model.thresholds:
        parser.error(f"{args.scores}: no linking threshold {key} (fit it with python -m training.fusion)")
    site = site_windows(Path(args.site), args.cache, embedding_versions())
    fps = site_fps(args.site)
    options = replay_options(str(DEFAULT_RERANKER), model.source_prior)
    consolidate = model.thresholds.get(f"{CONSOLIDATE}:{key}")
    f1s = []
    shifts = EnrolOrders(args.orders, args.max_offset, args.seed).shifts(site.camera.tolist())
    for n, offsets in enumerate([{}, *shifts]):
        trial = site if n == 0 else site.in_order(clock_shifted_order(site.t_end, site.camera, offsets))
        links = replay_auto_enrol(trial, fps, model, options, consolidate=(consolidate,))[0]
        f1s.append(links["f1"])
        print(json.dumps({"order": "as emitted" if n == 0 else "shifted clocks",
                          "offsets_s": {c: round(o, 2) for c, o in offsets.items()}, **links}), flush=True)
    spread = {"min": min(f1s), "median": round(float(np.median(f1s)), 4), "max": max(f1s)}
    print(json.dumps({"site": site.site, "link_f1": spread}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
