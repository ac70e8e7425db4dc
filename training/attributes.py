"""Train CLIP-GAR (Align stage, then Fusion stage) and the classification baseline on synthetic walkers.

    python -m training.attributes --config configs/train/clip_gar.yaml

Steps: render (or load cached) training and held-out clip sets; encode the template sentences once
with the frozen text encoder; Align stage (visual encoder + theta + tau, eq. 1) in this process
while the baseline (same encoder, plain heads, BCE) trains in a second process; Fusion stage
(frozen encoder features computed once, transformer block + heads, BCE); evaluate all three on the
held-out identities and on CASIA-B test subjects; write the checkpoints and their manifests.
"""

from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from evaluation.attributes import evaluate_all
from stages.attributes.checkpoint import save_checkpoint
from stages.attributes.model import ClassifierBaseline, ClipGar, align_loss
from stages.attributes.table import all_sentences, one_hot
from stages.checkpoints import sha256_of
from training.attributes_data import ClipSet, load_clip_set, sample_windows, synth_fingerprint
from training.attributes_recipe import PROJECT_ROOT, OptimConfig, TrainConfig, load_config, project_path
from training.attributes_text import encode_sentences


def _lr_factor(it: int, iterations: int, elapsed: float, budget: float) -> float:
    progress = it / iterations
    if budget > 0:
        progress = max(progress, elapsed / budget)
    return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))


def _optimise(model_step, params, opt_cfg: OptimConfig, n: int, seed: int, log_name: str) -> dict:
    """Generic loop: ``model_step(idx, rng) -> loss`` on a batch of indices into n samples."""
    rng = np.random.default_rng(seed)
    opt = torch.optim.Adam(params, lr=opt_cfg.lr, weight_decay=opt_cfg.weight_decay, eps=1e-6)
    start = time.time()
    it, recent = 0, []
    while it < opt_cfg.iterations:
        elapsed = time.time() - start
        if opt_cfg.time_budget_s > 0 and elapsed >= opt_cfg.time_budget_s:
            break
        for group in opt.param_groups:
            group["lr"] = opt_cfg.lr * _lr_factor(it, opt_cfg.iterations, elapsed, opt_cfg.time_budget_s)
        idx = rng.choice(n, size=min(opt_cfg.batch_size, n), replace=False)
        loss = model_step(idx, rng)
        opt.zero_grad()
        loss.backward()
        opt.step()
        recent.append(float(loss.detach()))
        it += 1
        if it % 20 == 0:
            print(f"[{log_name}] it {it} loss {np.mean(recent[-20:]):.4f} {time.time() - start:.0f}s", flush=True)
    return {
        "iterations": it,
        "seconds": round(time.time() - start, 1),
        "final_loss": round(float(np.mean(recent[-20:])), 4),
    }


def train_align(model: ClipGar, train: ClipSet, cfg: TrainConfig) -> dict:
    """Align stage: encoder + theta + tau against the frozen text features (eq. 1)."""
    model.train()
    truth = torch.from_numpy(one_hot(train.labels))

    def step(idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        x = torch.from_numpy(sample_windows(train.clips[idx], cfg.clip_frames, rng))
        return align_loss(model.align_logits(x), truth[idx])

    params = list(model.encoder.parameters()) + list(model.align.parameters())
    return _optimise(step, params, cfg.align, len(train), cfg.seed + 1, "align")


@torch.no_grad()
def encode_clips(encoder: torch.nn.Module, clips: np.ndarray, clip_frames: int, batch: int = 32) -> torch.Tensor:
    """Frozen visual parts (N, P, C) of the first ``clip_frames`` frames of each clip."""
    encoder.eval()
    out = [
        encoder(torch.from_numpy(sample_windows(clips[i : i + batch], clip_frames, None)))
        for i in range(0, len(clips), batch)
    ]
    return torch.cat(out)


def train_fusion(model: ClipGar, train: ClipSet, cfg: TrainConfig) -> dict:
    """Fusion stage: encoder frozen (features computed once), transformer block + heads with BCE (eq. 3)."""
    parts = encode_clips(model.encoder, train.clips, cfg.clip_frames)
    truth = torch.from_numpy(one_hot(train.labels))
    model.fusion.train()

    def step(idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        logits = model.fusion(parts[idx], model.text_features)
        # eq. 3 sums over the N_all labels; averaged over the batch.
        return F.binary_cross_entropy_with_logits(logits, truth[idx], reduction="sum") / len(idx)

    info = _optimise(step, list(model.fusion.parameters()), cfg.fusion, len(train), cfg.seed + 2, "fusion")
    model.eval()
    return info


def train_baseline(cfg: TrainConfig, train: ClipSet) -> tuple[ClassifierBaseline, dict]:
    torch.manual_seed(cfg.seed + 3)
    model = ClassifierBaseline(**asdict(cfg.model))
    model.train()
    truth = torch.from_numpy(one_hot(train.labels))

    def step(idx: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        x = torch.from_numpy(sample_windows(train.clips[idx], cfg.clip_frames, rng))
        return F.binary_cross_entropy_with_logits(model(x), truth[idx], reduction="sum") / len(idx)

    info = _optimise(step, list(model.parameters()), cfg.baseline, len(train), cfg.seed + 3, "baseline")
    model.eval()
    return model, info


def _baseline_process(config_path: str) -> dict:
    """Child process: train and save the baseline (the clip set is already cached by the parent)."""
    cfg = load_config(config_path)
    torch.set_num_threads(cfg.threads)
    model, info = train_baseline(cfg, load_clip_set(cfg.train_data))
    sha = save_checkpoint(project_path(cfg.baseline_output), model, "baseline", asdict(cfg.model), cfg.clip_frames)
    return {**info, "sha256": sha}


def synth_provenance() -> dict:
    """Which generator produced the data: source hash, last git commit of synth/, uncommitted edits."""
    import subprocess

    def git(*args: str) -> str:
        try:
            return subprocess.run(
                ["git", *args], cwd=PROJECT_ROOT, capture_output=True, text=True, timeout=10, check=False
            ).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            return ""

    return {
        "sources_sha256": synth_fingerprint(),
        "last_commit": git("log", "-1", "--format=%H", "--", "synth"),
        "uncommitted_changes": bool(git("status", "--porcelain", "--", "synth")),
    }


def write_manifest(weights: Path, command: str, data: str, metrics: dict, config: str, extra: dict) -> None:
    manifest = {
        "file": weights.name,
        "sha256": sha256_of(weights),
        "command": command,
        "data": data,
        "metrics": metrics,
        "config": config,
        "created": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        **extra,
    }
    weights.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.attributes", description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="YAML recipe, e.g. configs/train/clip_gar.yaml")
    parser.add_argument("--no-baseline", action="store_true", help="train CLIP-GAR only")
    args = parser.parse_args(argv)
    cfg = load_config(args.config)
    torch.set_num_threads(cfg.threads)
    torch.manual_seed(cfg.seed)

    t0 = time.time()
    train = load_clip_set(cfg.train_data)
    test = load_clip_set(cfg.test_data)
    provenance = synth_provenance()  # taken with the data: the generator may change while training runs
    print(f"data: {len(train)} training clips, {len(test)} held-out clips ({time.time() - t0:.0f}s)", flush=True)

    baseline_job = None
    if not args.no_baseline:
        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        baseline_job = pool.submit(_baseline_process, str(Path(args.config).resolve()))

    text_features, text_encoder = encode_sentences(
        all_sentences(), cfg.text.backend, cfg.text.model_name, cfg.text.checkpoint
    )
    model_kwargs = {
        **asdict(cfg.model),
        "fusion_heads": cfg.fusion_model.heads,
        "fusion_ff_mult": cfg.fusion_model.ff_mult,
        "fusion_dropout": cfg.fusion_model.dropout,
    }
    model = ClipGar(torch.from_numpy(text_features), **model_kwargs)
    align_info = train_align(model, train, cfg)
    fusion_info = train_fusion(model, train, cfg)
    weights = project_path(cfg.output)
    save_checkpoint(weights, model, "clip_gar", model_kwargs, cfg.clip_frames, text_encoder)

    baseline_info = None
    if baseline_job is not None:
        baseline_info = baseline_job.result()
        pool.shutdown()

    metrics = evaluate_all(cfg, weights, project_path(cfg.baseline_output) if baseline_info else None, test)
    command = "python -m training.attributes --config " + args.config
    data = (
        f"synthetic walkers (synth.dataset, seed {cfg.train_data.seed}, synth sources sha256 {provenance['sources_sha256']}): train identities "
        f"{cfg.train_data.first_identity}..{cfg.train_data.first_identity + cfg.train_data.n_identities - 1} "
        f"({len(train)} clips, conditions {list(cfg.train_data.conditions)}, views {list(cfg.train_data.views_deg)}); "
        f"held-out identities {cfg.test_data.first_identity}..{cfg.test_data.first_identity + cfg.test_data.n_identities - 1} "
        f"({len(test)} clips, conditions {list(cfg.test_data.conditions)}, views {list(cfg.test_data.views_deg)}); "
        f"CASIA-B subjects {', '.join(cfg.casia_subjects)} for the consistency check"
    )
    config_text = Path(args.config).read_text()
    write_manifest(
        weights,
        command,
        data,
        metrics,
        config_text,
        {"training": {"align": align_info, "fusion": fusion_info}, "text_encoder": text_encoder, "synth": provenance},
    )
    if baseline_info:
        write_manifest(
            project_path(cfg.baseline_output),
            command,
            data,
            {"synthetic_test": metrics["synthetic_test"]["baseline"]},
            config_text,
            {"training": {"baseline": baseline_info}, "synth": provenance},
        )
    print(json.dumps({k: v for k, v in metrics.items()}, indent=1)[:4000])
    print(f"done in {time.time() - t0:.0f}s: {weights}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
