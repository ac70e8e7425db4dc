"""Train the appearance ReID network from a YAML recipe.

    python -m training.reid --config configs/train/reid_mars_cpu.yaml

Training crops: mini-MARS train tracklets, Market-1501 train images and, when the recipe asks,
synthetic walkers' crops (each source's identities kept apart). Batches are P identities x K
crops; loss = triplet (batch-hard, on features before the BNNeck) + label-smoothed cross-entropy.
Augmentation: horizontal flip, pad-and-crop, random erasing. The final checkpoint is written to
``train.out`` with its metrics in its manifest (``<out>.json``): mini-MARS, and held-out rendered
walkers in the same clothes and after a change of clothes (``evaluation.reid``).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.config import read_yaml
from stages.reid.model import AppearanceConfig, AppearanceNet, crops_to_tensor
from training.reid_data import DEFAULT_REID_ROOT, load_market_split, load_mars_split
from training.sequences import TripletSampler


def batch_hard_triplet(feat: torch.Tensor, labels: torch.Tensor, margin: float) -> torch.Tensor:
    d = torch.cdist(feat, feat)
    same = labels[:, None] == labels[None, :]
    hardest_pos = (d * same).max(1)[0]
    hardest_neg = (d + same * 1e6).min(1)[0]
    return F.relu(hardest_pos - hardest_neg + margin).mean()


def augment(crops: np.ndarray, rng: np.random.Generator, pad: int = 8, erase_p: float = 0.5,
            jitter: float = 0.0) -> np.ndarray:
    """(n, 128, 64, 3) uint8 -> augmented copy: flip, pad-and-crop, random erasing and, with
    ``jitter`` > 0, brightness and contrast scaled by up to that fraction (cameras differ in exposure
    and colour cast; a crop must not be recognised by its camera's lighting)."""
    n, h, w, _ = crops.shape
    out = np.empty_like(crops)
    padded = np.pad(crops, ((0, 0), (pad, pad), (pad, pad), (0, 0)), mode="edge")
    for i in range(n):
        y, x = rng.integers(0, 2 * pad + 1, 2)
        img = padded[i, y : y + h, x : x + w]
        if rng.random() < 0.5:
            img = img[:, ::-1]
        img = img.copy()
        if rng.random() < erase_p:
            eh, ew = int(rng.integers(h // 8, h // 2)), int(rng.integers(w // 8, w // 2))
            ey, ex = int(rng.integers(0, h - eh)), int(rng.integers(0, w - ew))
            img[ey : ey + eh, ex : ex + ew] = rng.integers(0, 256, (eh, ew, 3), dtype=np.uint8)
        if jitter > 0:
            gain = rng.uniform(1 - jitter, 1 + jitter, 3) * rng.uniform(1 - jitter, 1 + jitter)  # per channel, overall
            mean = img.reshape(-1, 3).mean(0)
            contrast = rng.uniform(1 - jitter, 1 + jitter)
            img = np.clip((img - mean) * contrast + mean * gain, 0, 255).astype(np.uint8)
        out[i] = img
    return out


def init_from(net: AppearanceNet, path: str | Path) -> int:
    """Copy an appearance checkpoint's parameters into ``net`` (same widths and embedding size); the
    classifier, whose classes are another set, starts afresh. Returns the count of tensors copied."""
    from stages.reid.stage import load_appearance_model

    source, _ = load_appearance_model(path)
    own = net.state_dict()
    copied = 0
    for name, value in source.state_dict().items():
        if name.startswith("classifier."):
            continue
        if name not in own or own[name].shape != value.shape:
            raise ValueError(f"{path}: parameter {name} does not fit the model being trained (widths or embed_dim differ)")
        own[name].copy_(value)
        copied += 1
    net.load_state_dict(own)
    return copied


def training_crops(data: dict) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """(crops (N, 128, 64, 3) BGR, labels (N,), sources used)."""
    root = Path(data.get("root") or DEFAULT_REID_ROOT)
    crops, labels, sources = [], [], []
    offset = 0

    def add(tracklets, name: str) -> None:
        nonlocal offset
        pids = sorted({t.pid for t in tracklets})
        index = {p: offset + i for i, p in enumerate(pids)}
        for t in tracklets:
            crops.append(t.crops)
            labels.append(np.full(len(t.crops), index[t.pid]))
        offset += len(pids)
        sources.append(f"{name}: {len(pids)} ids, {sum(len(t.crops) for t in tracklets)} crops")

    add(load_mars_split(root / "mini_mars", "train", data.get("max_frames_per_tracklet")), "mini_mars/train")
    if data.get("market", True):
        add(load_market_split(root / "mini_market1501", "bounding_box_train"), "mini_market1501/bounding_box_train")
    if data.get("synthetic_identities", 0):
        from synth.dataset import generate_sequences

        seqs = generate_sequences(
            n_identities=data["synthetic_identities"],
            seqs_per_identity=data.get("synthetic_sequences", 2),
            frames=data.get("synthetic_frames", 20),
            seed=data.get("synthetic_seed", 100),
            crops=True,
            # a coat ("cl") changes what a person looks like: same-clothes recipes leave it out, recipes
            # that teach the network to see through a change of clothes keep it (with synthetic_outfits)
            conditions=tuple(data.get("synthetic_conditions", ("nm", "bg", "cl"))),
            frame_size=tuple(data.get("synthetic_frame_size", (480, 640))),
            # more than one: an identity's sequences wear different clothes, and still count as one person
            outfits=int(data.get("synthetic_outfits", 1)),
        )
        from training.reid_data import Tracklet

        add(
            [Tracklet(10_000 + s.identity, s.sequence, s.crops[s.visible]) for s in seqs if s.visible.any()],
            "synthetic walkers",
        )
    return np.concatenate(crops), np.concatenate(labels), sources


def main(argv: list[str] | None = None) -> None:
    from evaluation.reid import evaluate_mars, evaluate_rendered, evaluate_rendered_clothes
    from stages.checkpoints import sha256_of

    ap = argparse.ArgumentParser(
        prog="python -m training.reid", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", required=True)
    args = ap.parse_args(argv)
    cfg = read_yaml(args.config)
    tr, opt_cfg = cfg["train"], cfg["optim"]
    torch.set_num_threads(int(tr.get("threads", 1)))
    torch.manual_seed(int(tr.get("seed", 0)))
    rng = np.random.default_rng(int(tr.get("seed", 0)))

    crops, labels, sources = training_crops(cfg["data"])
    model_cfg = AppearanceConfig.from_dict({**cfg["model"], "num_classes": int(labels.max()) + 1})
    net = AppearanceNet(model_cfg)
    if tr.get("init_weights"):
        print(f"init from {tr['init_weights']}: {init_from(net, tr['init_weights'])} tensors", flush=True)
    optimizer = torch.optim.Adam(
        [p for p in net.parameters() if p.requires_grad],
        lr=opt_cfg["lr"],
        weight_decay=opt_cfg.get("weight_decay", 5e-4),
    )
    total = int(opt_cfg["total_iter"])
    sched = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, [int(m * total) for m in opt_cfg.get("milestones", [0.7])], 0.1
    )
    sampler = iter(
        TripletSampler(
            labels,
            cfg["sampler"]["identities_per_batch"],
            cfg["sampler"]["images_per_identity"],
            seed=int(tr.get("seed", 0)),
        )
    )
    print(f"training crops: {'; '.join(sources)}", flush=True)
    t0 = time.time()
    net.train()
    for it in tqdm(range(total), desc="reid", mininterval=10):
        idx = next(sampler)
        x = crops_to_tensor(augment(crops[idx], rng, jitter=float(cfg.get("augment", {}).get("colour_jitter", 0.0))))
        y = torch.from_numpy(labels[idx])
        feat, _, logits = net(x)
        loss = batch_hard_triplet(feat, y, cfg["loss"].get("margin", 0.3)) + F.cross_entropy(
            logits, y, label_smoothing=0.1
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        sched.step()
        if (it + 1) % 50 == 0:
            print(
                json.dumps(
                    {
                        "iteration": it + 1,
                        "loss": round(float(loss.detach()), 4),
                        "elapsed_s": round(time.time() - t0, 1),
                    }
                ),
                flush=True,
            )
    out = Path(tr["out"])
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": net.state_dict(), "config": model_cfg.to_dict()}, out)
    metrics = evaluate_mars(net, max_frames=32)
    # held-out rendered walkers (people no recipe draws): same clothes, and the clothes-changing protocol
    rendered = {"rendered_walkers": evaluate_rendered(net), "rendered_walkers_clothes": evaluate_rendered_clothes(net)}
    manifest = {
        "file": out.name,
        "sha256": sha256_of(out),
        "command": f"python -m training.reid --config {args.config}",
        "data": sources,
        "metrics": {"mini_mars_query_gallery": metrics, **rendered, "train_seconds": round(time.time() - t0)},
        "config": cfg,
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=1))
    print(json.dumps({"mini_mars_query_gallery": metrics, **rendered}), flush=True)


if __name__ == "__main__":
    main()
