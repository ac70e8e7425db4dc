"""Train CarGait on the frozen gait model's CASIA-B train features (and, optionally, rendered walkers)
and evaluate it on the CASIA-B test set (and held-out rendered walkers).

    python -m training.rerank --config configs/train/cargait.yaml

Data set D (paper fig. 2): every training sequence with its top-v nearest training sequences under
the frozen model's metric; triplets (probe, positive, negative) are drawn from those shortlists.
The last 10% of training identities form the validation set (D_val built the same way among them);
the checkpoint with the lowest validation ranking loss is kept. Writes the weights (cross-attention
only; the identity classifier is a training regulariser) and a manifest with the measured metrics.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import json
import shlex
import sys
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.rerank import (
    KReciprocalReranker,
    ShortlistReranker,
    as_dict,
    evaluate_casia_b,
    format_table,
    initial_scores,
)
from pipeline.config import read_recipe
from stages.checkpoints import sha256_of
from stages.gait.distance import part_distance
from stages.rerank.model import CarGait, PairClassifier, ranking_loss, strip_euclidean
from stages.gait.weights import load_gait_model
from stages.rerank.weights import save_reranker
from training.casia_b import GALLERY_TYPES
from training.gait_features import FeatureSet, walker_features, walker_sources

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class TrainConfig:
    """Keys of configs/train/cargait.yaml (paths relative to the project root or absolute, ~ expanded)."""

    train_features: str
    test_features: str = ""
    gait_weights: str = "weights/gar_casiab.pt"
    output: str = "weights/cargait_casiab.pt"
    metric: str = "euc"
    top_v: int = 30
    rerank_k: int = 10
    hidden: int = 256
    heads: int = 8
    classifier_hidden: int = 256
    alpha: float = 0.01
    beta: float = 0.1
    lr: float = 1e-5
    weight_decay: float = 1e-2
    batch_probes: int = 32
    triplets_per_probe: int = 4
    iterations: int = 100_000
    val_every: int = 10_000
    val_fraction: float = 0.1
    seed: int = 0
    threads: int = 1
    device: str = "cpu"  # where CarGait trains (cpu, cuda); the saved weights are on the CPU either way
    baseline_classifier_iterations: int = 0
    kreciprocal: bool = True
    calibration_far: float = 0.01
    # Rendered walkers added to the training features (evaluation.gait_sites: five walks each, two in other clothes):
    # training.gait_features.WalkerSource fields (identities 400 unless given), or a list of such mappings
    walkers: dict | list | None = None
    held_out_walkers: int = 0  # identities of the gait report's held-out walkers to measure on (0: none)


def _path(p: str) -> Path:
    q = Path(p).expanduser()
    return q if q.is_absolute() else ROOT / q


@dataclass
class Shortlists:
    """D: for each usable probe i (index into the feature set), its top-v positives and negatives."""

    probes: np.ndarray
    positives: list[np.ndarray]
    negatives: list[np.ndarray]


def build_shortlists(fs: FeatureSet, top_v: int, metric: str) -> Shortlists:
    """Top-v of every sequence among the others of the same set; probes whose shortlist has both a
    positive and a negative are kept (only those yield triplets)."""
    dist = part_distance(fs.features, fs.features, metric)
    np.fill_diagonal(dist, np.inf)
    top = np.argsort(dist, axis=1)[:, :top_v]
    same = fs.subjects[top] == fs.subjects[:, None]
    probes, pos, neg = [], [], []
    for i in range(len(fs)):
        if same[i].any() and (~same[i]).any():
            probes.append(i)
            pos.append(top[i][same[i]])
            neg.append(top[i][~same[i]])
    return Shortlists(np.asarray(probes), pos, neg)


def sample_triplets(d: Shortlists, n_probes: int, per_probe: int, rng: np.random.Generator) -> np.ndarray:
    """(n_probes * per_probe, 3) indices (probe, positive, negative)."""
    chosen = rng.choice(len(d.probes), size=min(n_probes, len(d.probes)), replace=False)
    rows = []
    for c in chosen:
        p = d.probes[c]
        rows.append(np.stack([np.full(per_probe, p), rng.choice(d.positives[c], per_probe), rng.choice(d.negatives[c], per_probe)], 1))
    return np.concatenate(rows)


def fixed_triplets(d: Shortlists, per_probe: int, seed: int) -> np.ndarray:
    """A fixed triplet sample over every probe of D (the validation set)."""
    rng = np.random.default_rng(seed)
    return sample_triplets(d, len(d.probes), per_probe, rng)


def triplet_distances(model: CarGait, f: torch.Tensor, t: np.ndarray | torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Conditioned maps and distances of (probe, pos) and (probe, neg) pairs. f: (N, P, C); t: (M, 3)
    indices (an index tensor already on f's device is used as it is).

    Each distinct probe is projected once and shared by its pairs (same result, less work).
    """
    idx = torch.as_tensor(t, device=f.device)
    probes, inverse = torch.unique(idx[:, 0], return_inverse=True)
    pp = model.project(f[probes]).take(inverse)
    ep1, epos = model.condition(pp, model.project(f[idx[:, 1]]))
    ep2, eneg = model.condition(pp, model.project(f[idx[:, 2]]))
    return ep1, epos, ep2, eneg, strip_euclidean(ep1, epos), strip_euclidean(ep2, eneg)


@torch.no_grad()
def validation_loss(model: CarGait, f: torch.Tensor, t: np.ndarray, beta: float) -> float:
    """Mean eq.-1 ranking loss per triplet over the fixed validation triplets."""
    model.eval()
    total = 0.0
    for i in range(0, len(t), 2048):
        *_, d_pos, d_neg = triplet_distances(model, f, t[i : i + 2048])
        total += float(ranking_loss(d_pos, d_neg, beta))
    model.train()
    return total / len(t)


def train_cargait(cfg: TrainConfig, train: FeatureSet, val: FeatureSet, log=print) -> tuple[CarGait, dict]:
    """AdamW on eq. 2 (ranking + alpha * CE); returns the best-on-validation model and a history."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    d_train = build_shortlists(train, cfg.top_v, cfg.metric)
    d_val = build_shortlists(val, cfg.top_v, cfg.metric)
    if len(d_train.probes) == 0 or len(d_val.probes) == 0:
        raise ValueError(f"no probe has both a positive and a negative in its top-{cfg.top_v} "
                         f"(train {len(d_train.probes)}, validation {len(d_val.probes)}): more identities are needed")
    t_val = fixed_triplets(d_val, cfg.triplets_per_probe, cfg.seed + 1)
    classes = {s: i for i, s in enumerate(sorted(set(train.subjects.tolist())))}
    device = torch.device(cfg.device)
    labels = torch.as_tensor([classes[s] for s in train.subjects], device=device)
    f_train = torch.as_tensor(train.features, device=device)
    f_val = torch.as_tensor(val.features, device=device)
    _, p, c = train.features.shape
    model = CarGait(p, c, len(classes), cfg.hidden, cfg.heads, cfg.classifier_hidden).to(device)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    log(f"D: {len(d_train.probes)}/{len(train)} train probes, {len(d_val.probes)}/{len(val)} val probes, "
        f"{len(t_val)} val triplets, {len(classes)} classes, features ({p}, {c})")
    best_loss = validation_loss(model, f_val, t_val, cfg.beta)
    best = copy.deepcopy(model.state_dict())
    history = [{"iteration": 0, "val_ranking_loss": best_loss}]
    log(f"iter 0 val ranking loss {best_loss:.4f} (frozen model)")
    start = time.time()
    running = 0.0
    for it in range(1, cfg.iterations + 1):
        idx = torch.as_tensor(sample_triplets(d_train, cfg.batch_probes, cfg.triplets_per_probe, rng), device=device)
        ep1, epos, ep2, eneg, d_pos, d_neg = triplet_distances(model, f_train, idx)
        logits = model.classifier(torch.cat([ep1, epos, ep2, eneg]))
        target = torch.cat([labels[idx[:, 0]], labels[idx[:, 1]], labels[idx[:, 0]], labels[idx[:, 2]]])
        loss = ranking_loss(d_pos, d_neg, cfg.beta) + cfg.alpha * F.cross_entropy(logits, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        running += loss.item()
        if it % cfg.val_every == 0 or it == cfg.iterations:
            v = validation_loss(model, f_val, t_val, cfg.beta)
            history.append({"iteration": it, "val_ranking_loss": v, "train_loss": running / cfg.val_every})
            log(f"iter {it} train loss {running / cfg.val_every:.4f} val ranking loss {v:.4f} "
                f"({(time.time() - start) / it * 1000:.1f} ms/iter)")
            running = 0.0
            if v < best_loss:
                best_loss, best = v, copy.deepcopy(model.state_dict())
    model.load_state_dict(best)
    return model.cpu().eval(), {"history": history, "best_val_ranking_loss": best_loss}


def train_pair_classifier(cfg: TrainConfig, train: FeatureSet, iterations: int, log=print) -> PairClassifier:
    """The paper's naive baseline: BCE on (probe, candidate) pairs from the same top-v shortlists."""
    rng = np.random.default_rng(cfg.seed)
    torch.manual_seed(cfg.seed)
    d = build_shortlists(train, cfg.top_v, cfg.metric)
    f = torch.as_tensor(train.features)
    _, p, c = train.features.shape
    model = PairClassifier(p, c, cfg.classifier_hidden)
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    for it in range(1, iterations + 1):
        t = torch.as_tensor(sample_triplets(d, cfg.batch_probes, cfg.triplets_per_probe, rng))
        fp = torch.cat([f[t[:, 0]], f[t[:, 0]]])
        fc = torch.cat([f[t[:, 1]], f[t[:, 2]]])
        y = torch.cat([torch.ones(len(t)), torch.zeros(len(t))])
        loss = F.binary_cross_entropy_with_logits(model(fp, fc), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if it % max(1, iterations // 5) == 0:
            log(f"baseline classifier iter {it} BCE {loss.item():.4f}")
    return model.eval()


def split_validation(fs: FeatureSet, fraction: float) -> tuple[FeatureSet, FeatureSet]:
    """(train, validation): the last ``fraction`` of identities (sorted) go to validation."""
    subjects = sorted(set(fs.subjects.tolist()))
    n_val = max(1, round(len(subjects) * fraction))
    val_mask = np.isin(fs.subjects, subjects[-n_val:])
    return fs.select(~val_mask), fs.select(val_mask)


def training_sets(cfg: TrainConfig, casia: FeatureSet) -> tuple[FeatureSet, FeatureSet]:
    """(train, validation): CASIA-B's and, when configured, the walkers' last identities validate."""
    train, val = split_validation(casia, cfg.val_fraction)
    if not cfg.walkers:
        return train, val
    from evaluation.gait_sites import SITE_SEED

    try:
        sources = walker_sources(cfg.walkers, SITE_SEED, identities=400)
    except ValueError as exc:
        raise SystemExit(str(exc)) from None
    model, version = load_gait_model(_path(cfg.gait_weights))
    walkers = FeatureSet.concatenate([walker_features(model, version, s.identities, s.seed, s.frames, s.mask_noise,
                                                      s.segmenter)[0] for s in sources])
    if walkers.model_version != casia.model_version:
        raise SystemExit(f"walkers embedded by {walkers.model_version!r}, features from {casia.model_version!r}")
    w_train, w_val = split_validation(walkers, cfg.val_fraction)
    return FeatureSet.concatenate([train, w_train]), FeatureSet.concatenate([val, w_val])


def held_out_walker_rank1(cfg: TrainConfig, model: CarGait) -> dict:
    """Cross-camera Rank-1 of the gait report's held-out walkers, plain metric and re-ranked."""
    from evaluation.gait_sites import SITE_SEED, cross_camera_rank1

    fs, walks = walker_features(*load_gait_model(_path(cfg.gait_weights)), cfg.held_out_walkers, SITE_SEED)
    return {"seed": SITE_SEED, "plain": cross_camera_rank1(fs.features, walks),
            "cargait": cross_camera_rank1(fs.features, walks, ShortlistReranker(model, fs.features, cfg.rerank_k))}


def gait_model_version(weights: Path) -> str:
    """The gait stage's version string of a checkpoint ("<stem>@<sha256[:12]>"), without loading it."""
    if not weights.is_file():
        raise SystemExit(f"gait weights not found: {weights} (set gait_weights to the model that made the features)")
    return f"{weights.stem}@{sha256_of(weights)[:12]}"


def shipped_calibrations(cfg: TrainConfig, weights: Path, test: FeatureSet, model_version: str) -> dict[str, dict]:
    """Open-set calibrations on the test features for the plain metric and for the re-ranked distance
    (the gallery uses them until it is calibrated on its own data)."""
    from stages.gallery.calibration import calibrate, calibration_distances
    from stages.gallery.search import Reranker

    reranker = Reranker.load(weights)
    probe_mask = ~np.isin(test.types, GALLERY_TYPES)
    out = {}
    for scorer, pairs in ((cfg.metric, None), (reranker.scorer, reranker.pair_distances)):
        genuine, impostor = calibration_distances(test.features, test.subjects, probe_mask, cfg.metric, pairs, cfg.rerank_k)
        source = f"{Path(cfg.test_features).name}: nearest genuine vs nearest impostor per probe (CASIA-B test)"
        out[scorer] = dataclasses.asdict(calibrate(genuine, impostor, scorer, model_version, source, cfg.calibration_far))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.rerank", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML file with TrainConfig keys")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys")
    args = parser.parse_args(argv)
    raw = read_recipe(_path(args.config), args.set)  # _base_ inheritance resolved
    fields = {f.name: f for f in dataclasses.fields(TrainConfig)}
    unknown = set(raw) - set(fields)
    if unknown:
        parser.error(f"unknown config keys {sorted(unknown)}; valid: {sorted(fields)}")
    cfg = TrainConfig(**raw)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        parser.error(f"device {cfg.device!r}: this machine has no CUDA GPU (--set device=cpu)")
    test = None
    torch.set_num_threads(cfg.threads)
    version = gait_model_version(_path(cfg.gait_weights)) if cfg.gait_weights else ""
    full = FeatureSet.load(_path(cfg.train_features), version)
    train, val = training_sets(cfg, full)
    print(f"train {len(train)} sequences / {len(set(train.subjects))} ids, val {len(val)} / {len(set(val.subjects))} ids, "
          f"gait model {full.model_version!r}", flush=True)
    log = lambda s: print(s, flush=True)
    start = time.time()
    model, info = train_cargait(cfg, train, val, log)
    train_minutes = (time.time() - start) / 60
    out = _path(cfg.output)
    save_reranker(model, out, gait_model_version=full.model_version, metric=cfg.metric, rerank_k=cfg.rerank_k)
    print(f"wrote {out}", flush=True)
    metrics: dict = {"best_val_ranking_loss": info["best_val_ranking_loss"], "train_minutes": round(train_minutes, 1)}
    if cfg.test_features:
        test = FeatureSet.load(_path(cfg.test_features), version)
        if test.model_version != full.model_version:
            raise SystemExit(f"test features come from gait model {test.model_version!r}, train features from {full.model_version!r}")
        rerankers = {"initial": initial_scores, "cargait": ShortlistReranker(model, test.features, cfg.rerank_k)}
        if cfg.baseline_classifier_iterations:
            baseline = train_pair_classifier(cfg, train, cfg.baseline_classifier_iterations, log)
            rerankers["pair_classifier"] = ShortlistReranker(baseline, test.features, cfg.rerank_k)
        if cfg.kreciprocal:
            rerankers["k_reciprocal"] = KReciprocalReranker(test.features, cfg.metric)
        results = evaluate_casia_b(test, rerankers, cfg.metric)
        print(format_table(results), flush=True)
        metrics["casia_b_test"] = as_dict(results)
    if cfg.held_out_walkers:
        metrics["held_out_walkers"] = held_out_walker_rank1(cfg, model)
        print(f"held-out walkers Rank-1 same / changed outfit: {metrics['held_out_walkers']}", flush=True)
    calibrations = shipped_calibrations(cfg, out, test, full.model_version) if cfg.test_features else {}
    manifest = {
        "file": out.name,
        "sha256": sha256_of(out),
        "command": "python -m training.rerank " + " ".join(shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])),
        "data": {
            "train_features": str(cfg.train_features),
            "walkers": cfg.walkers,
            "test_features": str(cfg.test_features),
            "gait_model_version": full.model_version,
            "train_identities": sorted(set(train.subjects.tolist())),
            "validation_identities": sorted(set(val.subjects.tolist())),
        },
        "metrics": metrics,
        "calibration": calibrations,
        "config": dataclasses.asdict(cfg),
        "history": info["history"],
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {out.with_suffix('.json')}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
