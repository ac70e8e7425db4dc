"""Train the GADER DHS classifier on CPU in minutes and write weights plus their manifest.

Usage::

    python -m training.gait_detector --config configs/train/gader.yaml

Training windows (random start and length, GADER sec. 3.1.2) come from mixed tracks composed from
real CASIA-B walking (training subjects 001-074) and from synthetic walkers; see
:mod:`training.gait_detector_data`. After
training, the held-out evaluation (CASIA-B subjects 075-124, synthetic held-out identities) is run
and its results go into the manifest ``weights/gader_dhs.json``.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
from torch import nn

from evaluation.gait_detector import build_eval_datasets, evaluate
from stages.gait_detector.checkpoint import save_checkpoint
from stages.gait_detector.dhs import DHSConfig
from stages.gait_detector.model import ClassifierConfig, DHSClassifier
from training.gait_detector_data import (
    LabeledDHS,
    cached_tracks,
    casia_tracks,
    read_config,
    sample_windows,
    subject_range,
)
from training.gait_detector_synth import ALL_BEHAVIOURS, synth_tracks

ROOT = Path(__file__).resolve().parents[1]


def build_train_tracks(cfg: dict, dhs_config: DHSConfig) -> dict[str, list[LabeledDHS]]:
    c = cfg["data"]["casia"]
    key = {"purpose": "train", "seed": cfg["seed"], "dhs": cfg["dhs"]}
    out = {
        "casia": cached_tracks(
            {**key, "casia": c},
            lambda: casia_tracks(
                cfg, dhs_config, np.random.default_rng(cfg["seed"]), subject_range(c["train_subjects"]),
                c["sequences_per_subject"], c["track_frames"],
            ),
        )
    }
    if cfg["data"].get("synth"):
        out["synth"] = cached_tracks(
            {**key, "synth": cfg["data"]["synth"]},
            lambda: synth_tracks(cfg, dhs_config, held_out=False, behaviours=ALL_BEHAVIOURS),
        )
    return out


def sample_batch(
    sources: dict[str, list[LabeledDHS]], weights: dict[str, float], rng: np.random.Generator, count: int,
    length: int, walking_purity: float,
) -> tuple[np.ndarray, np.ndarray]:
    """A batch drawn from several sources in proportion to ``weights`` (sources differ in size a lot)."""
    names = [n for n in sources if sources[n]]
    p = np.array([weights.get(n, 1.0) for n in names], np.float64)
    counts = rng.multinomial(count, p / p.sum())
    parts = [sample_windows(sources[n], rng, int(c), length, walking_purity) for n, c in zip(names, counts) if c]
    return np.concatenate([x for x, _ in parts]), np.concatenate([y for _, y in parts])


def train(cfg: dict, sources: dict[str, list[LabeledDHS]], log=print) -> DHSClassifier:
    """Train from scratch on windows of random start and length (GADER sec. 3.1.2)."""
    t = cfg["training"]
    rng = np.random.default_rng(cfg["seed"] + 1)
    torch.manual_seed(cfg["seed"])
    model = DHSClassifier(ClassifierConfig.from_dict(cfg["model"]))
    optimiser = torch.optim.AdamW(model.parameters(), lr=t["lr"], weight_decay=t["weight_decay"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=t["lr"], total_steps=t["steps"], pct_start=0.1)
    loss_fn = nn.CrossEntropyLoss()
    lo, hi = t["window_frames"]
    if lo < model.config.receptive_field:
        raise ValueError(f"training.window_frames starts at {lo}, below the receptive field {model.config.receptive_field}")
    model.train()
    running, correct, seen, started = 0.0, 0, 0, time.time()
    for step in range(1, t["steps"] + 1):
        x, y = sample_batch(
            sources, t.get("source_weights", {}), rng, t["batch_size"], int(rng.integers(lo, hi + 1)), t["walking_purity"]
        )
        flip = rng.random(len(x)) < 0.5  # mirrored walking direction
        x[flip] = x[flip, ::-1]
        logits = model(torch.from_numpy(x)[:, None])
        target = torch.from_numpy(y)
        loss = loss_fn(logits, target)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        running += loss.item()
        correct += int((logits.detach().argmax(1) == target).sum())
        seen += len(y)
        if step % 100 == 0 or step == t["steps"]:
            log(f"step {step}/{t['steps']} loss {running / 100:.4f} train acc {correct / seen:.3f} ({time.time() - started:.0f} s)")
            running, correct, seen = 0.0, 0, 0
    model.eval()
    return model


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m training.gait_detector", description=__doc__.split("\n")[0])
    parser.add_argument("--config", required=True, help="training recipe, e.g. configs/train/gader.yaml")
    parser.add_argument("--output", default=None, help="weights file (default: the recipe's output)")
    args = parser.parse_args(argv)
    cfg = read_config(args.config)
    torch.set_num_threads(int(cfg.get("threads", 2)))
    dhs_config = DHSConfig(**cfg["dhs"])
    output = Path(args.output or ROOT / cfg["output"])

    started = time.time()
    by_source = build_train_tracks(cfg, dhs_config)
    print(f"training tracks: {', '.join(f'{k} {len(v)}' for k, v in by_source.items())} ({time.time() - started:.0f} s)")
    model = train(cfg, by_source)
    train_seconds = time.time() - started
    sha = save_checkpoint(output, model, dhs_config)

    results = evaluate(model, build_eval_datasets(cfg, dhs_config), cfg, dhs_config)
    print(json.dumps(results, indent=2))
    command = " ".join(
        ["python -m training.gait_detector"] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])]
    )
    manifest = {
        "file": output.name,
        "sha256": sha,
        "command": command,
        "data": {
            "casia_b": "CASIA-B silhouettes (../shared/data/casia-b), training subjects "
            f"{cfg['data']['casia']['train_subjects']}, {cfg['data']['casia']['sequences_per_subject']} random "
            "sequences each; partial = cut + re-pretreated, standing = held frames, frame step 1-3",
            "synth": "synthetic walkers (synth package), per-frame walking/standing and full/partial ground truth"
            if "synth" in by_source
            else "not used",
            "training_tracks": {k: len(v) for k, v in by_source.items()},
        },
        "metrics": results,
        "config": cfg,
        "train_seconds_cpu": round(train_seconds, 1),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    output.with_suffix(".json").write_text(json.dumps(manifest, indent=2) + "\n")
    print(f"wrote {output} and {output.with_suffix('.json')}")


if __name__ == "__main__":
    main()
