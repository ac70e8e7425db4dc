"""Train GAR / GaitBase-style gait models from a YAML recipe.

    python -m training.gait --config configs/train/gar_casiab_cpu.yaml [--resume] [--out DIR]

Recipe sections (see configs/train/gar_*.yaml): ``model`` (GaitBaseConfig keys), ``data``
(``dataset: casia-b``, ``synthetic`` or ``mixed``: CASIA-B 001-074 plus the synthetic walkers of
``data.synthetic``, ``data.synthetic_ratio`` of each batch's identities synthetic; a synthetic block's
``extra_sources`` adds walkers rendered another way, e.g. noisy masks beside BlazePose's), ``augment``
(training.augment.AugmentConfig keys; absent = the defaults, which are on), ``sampler`` (P x K,
frames, sample_type), ``loss``, ``optim``, ``train`` (``init_weights``: start from a gait
checkpoint, e.g. to fine-tune the shipped weights; classifier rows of the classes both share are
kept; ``loader_workers``: processes that cut and augment batches, 0 = in this process; ``amp_dtype``:
``float16`` or ``bfloat16``, the mixed precision on a GPU). ``_base_: FILE`` starts from another
recipe; a section given replaces that recipe's keys one by one. Checkpoints (``{'model', 'config',
'optimizer', 'iteration', ...}``, loadable with ``weights_only=True``) go to ``train.out_dir``
every ``checkpoint_every_min`` minutes and at the end; ``--resume`` continues from the latest one.
Metrics are appended to ``metrics.jsonl`` in the same folder.

The learning-rate schedule is by progress, ``max(iteration / total_iter, elapsed / time_limit)``,
so a recipe with a wall-clock budget still anneals before it stops.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from pipeline.config import read_yaml
from stages.gait.model import GaitBase, GaitBaseConfig, GARDistillation
from training.augment import AugmentConfig, augment_clip, flip_sequence
from training.casia_b import DEFAULT_ROOT, TRAIN_SUBJECTS, CasiaB
from training.losses import cross_entropy_loss, triplet_loss
from training.sequences import Clip, MixedTripletSampler, SequenceSet, TripletSampler

AMP_DTYPES = {"float16": torch.float16, "bfloat16": torch.bfloat16}
SECTIONS = ("model", "data", "augment", "sampler", "loss", "optim", "train")


def load_recipe(path: str | Path) -> dict:
    """A recipe with ``_base_`` inheritance resolved (``pipeline.config.read_yaml``)."""
    cfg = read_yaml(path)
    unknown = set(cfg) - set(SECTIONS)
    if unknown:
        raise ValueError(f"{path}: unknown sections {sorted(unknown)}; expected {SECTIONS}")
    return cfg


def _casia_set(data: dict) -> SequenceSet:
    reader = CasiaB(data.get("root") or DEFAULT_ROOT, min_frames=data.get("min_frames", 10))
    return SequenceSet.from_casia(reader, reader.keys(subjects=TRAIN_SUBJECTS))


SYNTHETIC_KEYS = frozenset({
    "identities", "sequences_per_identity", "frames", "seed", "first_identity", "crops", "outfits", "mask_noise",
    "segmenter", "cameras", "frame_size", "workers", "chunk",
})


def _synthetic_source(syn: dict) -> SequenceSet:
    from training.synthetic import synthetic_set

    return synthetic_set(
        n_identities=syn["identities"],
        seqs_per_identity=syn["sequences_per_identity"],
        frames=syn["frames"],
        seed=syn.get("seed", 0),
        first_identity=syn.get("first_identity", 0),
        crops=syn.get("crops", True),
        outfits=syn.get("outfits", 1),
        mask_noise=syn.get("mask_noise", 0.0),
        segmenter=syn.get("segmenter"),
        cameras=syn.get("cameras", "surveillance"),
        frame_size=tuple(syn.get("frame_size", (480, 640))),
        workers=syn.get("workers", 1),
        chunk=syn.get("chunk", 250),
    )


def _synthetic_set(syn: dict) -> SequenceSet:
    """The walkers of ``syn`` and of each of its ``extra_sources``: a list of mappings whose keys replace
    ``syn``'s for one more source (another segmenter or mask noise, other cameras). Walker i depends only on
    (seed, i): sources with the same seed and overlapping identities show the same people, whose sequences
    then share one label; give an extra source its own ``first_identity`` range to add new people."""
    extras = syn.get("extra_sources") or []
    if not isinstance(extras, list) or not all(isinstance(e, dict) for e in extras):
        raise ValueError(f"data extra_sources must be a list of mappings, got {extras!r}")
    for extra in extras:
        unknown = set(extra) - SYNTHETIC_KEYS
        if unknown:
            raise ValueError(f"unknown extra_sources keys {sorted(unknown)}; valid: {sorted(SYNTHETIC_KEYS)}")
    sources = [syn, *({**syn, **extra} for extra in extras)]
    sets = [_synthetic_source(source) for source in sources]
    return sets[0] if len(sets) == 1 else SequenceSet.concat(sets)


def build_train_set(data: dict) -> SequenceSet:
    """The training SequenceSet described by a recipe's ``data`` section."""
    kind = data.get("dataset", "casia-b")
    if kind == "casia-b":
        return _casia_set(data)
    if kind == "synthetic":
        return _synthetic_set(data)
    if kind == "mixed":
        return SequenceSet.concat([_casia_set(data), _synthetic_set(data["synthetic"])])
    raise ValueError(f"unknown dataset {kind!r}: use 'casia-b', 'synthetic' or 'mixed'")


def build_sampler(data: SequenceSet, data_cfg: dict, sampler_cfg: dict, seed: int):
    """P x K sampler; for a mixed set, ``synthetic_ratio`` of each batch's identities are synthetic
    (identities named ``s...``, see training.synthetic). ``spread_views: true`` spreads each identity's
    K sequences over its view groups."""
    p, k = int(sampler_cfg["identities_per_batch"]), int(sampler_cfg["sequences_per_identity"])
    views = data.view_groups if sampler_cfg.get("spread_views", False) else None
    if data_cfg.get("dataset", "casia-b") != "mixed":
        return TripletSampler(data.labels, p, k, seed=seed, view_groups=views)
    synthetic = np.array([name.startswith("s") for name in data.identities])
    ratio = float(data_cfg.get("synthetic_ratio", 0.5))
    return MixedTripletSampler(data.labels, synthetic, p, k, ratio, seed=seed, view_groups=views)


def init_from(net: torch.nn.Module, path: str | Path) -> int:
    """Copy a gait checkpoint's parameters into ``net`` (same architecture); a classifier with a
    different number of classes keeps the rows of the first classes both have, and a checkpoint's
    motion profile is left out when ``net`` has none (``model.motion_lags: 0``), so a recipe can
    train the shared layers on unordered frames before the profile goes back on. Returns the count
    of tensors copied."""
    from stages.gait.weights import load_checkpoint

    state = load_checkpoint(Path(path).expanduser())["model"]
    own = net.state_dict()
    drop_profile = getattr(net, "MotionProfile", None) is None
    copied = 0
    for name, value in state.items():
        if drop_profile and name.startswith("MotionProfile."):
            continue
        if name not in own:
            raise ValueError(f"{path}: parameter {name} does not exist in the model being trained")
        target = own[name]
        if target.shape == value.shape:
            target.copy_(value)
        elif name.endswith("BNNecks.fc_bin") and target.shape[:2] == value.shape[:2]:
            n = min(target.shape[2], value.shape[2])
            target[:, :, :n] = value[:, :, :n]
        else:
            raise ValueError(f"{path}: {name} has shape {tuple(value.shape)}, the model {tuple(target.shape)}")
        copied += 1
    net.load_state_dict(own)
    return copied


@dataclass
class Batch:
    """sils [n, s, 64, 44] uint8 0/255 (a quarter of float's bytes between loader processes; scaled to
    0..1 on the training device); ratios [n, s] or None; rgb [n, 3, s, 64, 44] 0..1 or None."""

    sils: torch.Tensor
    ratios: torch.Tensor | None
    rgb: torch.Tensor | None
    labels: torch.Tensor


def augment_batch(clips: list[Clip], cfg: AugmentConfig, rng: np.random.Generator) -> list[Clip]:
    """Each clip through :func:`augment_clip`; a neighbour's blob comes from a clip of another identity.
    The flip is decided here so that RGB crops (distillation) are mirrored with their silhouettes."""
    if not cfg.enabled:
        return clips
    no_flip = dataclasses.replace(cfg, flip=0.0)
    out = []
    for c in clips:
        others = [j for j, o in enumerate(clips) if o.label != c.label]
        other = clips[int(rng.choice(others))].silhouettes if others else None
        sils, rgb = augment_clip(c.silhouettes, rng, no_flip, other), c.rgb
        if rng.random() < cfg.flip:
            sils = flip_sequence(sils)
            rgb = None if rgb is None else np.ascontiguousarray(rgb[:, :, ::-1])
        out.append(Clip(sils, c.ratios, rgb, c.label))
    return out


def collate(clips: list[Clip], use_ratios: bool, use_rgb: bool) -> Batch:
    sils = torch.from_numpy(np.stack([c.silhouettes for c in clips]))
    ratios = torch.from_numpy(np.stack([c.ratios for c in clips])) if use_ratios else None
    rgb = None
    if use_rgb:
        arr = torch.from_numpy(np.stack([c.rgb for c in clips]))  # [n, s, H, W, 3] BGR
        n, s, h, w, _ = arr.shape
        x = arr.reshape(n * s, h, w, 3).permute(0, 3, 1, 2).flip(1).float().div_(255.0)  # RGB order
        x = F.interpolate(x, size=(64, 44), mode="bilinear", align_corners=False)
        rgb = x.reshape(n, s, 3, 64, 44).transpose(1, 2).contiguous()
    labels = torch.tensor([c.label for c in clips], dtype=torch.long)
    return Batch(sils, ratios, rgb, labels)


def batch_stream(
    data: SequenceSet, cfg: dict, sampler_seed: int, rng: np.random.Generator, use_ratios: bool, use_rgb: bool
) -> Iterator[Batch]:
    """Endless augmented training batches of a recipe (sampler, clip cutting, augmentation, collate)."""
    sampler_cfg = cfg["sampler"]
    frames, sample_type = int(sampler_cfg["frames"]), sampler_cfg.get("sample_type", "fixed_unordered")
    augment = AugmentConfig.from_dict(cfg.get("augment"))
    for idx in build_sampler(data, cfg["data"], sampler_cfg, sampler_seed):
        clips = augment_batch([data.clip(int(i), frames, sample_type, rng) for i in idx], augment, rng)
        yield collate(clips, use_ratios, use_rgb)


class WorkerBatches(torch.utils.data.IterableDataset):
    """:func:`batch_stream` in DataLoader worker processes, each with its own seeds (derived from the
    run's seed, the iteration it starts at and the worker's index), so that augmentation on the CPU
    keeps up with a GPU."""

    def __init__(self, data: SequenceSet, cfg: dict, seed: int, use_ratios: bool, use_rgb: bool) -> None:
        self.data, self.cfg, self.seed, self.use_ratios, self.use_rgb = data, cfg, seed, use_ratios, use_rgb

    def __iter__(self) -> Iterator[Batch]:
        info = torch.utils.data.get_worker_info()
        seed = self.seed + 7919 * (info.id + 1 if info is not None else 0)
        return batch_stream(self.data, self.cfg, seed, np.random.default_rng(seed), self.use_ratios, self.use_rgb)


def training_batches(
    data: SequenceSet, cfg: dict, seed: int, rng: np.random.Generator, use_ratios: bool, use_rgb: bool
) -> Iterator[Batch]:
    """The run's batches: made in this process (``train.loader_workers: 0``, the CPU recipes) or by
    that many worker processes."""
    workers = int(cfg["train"].get("loader_workers", 0))
    if workers == 0:
        return batch_stream(data, cfg, seed, rng, use_ratios, use_rgb)
    loader = torch.utils.data.DataLoader(
        WorkerBatches(data, cfg, seed, use_ratios, use_rgb), batch_size=None, num_workers=workers,
        pin_memory=torch.cuda.is_available(), prefetch_factor=4, persistent_workers=True,
    )
    return iter(loader)


def branch_loss(out, labels: torch.Tensor, loss_cfg: dict) -> tuple[torch.Tensor, dict]:
    tri, frac = triplet_loss(out.embeddings, labels, loss_cfg.get("triplet_margin", 0.2))
    ce, acc = cross_entropy_loss(
        out.logits, labels, loss_cfg.get("ce_scale", 16.0), loss_cfg.get("label_smoothing", 0.1)
    )
    total = loss_cfg.get("triplet_weight", 1.0) * tri + loss_cfg.get("ce_weight", 1.0) * ce
    return total, {"triplet": float(tri.detach()), "nonzero": frac, "ce": float(ce.detach()), "acc": acc}


def lr_factor(progress: float, milestones: list[float], gamma: float) -> float:
    return gamma ** sum(progress >= m for m in milestones)


def train(cfg: dict, out_dir: Path, resume: bool, command: str) -> Path:
    tr = cfg["train"]
    torch.set_num_threads(int(tr.get("threads", 2)))
    seed = int(tr.get("seed", 0))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    out_dir.mkdir(parents=True, exist_ok=True)

    t0 = time.time()
    data = build_train_set(cfg["data"])
    model_cfg = GaitBaseConfig.from_dict({**cfg["model"], "class_num": data.num_classes})
    distill = bool(cfg["loss"].get("distill", False))
    use_ratios = model_cfg.ratio_attention
    if use_ratios and data.ratios is None:
        raise ValueError("ratio_attention needs ratios, which this dataset lacks (CASIA-B has none)")
    if distill and data.rgb is None:
        raise ValueError("distillation needs RGB crops, which this dataset lacks (CASIA-B has none)")
    net = GARDistillation(model_cfg) if distill else GaitBase(model_cfg)
    if tr.get("init_weights") and not (resume and (out_dir / "latest.pt").is_file()):
        target = net.silhouette if distill else net
        print(f"init from {tr['init_weights']}: {init_from(target, tr['init_weights'])} tensors", flush=True)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    net.to(device)
    if tr.get("channels_last", False):
        net.to(memory_format=torch.channels_last)  # faster 3x3 convs on CPU (measured)

    opt_cfg = cfg["optim"]
    params = [p for p in net.parameters() if p.requires_grad]
    if opt_cfg.get("optimizer", "sgd") == "adam":
        optimizer = torch.optim.Adam(params, lr=opt_cfg["lr"], weight_decay=opt_cfg.get("weight_decay", 0.0))
    else:
        optimizer = torch.optim.SGD(
            params, lr=opt_cfg["lr"], momentum=0.9, weight_decay=opt_cfg.get("weight_decay", 5e-4)
        )
    base_lr = float(opt_cfg["lr"])
    total_iter = int(opt_cfg["total_iter"])
    time_limit_s = 60.0 * float(opt_cfg.get("time_limit_min", 1e9))
    milestones = [float(m) for m in opt_cfg.get("milestones", [0.8])]
    gamma = float(opt_cfg.get("gamma", 0.1))

    iteration, elapsed_before = 0, 0.0
    latest = out_dir / "latest.pt"
    if resume and latest.is_file():
        ckpt = torch.load(latest, map_location=device, weights_only=True)
        net.load_state_dict(ckpt["train_model"] if distill else ckpt["model"])
        optimizer.load_state_dict(ckpt["optimizer"])
        iteration, elapsed_before = int(ckpt["iteration"]), float(ckpt["elapsed_s"])
        rng = np.random.default_rng(seed + iteration)

    use_amp = device.type == "cuda"
    amp_name = tr.get("amp_dtype", "float16")
    if amp_name not in AMP_DTYPES:
        raise ValueError(f"train.amp_dtype must be one of {sorted(AMP_DTYPES)}, got {amp_name!r}")
    amp_dtype = AMP_DTYPES[amp_name]
    if use_amp:
        torch.backends.cudnn.benchmark = True  # fixed batch shapes: let cuDNN pick its fastest convolutions
    # bfloat16 has float32's range, so its gradients need no loss scaling
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp and amp_dtype == torch.float16)
    batches = training_batches(data, cfg, seed + iteration, rng, use_ratios, distill)
    loss_cfg = cfg["loss"]
    metrics_path = out_dir / "metrics.jsonl"
    ckpt_every_s = 60.0 * float(tr.get("checkpoint_every_min", 5))
    log_every = int(tr.get("log_every", 10))
    print(
        f"data: {len(data)} sequences, {data.num_classes} identities (loaded in {time.time() - t0:.0f}s); "
        f"model {model_cfg}",
        flush=True,
    )

    def save(path: Path) -> None:
        sil_net = net.silhouette if distill else net
        state = {
            "model": sil_net.state_dict(),
            "config": model_cfg.to_dict(),
            "iteration": iteration,
            "elapsed_s": elapsed_before + time.time() - start,
            "optimizer": optimizer.state_dict(),
            "recipe": json.dumps(cfg),
            "command": command,
        }
        if distill:
            state["train_model"] = net.state_dict()
        tmp = path.with_suffix(".tmp")
        torch.save(state, tmp)
        os.replace(tmp, path)

    start = time.time()
    last_ckpt = start
    net.train()
    bar = tqdm(total=total_iter, initial=iteration, desc="train", mininterval=10)
    while True:
        elapsed = elapsed_before + time.time() - start
        progress = max(iteration / total_iter, elapsed / time_limit_s)
        if progress >= 1.0:
            break
        lr = base_lr * lr_factor(progress, milestones, gamma)
        for g in optimizer.param_groups:
            g["lr"] = lr
        batch = next(batches)
        labels = batch.labels.to(device, non_blocking=True)
        with torch.autocast(device_type=device.type, dtype=amp_dtype, enabled=use_amp):
            sils = batch.sils.to(device, non_blocking=True).float().div_(255.0)
            ratios = None if batch.ratios is None else batch.ratios.to(device)
            if distill:
                out_s, out_f, l_distill = net(sils, batch.rgb.to(device), ratios)
            else:
                out = net(sils, ratios)
        # the losses in float32: the triplet loss's pairwise distances cancel badly in half precision
        if distill:
            l_s, m_s = branch_loss(out_s, labels, loss_cfg)
            l_f, m_f = branch_loss(out_f, labels, loss_cfg)
            w = loss_cfg.get("weights", [0.425, 0.425, 0.15])  # GADER eq. 6: rgb, silhouette, distill
            loss = w[0] * l_f + w[1] * l_s + w[2] * l_distill.float()
            stats = {**m_s, "rgb_acc": m_f["acc"], "distill": float(l_distill.detach())}
        else:
            loss, stats = branch_loss(out, labels, loss_cfg)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        iteration += 1
        bar.update(1)
        if iteration % log_every == 0:
            rec = {
                "iteration": iteration,
                "elapsed_s": round(elapsed_before + time.time() - start, 1),
                "lr": lr,
                "loss": float(loss.detach()),
                **stats,
            }
            with open(metrics_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
            bar.set_postfix(loss=f"{float(loss.detach()):.3f}", acc=f"{stats['acc']:.2f}")
        if time.time() - last_ckpt >= ckpt_every_s:
            save(latest)
            last_ckpt = time.time()
    bar.close()
    save(latest)
    print(f"done: {iteration} iterations, checkpoint {latest}", flush=True)
    return latest


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(
        prog="python -m training.gait", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--config", required=True)
    ap.add_argument("--out", default=None, help="run folder (default: the recipe's train.out_dir)")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)
    cfg = load_recipe(args.config)
    out = Path(os.path.expanduser(args.out or cfg["train"]["out_dir"]))
    command = f"python -m training.gait --config {args.config}" + (f" --out {args.out}" if args.out else "")
    train(cfg, out, args.resume, command)


if __name__ == "__main__":
    main()
