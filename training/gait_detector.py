"""Train the GADER DHS classifier on CPU in minutes and write weights plus their manifest.

Usage::

    python -m stages.gait_detector.train --config configs/train/gader.yaml

Training windows (random start and length, GADER sec. 3.1.2) come from mixed tracks composed from
real CASIA-B walking (training subjects 001-074) and from synthetic walkers; see ``data``. After
training, the held-out evaluation (CASIA-B subjects 075-124, synthetic held-out identities) is run
and its results go into the manifest ``weights/gader_dhs.json``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import sys
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from stages.gait_detector.checkpoint import save_checkpoint
from stages.gait_detector.data import LabeledDHS, casia_walking_sources, compose_track, sample_windows
from stages.gait_detector.dhs import DHSConfig
from stages.gait_detector.evaluate import evaluate
from stages.gait_detector.model import ClassifierConfig, DHSClassifier
from stages.gait_detector.synth_data import ALL_BEHAVIOURS, MIXED_BEHAVIOURS

ROOT = Path(__file__).resolve().parents[2]
CACHE = Path.home() / ".cache" / "gaitscope" / "gader"


def cached_tracks(what: dict, build) -> list[LabeledDHS]:
    """``build()`` once per recipe section and data code version; later runs read ~/.cache/gaitscope/gader."""
    sources = [Path(__file__).with_name(n).read_bytes() for n in ("data.py", "synth_data.py", "dhs.py")]
    key = hashlib.sha256(json.dumps(what, sort_keys=True).encode() + b"".join(sources)).hexdigest()[:20]
    path = CACHE / f"{key}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as z:  # each z[key] reads the array again: read once
            dhs, labels, lengths, names = z["dhs"], z["labels"], z["lengths"], z["names"]
        bounds = np.concatenate([[0], np.cumsum(lengths)])
        return [
            LabeledDHS(np.ascontiguousarray(dhs[:, a:b]), labels[a:b], str(name))
            for a, b, name in zip(bounds[:-1], bounds[1:], names)
        ]
    tracks = build()
    CACHE.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(
        tmp,
        dhs=np.concatenate([t.dhs for t in tracks], axis=1),
        labels=np.concatenate([t.labels for t in tracks]),
        lengths=np.array([len(t) for t in tracks]),
        names=np.array([t.name for t in tracks]),
    )
    tmp.replace(path)
    return tracks


def read_config(path: str | Path) -> dict:
    with open(path) as f:
        cfg = yaml.safe_load(f)
    if not isinstance(cfg, dict):
        raise TypeError(f"{path}: expected a mapping at the top level")
    return cfg


def subject_range(bounds: list[int]) -> list[str]:
    return [f"{i:03d}" for i in range(bounds[0], bounds[1] + 1)]


def casia_tracks(
    cfg: dict, dhs_config: DHSConfig, rng: np.random.Generator, subjects: list[str], per_subject: int, frames: int
) -> list[LabeledDHS]:
    c = cfg["data"]["casia"]
    sources = casia_walking_sources(subjects, per_subject, rng, dhs_config)
    return [
        compose_track(s, rng, frames, tuple(c["piece_frames"]), c["class_weights"])
        for s in sources
        for _ in range(c["tracks_per_sequence"])
    ]


def synth_tracks(cfg: dict, dhs_config: DHSConfig, held_out: bool, behaviours: tuple[str, ...]) -> list[LabeledDHS]:
    """Synthetic walker tracks; held-out identities are a disjoint block of generator ids."""
    from stages.gait_detector.synth_data import synthetic_tracks

    s = cfg["data"]["synth"]
    return synthetic_tracks(
        s["test_first_identity"] if held_out else 0,
        s["test_identities"] if held_out else s["train_identities"],
        seqs_per_identity=s["seqs_per_identity"],
        frames=cfg["evaluation"]["mixed_track_frames"] if held_out else s["frames"],
        seed=cfg["evaluation"]["seed"] if held_out else cfg["seed"],
        dhs_config=dhs_config,
        fps=float(s["fps"]),
        frame_steps=tuple(s["frame_steps"]),
        behaviours=behaviours,
        frame_size=tuple(s["frame_size"]),
    )


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


def build_eval_datasets(cfg: dict, dhs_config: DHSConfig) -> dict[str, tuple[list[LabeledDHS], list[LabeledDHS]]]:
    """name -> (tracks for window accuracy, mixed tracks for frame-level metrics), all held out."""
    ev = cfg["evaluation"]
    c = cfg["data"]["casia"]
    key = {"purpose": "evaluate", "dhs": cfg["dhs"], "evaluation": ev}
    casia = cached_tracks(
        {**key, "casia": c},
        lambda: casia_tracks(
            cfg, dhs_config, np.random.default_rng(ev["seed"]), subject_range(c["test_subjects"]),
            c["test_sequences_per_subject"], ev["mixed_track_frames"],
        ),
    )
    out = {"casia_test_075_124": (casia, casia[: ev["mixed_tracks"]])}
    if cfg["data"].get("synth"):
        s = cfg["data"]["synth"]
        every_kind = cached_tracks(
            {**key, "synth": s, "behaviours": ALL_BEHAVIOURS},
            lambda: synth_tracks(cfg, dhs_config, held_out=True, behaviours=ALL_BEHAVIOURS),
        )
        mixed = cached_tracks(
            {**key, "synth": s, "behaviours": MIXED_BEHAVIOURS},
            lambda: synth_tracks(cfg, dhs_config, held_out=True, behaviours=MIXED_BEHAVIOURS),
        )
        out["synth_held_out"] = (every_kind, mixed[: ev["mixed_tracks"]])
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
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
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

    results = evaluate(model, build_eval_datasets(cfg, dhs_config), cfg)
    print(json.dumps(results, indent=2))
    command = "python -m stages.gait_detector." + " ".join(
        ["train"] + [shlex.quote(a) for a in (argv if argv is not None else sys.argv[1:])]
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
