"""Train the mask refiner (``stages.segment.refine``) on rendered sites' ground-truth person masks.

    python -m training.mask_refiner --config configs/train/mask_refiner.yaml

Each site of the recipe is rendered once (the score fusion's cache of rendered sites) and its cameras
run through the classic detector, as the pipeline runs them. Every ``every``-th frame, each detection
matching a ground-truth person (box IoU >= 0.5, at least ``min_height`` pixels tall) becomes a sample:
the refiner's inputs (the crop, BlazePose's logits on its own crop, the detector's mask, the box) and
the person's visible mask, all on the refiner's region. Samples are cached per site. Training sites and
validation sites are kept apart (other seeds, other people); the checkpoint with the best validation
mask IoU is kept. Mask IoU is scored inside the box, where the segmenter's mask lives.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from stages.segment.refine import REFINE_SIZE, MaskRefiner, RefinerConfig, refiner_inputs, save_refiner
from training.recipe_cli import command_line, recipe_main

log = logging.getLogger("training.mask_refiner")
SAMPLES_FORMAT = "gaitscope.mask_refiner_samples/2"


@dataclass
class Samples:
    """inputs: (N, CHANNELS, H, W) float16; target: (N, H, W) bool; heights: (N,) box heights in pixels."""

    inputs: np.ndarray
    target: np.ndarray
    heights: np.ndarray

    @classmethod
    def join(cls, parts: list[Samples]) -> Samples:
        return cls(*(np.concatenate([getattr(p, k) for p in parts]) for k in ("inputs", "target", "heights")))


def extract_site(scene: Path, every: int, min_height: float, models_dir: str | None = None) -> Samples:
    """Samples of one rendered site (module docstring)."""
    import supervision as sv

    from evaluation.front_end import match
    from pipeline.config import build
    from pipeline.messages import Frame, FrameResult
    from stages.catalog import DETECTORS
    from stages.segment.crops import Region, region_map_onto
    from stages.segment.pose_crop import PoseCropSegmenter
    from synth.groundtruth import decode_mask, load_groundtruth
    from synth.video import iter_video

    truth = load_groundtruth(scene / "groundtruth.json")
    frame_size = tuple(truth["frame_size"])
    pose = PoseCropSegmenter(models_dir=models_dir)
    inputs, targets, heights = [], [], []
    for camera in truth["cameras"]:
        name = camera["name"]
        detect = build(DETECTORS.load("classic"), {}, "detect")
        records = truth["frames"][name]
        for index, image in enumerate(iter_video(scene / f"{name}.mp4")):
            (detected,) = detect.process([FrameResult(Frame(name, index, index / 25.0, image), sv.Detections.empty())])
            if index % every or index >= len(records) or not records[index]:
                continue
            gt_boxes = np.array([r["box"] for r in records[index]], np.float64).reshape(-1, 4)
            boxes = detected.detections.xyxy
            people = []
            for g, d in match(gt_boxes, boxes):
                height = boxes[d, 3] - boxes[d, 1]
                if height >= min_height and boxes[d, 2] > boxes[d, 0]:
                    people.append((g, d, height))
            if not people:
                continue
            masks = detected.detections.mask
            made, regions = refiner_inputs(pose, [(image, boxes[d]) for _, d, _ in people],
                                           [None if masks is None else masks[d] for _, d, _ in people])
            for (g, d, height), x, region in zip(people, made, regions):
                whole_gt = decode_mask(records[index][g]["mask"], frame_size).astype(np.float32)
                target = region_map_onto(whole_gt, Region(0.0, 0.0, frame_size[1], frame_size[0]), region,
                                         REFINE_SIZE, outside=0.0) > 0.5
                inputs.append(x.astype(np.float16))
                targets.append(target)
                heights.append(height)
        log.info("%s/%s: %d samples so far", scene.parent.name, name, len(inputs))
    return Samples(np.stack(inputs), np.stack(targets), np.asarray(heights, np.float32))


def site_samples(site_config: str | Path, cache: str | Path, every: int, min_height: float) -> Samples:
    """A site's samples from the cache, extracted first when absent."""
    from training.site_windows import rendered_scene

    scene = rendered_scene(site_config, cache)
    path = scene.parent / f"refiner-samples-every{every}-h{min_height:g}.npz"
    if path.is_file():
        with np.load(path, allow_pickle=False) as data:
            if str(data["format"]) == SAMPLES_FORMAT:
                return Samples(data["inputs"], data["target"], data["heights"])
    started = time.time()
    samples = extract_site(scene, every, min_height)
    np.savez(path, format=SAMPLES_FORMAT, inputs=samples.inputs, target=samples.target, heights=samples.heights)
    log.info("%s: %d samples in %.0f s -> %s", Path(site_config).stem, len(samples.target), time.time() - started, path)
    return samples


def box_iou(pred: np.ndarray, target: np.ndarray, box: np.ndarray) -> np.ndarray:
    """(N,) IoU of bool maps (N, H, W) inside each sample's box map (N, H, W) bool; 0 where both are empty."""
    pred, target = pred & box, target & box
    inter = (pred & target).sum(axis=(1, 2))
    union = (pred | target).sum(axis=(1, 2))
    return np.where(union > 0, inter / np.maximum(union, 1), 0.0)


def predict(model: MaskRefiner, inputs: np.ndarray, batch: int = 256) -> np.ndarray:
    """(N, H, W) logits for float16 inputs."""
    model.eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(inputs), batch):
            out.append(model(torch.from_numpy(inputs[start:start + batch].astype(np.float32))).numpy())
    return np.concatenate(out) if out else np.zeros((0, *REFINE_SIZE), np.float32)


def scores(model: MaskRefiner, samples: Samples, small_below: float) -> dict[str, float]:
    """Mean in-box mask IoU of the refiner and of BlazePose alone, over all samples and the small ones."""
    box = samples.inputs[:, 5] > 0.5
    refined = box_iou(predict(model, samples.inputs) > 0.0, samples.target, box)
    pose = box_iou(samples.inputs[:, 3] > 0.0, samples.target, box)
    detector = box_iou(samples.inputs[:, 4] > 0.5, samples.target, box)
    small = samples.heights < small_below
    return {
        "samples": int(len(box)),
        "iou_refined": round(float(refined.mean()), 4),
        "iou_pose": round(float(pose.mean()), 4),
        "iou_detector": round(float(detector.mean()), 4),
        "small_samples": int(small.sum()),
        "iou_refined_small": round(float(refined[small].mean()), 4) if small.any() else None,
        "iou_pose_small": round(float(pose[small].mean()), 4) if small.any() else None,
    }


def augment(x: torch.Tensor, y: torch.Tensor, rng: np.random.Generator, drop_detector: float
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mirror half the batch, jitter the crop's brightness and contrast, and blank the detector's mask
    of a share of samples (learned detectors give none)."""
    flip = torch.from_numpy(rng.random(len(x)) < 0.5)
    x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    y = torch.where(flip[:, None, None], y.flip(-1), y)
    gain = torch.from_numpy(rng.uniform(0.7, 1.3, (len(x), 1, 1, 1)).astype(np.float32))
    shift = torch.from_numpy(rng.uniform(-0.15, 0.15, (len(x), 1, 1, 1)).astype(np.float32))
    x = x.clone()
    x[:, :3] = (x[:, :3] * gain + shift).clamp(-0.5, 0.5)
    blank = torch.from_numpy(rng.random(len(x)) < drop_detector)
    x[blank, 4] = 0.0
    return x, y


def train(config: dict) -> dict:
    """Fit the refiner by the recipe; returns its manifest (also written beside the weights)."""
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.set_num_threads(int(config.get("threads", 1)))
    every, min_height = int(config["every"]), float(config["min_height"])
    cache = config["cache"]
    train_set = Samples.join([site_samples(s, cache, every, min_height) for s in config["sites"]])
    val_set = Samples.join([site_samples(s, cache, every, min_height) for s in config["val_sites"]])
    log.info("samples: %d train, %d validation", len(train_set.target), len(val_set.target))
    model = MaskRefiner(RefinerConfig(tuple(config["widths"])))
    optimiser = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]),
                                  weight_decay=float(config["weight_decay"]))
    iterations, batch = int(config["iterations"]), int(config["batch"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=float(config["lr"]), total_steps=iterations)
    small_below = float(config["small_below"])
    best, history, started = None, [], time.time()
    output = Path(config["output"])
    for step in range(1, iterations + 1):
        model.train()
        rows = rng.integers(0, len(train_set.target), batch)
        x = torch.from_numpy(train_set.inputs[rows].astype(np.float32))
        y = torch.from_numpy(train_set.target[rows].astype(np.float32))
        x, y = augment(x, y, rng, float(config["drop_detector"]))
        logits = model(x)
        probs = torch.sigmoid(logits)
        dice = 1.0 - (2 * (probs * y).sum((1, 2)) + 1.0) / (probs.sum((1, 2)) + y.sum((1, 2)) + 1.0)
        loss = F.binary_cross_entropy_with_logits(logits, y) + dice.mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % int(config["val_every"]) == 0 or step == iterations:
            measured = scores(model, val_set, small_below)
            history.append({"iteration": step, "loss": round(loss.item(), 4), **measured})
            log.info("iteration %d: loss %.4f, validation IoU %.4f (BlazePose %.4f)", step, loss.item(),
                     measured["iou_refined"], measured["iou_pose"])
            if best is None or measured["iou_refined"] > best["iou_refined"]:
                best = {"iteration": step, **measured}
                sha = save_refiner(output, model)
    manifest = {
        "weights": output.name,
        "sha256": sha,
        "format": "gaitscope.mask_refiner/1",
        "trained": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line("training.mask_refiner"),
        "config": config,
        "data": {"train_sites": config["sites"], "val_sites": config["val_sites"],
                 "train_samples": int(len(train_set.target)), "val_samples": int(len(val_set.target)),
                 "description": "rendered multi-camera sites (synth.scene): classic detector boxes matched to "
                                "ground-truth people, their visible masks as targets"},
        "metrics": {"kept": best, "seconds": round(time.time() - started, 1)},
        "history": history,
    }
    output.with_suffix(".json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    return recipe_main("training.mask_refiner", __doc__, "configs/train/mask_refiner.yaml", train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
