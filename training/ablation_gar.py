"""GAR ablation on synthetic walkers (GADER table 5): plain vs ratio attention vs distillation vs both.

    python -m training.ablation_gar --config configs/train/gar_synth_ablation.yaml --out /tmp/gar_ablation.json

Each variant trains from the same recipe (ordered clips, so the ratio conv1d sees time) on the
training identities and is evaluated on held-out identities: gallery = "nm" sequences, probes =
"bg" and "cl" sequences; Rank-1, mAP and TPR at FPR 1e-2 (GADER's verification number), euc metric.
"""

from __future__ import annotations

import argparse
import copy
import json
from pathlib import Path

import torch

from evaluation.metrics import rank_metrics, tpr_at_fpr
from stages.gait.distance import part_distance
from stages.gait.embedding import embed_sequences
from stages.gait.weights import load_gait_model
from training.gait import load_recipe, train
from training.synthetic import synthetic_arrays

VARIANTS = {"plain": (False, False), "ratio": (True, False), "distill": (False, True), "ratio+distill": (True, True)}


def evaluate_synthetic(weights: Path, test: dict) -> dict:
    model, _ = load_gait_model(weights)
    use_ratios = model.config.ratio_attention
    emb = embed_sequences(model, [(s, r if use_ratios else None) for s, r in zip(test["silhouettes"], test["ratios"])])
    gallery = test["condition"] == "nm"
    probe = ~gallery
    dist = part_distance(emb[probe], emb[gallery])
    r = rank_metrics(dist, test["identity"][probe], test["identity"][gallery])
    tpr = tpr_at_fpr(dist, test["identity"][probe], test["identity"][gallery], (1e-2,))
    return {"rank1": round(100 * r.rank(1), 2), "map": round(100 * r.map, 2), "tpr@1e-2": round(100 * tpr[1e-2], 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--variants", nargs="*", default=list(VARIANTS))
    args = ap.parse_args()
    base = load_recipe(args.config)
    t = base["data"]["test"]
    test = synthetic_arrays(t["identities"], t["sequences_per_identity"], t["frames"], t["seed"], t["first_identity"])
    results = {}
    for name in args.variants:
        ratio, distill = VARIANTS[name]
        cfg = copy.deepcopy(base)
        cfg["data"].pop("test")
        cfg["model"]["ratio_attention"] = ratio
        cfg["loss"]["distill"] = distill
        run = Path(cfg["train"]["out_dir"]).expanduser() / name.replace("+", "_")
        ckpt = train(cfg, run, resume=False, command=f"python -m training.ablation_gar --config {args.config}")
        iterations = int(torch.load(ckpt, map_location="cpu", weights_only=True)["iteration"])
        results[name] = {**evaluate_synthetic(ckpt, test), "iterations": iterations}
        print(name, results[name], flush=True)
        Path(args.out).write_text(json.dumps({"config": args.config, "results": results}, indent=1))


if __name__ == "__main__":
    main()
