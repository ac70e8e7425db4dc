"""Train the learned person detector (``stages.detect.centre``) on rendered multi-camera sites.

    python -m training.person_detector --config configs/train/person_detector.yaml

Each site of the recipe is rendered once per seed (other people, clothes and lighting on the same
layout; seeds kept apart from the identity benchmark's sites) and each camera runs through the
background model the detector uses, kept off the people by their ground-truth boxes. Every
``every``-th frame after the warm-up becomes a sample: the frame and its foreground at working size,
and the visible boxes of the people at least ``min_visible`` visible. Samples are cached per site.

The network learns CenterNet's targets: a Gaussian peak at each box centre (per-axis spread from the
box size), the box's log size and the centre's sub-cell offset there. Validation sites are kept
apart; the checkpoint with the best F1 at IoU 0.5 on them is kept, and the classic detector is scored
on the same frames for comparison.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
import yaml

from stages.detect.background import BackgroundModel
from stages.detect.centre import BACKGROUND, save_detector
from stages.detect.centre_net import STRIDE, CentreNetConfig, PersonCentreNet, decode_centres, network_input
from training.recipe_cli import command_line, recipe_main

log = logging.getLogger("training.person_detector")
SAMPLES_FORMAT = "gaitscope.person_detector_samples/1"


@dataclass
class Samples:
    """images: (N, h, w, 3) uint8 RGB; foreground: (N, h, w) bool; boxes: (M, 5) float32 rows
    (sample, x1, y1, x2, y2) at working size; classic: (C, 5) the classic detector's boxes, same rows."""

    images: np.ndarray
    foreground: np.ndarray
    boxes: np.ndarray
    classic: np.ndarray

    @classmethod
    def join(cls, parts: list[Samples]) -> Samples:
        offsets = np.cumsum([0] + [len(p.images) for p in parts])[:-1]

        def shifted(rows: np.ndarray, offset: int) -> np.ndarray:
            rows = rows.copy()
            rows[:, 0] += offset
            return rows

        return cls(
            np.concatenate([p.images for p in parts]),
            np.concatenate([p.foreground for p in parts]),
            np.concatenate([shifted(p.boxes, o) for p, o in zip(parts, offsets)]),
            np.concatenate([shifted(p.classic, o) for p, o in zip(parts, offsets)]),
        )

    def boxes_of(self, i: int, classic: bool = False) -> np.ndarray:
        rows = self.classic if classic else self.boxes
        return rows[rows[:, 0] == i, 1:]


def extract_site(scene: Path, every: int, warmup: int, min_visible: float, min_height: float) -> Samples:
    """Samples of one rendered site (module docstring)."""
    import supervision as sv

    from pipeline.messages import Frame, FrameResult
    from stages.detect.classic import ClassicDetector
    from synth.groundtruth import load_groundtruth
    from synth.video import iter_video

    truth = load_groundtruth(scene / "groundtruth.json")
    images, foregrounds, boxes, classic_boxes = [], [], [], []
    for camera in truth["cameras"]:
        name = camera["name"]
        background = BackgroundModel(**BACKGROUND)
        classic = ClassicDetector(warmup_frames=warmup)
        records = truth["frames"][name]
        for index, image in enumerate(iter_video(scene / f"{name}.mp4")):
            foreground = background.foreground(image)
            (found,) = classic.process([FrameResult(Frame(name, index, index / 25.0, image), sv.Detections.empty())])
            people = records[index] if index < len(records) else []
            gt = np.array([p["box"] for p in people if p["visible_fraction"] >= min_visible], np.float32).reshape(-1, 4)
            gt = gt / np.float32(background.scale)
            gt = gt[gt[:, 3] - gt[:, 1] >= min_height]
            protect = np.zeros(foreground.shape, dtype=bool)
            for x1, y1, x2, y2 in np.array([p["box"] for p in people], np.float32).reshape(-1, 4) / background.scale:
                protect[int(y1) : int(np.ceil(y2)), int(x1) : int(np.ceil(x2))] = True
            background.learn(None if background.frames_seen <= warmup else protect)
            if background.frames_seen <= warmup or index % every:
                continue
            small = image if background.scale == 1.0 else cv2.resize(image, foreground.shape[::-1],
                                                                      interpolation=cv2.INTER_AREA)
            sample = len(images)
            images.append(np.ascontiguousarray(small[..., ::-1]))
            foregrounds.append(foreground)
            boxes.extend([[sample, *b] for b in gt])
            classic_boxes.extend([[sample, *b] for b in found.detections.xyxy / background.scale])
        log.info("%s/%s: %d samples so far", scene.parent.name, name, len(images))
    return Samples(
        np.stack(images),
        np.stack(foregrounds),
        np.asarray(boxes, np.float32).reshape(-1, 5),
        np.asarray(classic_boxes, np.float32).reshape(-1, 5),
    )


def rendered_seed(site_config: str | Path, seed: int | None, cache: str | Path) -> Path:
    """The folder of a site rendered with another seed (None: its own), rendered first when absent."""
    from synth.scene import SiteConfig, write_site

    site_config = Path(site_config)
    site = yaml.safe_load(site_config.read_text()) or {}
    name = site_config.stem
    if seed is not None:
        site["seed"] = int(seed)
        name = f"{name}-seed{seed}"
    scene = Path(cache).expanduser() / name / "scene"
    if not (scene / "groundtruth.json").is_file():
        log.info("rendering %s (seed %s) -> %s", site_config, site.get("seed"), scene)
        write_site(SiteConfig.from_dict(site), scene)
    return scene


def site_samples(entry: dict, config: dict) -> list[Samples]:
    """Samples of a recipe's site entry ``{config: PATH, seeds: [..]}`` (seed null: the site's own), cached."""
    out = []
    every, warmup = int(config["every"]), int(config["warmup_frames"])
    min_visible, min_height = float(config["min_visible"]), float(config["min_height"])
    for seed in entry.get("seeds", [None]):
        scene = rendered_seed(entry["config"], seed, config["cache"])
        path = scene.parent / f"detector-samples-every{every}-w{warmup}-v{min_visible:g}-h{min_height:g}.npz"
        if path.is_file():
            with np.load(path, allow_pickle=False) as data:
                if str(data["format"]) == SAMPLES_FORMAT:
                    out.append(Samples(data["images"], data["foreground"], data["boxes"], data["classic"]))
                    continue
        started = time.time()
        samples = extract_site(scene, every, warmup, min_visible, min_height)
        np.savez(path, format=SAMPLES_FORMAT, images=samples.images, foreground=samples.foreground,
                 boxes=samples.boxes, classic=samples.classic)
        log.info("%s: %d samples in %.0f s -> %s", scene.parent.name, len(samples.images), time.time() - started, path)
        out.append(samples)
    return out


def centre_targets(boxes: np.ndarray, out_shape: tuple[int, int], spread: float
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One image's boxes (K, 4) at input size -> heatmap (h, w), size (2, h, w), offset (2, h, w) and
    the centre-cell mask (h, w) at stride 4. The peak's spread on each axis is the box's extent / ``spread``."""
    h, w = out_shape
    heatmap = np.zeros((h, w), np.float32)
    size = np.zeros((2, h, w), np.float32)
    offset = np.zeros((2, h, w), np.float32)
    centre = np.zeros((h, w), bool)
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    for x1, y1, x2, y2 in boxes:
        cx, cy = (x1 + x2) / 2 / STRIDE, (y1 + y2) / 2 / STRIDE
        bw, bh = max((x2 - x1) / STRIDE, 0.5), max((y2 - y1) / STRIDE, 0.5)
        ix, iy = int(np.clip(cx, 0, w - 1)), int(np.clip(cy, 0, h - 1))
        sx, sy = max(bw / spread, 0.5), max(bh / spread, 0.5)
        peak = np.exp(-((xs - ix) ** 2) / (2 * sx * sx) - ((ys - iy) ** 2) / (2 * sy * sy))
        np.maximum(heatmap, peak, out=heatmap)
        size[:, iy, ix] = np.log([bw, bh])
        offset[:, iy, ix] = [cx - ix, cy - iy]
        centre[iy, ix] = True
    return heatmap, size, offset, centre


def focal_loss(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """CenterNet's penalty-reduced focal loss (alpha 2, beta 4), normalised by the number of centres."""
    prob = torch.sigmoid(logits).clamp(1e-4, 1 - 1e-4)
    positive = target >= 1.0
    pos = -torch.log(prob) * (1 - prob) ** 2 * positive
    neg = -torch.log(1 - prob) * prob**2 * (1 - target) ** 4 * ~positive
    return (pos.sum() + neg.sum()) / positive.sum().clamp(min=1)


def zoomed(image: np.ndarray, foreground: np.ndarray, boxes: np.ndarray, rng: np.random.Generator,
           config: dict) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A ``crop`` (h, w) window of the sample seen at a random scale: half the samples at their own
    scale, the rest zoomed by a log-uniform factor in ``zoom`` (people far smaller or larger than on
    the rendered sites, as on real cameras). A box cut by the window stays a target while at least
    ``keep_cut`` of its area is inside, clipped to the window."""
    out_h, out_w = (int(v) for v in config["crop"])
    low, high = (float(v) for v in config["zoom"])
    scale = 1.0 if rng.random() < 0.5 else float(np.exp(rng.uniform(np.log(low), np.log(high))))
    height, width = foreground.shape
    span_w, span_h = out_w / scale, out_h / scale
    x0 = rng.uniform(min(0.0, width - span_w), max(0.0, width - span_w))
    y0 = rng.uniform(min(0.0, height - span_h), max(0.0, height - span_h))
    warp = np.array([[scale, 0.0, -x0 * scale], [0.0, scale, -y0 * scale]], np.float32)
    image = cv2.warpAffine(image, warp, (out_w, out_h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    foreground = cv2.warpAffine(foreground.view(np.uint8), warp, (out_w, out_h), flags=cv2.INTER_NEAREST) > 0
    moved = (boxes - np.array([x0, y0, x0, y0], np.float32)) * np.float32(scale)
    clipped = moved.copy()
    clipped[:, [0, 2]] = clipped[:, [0, 2]].clip(0, out_w)
    clipped[:, [1, 3]] = clipped[:, [1, 3]].clip(0, out_h)

    def area(b: np.ndarray) -> np.ndarray:
        return np.maximum(b[:, 2] - b[:, 0], 0) * np.maximum(b[:, 3] - b[:, 1], 0)

    keep = area(clipped) >= float(config["keep_cut"]) * np.maximum(area(moved), 1e-6)
    return image, foreground, clipped[keep]


def corrupted_foreground(foreground: np.ndarray, rng: np.random.Generator, config: dict) -> np.ndarray:
    """The foreground with the errors of real cameras' background subtraction the renders lack: a pixel
    more or less around every blob (``morph``), holes where a still or background-coloured person fades
    into the model (``holes``: up to half the foreground, in patches), and blobs where nobody is
    (``clutter``: moving leaves, light, shadows), so that the image, not the foreground alone, decides."""
    foreground = foreground.astype(np.uint8)
    height, width = foreground.shape
    if rng.random() < float(config["morph"]):
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3))
        foreground = (cv2.dilate if rng.random() < 0.5 else cv2.erode)(foreground, kernel)
    if rng.random() < float(config["holes"]):
        noise = cv2.resize(rng.random((height // 12 + 2, width // 12 + 2)).astype(np.float32), (width, height))
        foreground[noise < rng.uniform(0.2, 0.5)] = 0
    if rng.random() < float(config["clutter"]):
        for _ in range(int(rng.integers(1, 6))):
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            axes = (int(rng.integers(2, 30)), int(rng.integers(2, 30)))
            cv2.ellipse(foreground, centre, axes, float(rng.uniform(0, 180)), 0, 360, 1, -1)
    return foreground > 0


def batch_tensors(samples: Samples, rows: np.ndarray, rng: np.random.Generator, config: dict
                  ) -> tuple[torch.Tensor, ...]:
    """Inputs and targets of random windows of the given samples (`zoomed`), mirrored and jittered."""
    inputs, heatmaps, sizes, offsets, centres = [], [], [], [], []
    for i in rows:
        image, foreground, boxes = zoomed(samples.images[i], samples.foreground[i], samples.boxes_of(int(i)).copy(),
                                          rng, config)
        if rng.random() < 0.5:
            image, foreground = image[:, ::-1], foreground[:, ::-1]
            width = image.shape[1]
            boxes[:, [0, 2]] = width - boxes[:, [2, 0]]
        gain, shift = rng.uniform(0.7, 1.3), rng.uniform(-25, 25)
        image = np.clip(image.astype(np.float32) * gain + shift, 0, 255).astype(np.uint8)
        foreground = corrupted_foreground(foreground, rng, config)
        x = network_input(np.ascontiguousarray(image), np.ascontiguousarray(foreground))
        out_shape = (x.shape[1] // STRIDE, x.shape[2] // STRIDE)
        heatmap, size, offset, centre = centre_targets(boxes, out_shape, float(config["spread"]))
        inputs.append(x)
        heatmaps.append(heatmap)
        sizes.append(size)
        offsets.append(offset)
        centres.append(centre)
    return tuple(torch.from_numpy(np.stack(a)) for a in (inputs, heatmaps, sizes, offsets, centres))


def loss_of(model: PersonCentreNet, batch: tuple[torch.Tensor, ...], size_weight: float) -> tuple[torch.Tensor, dict]:
    x, heatmap, size, offset, centre = batch
    logits, size_out, offset_out = model(x)
    heat = focal_loss(logits[:, 0], heatmap)
    mask = centre[:, None].expand_as(size_out)
    count = centre.sum().clamp(min=1)
    size_l1 = (size_out - size).abs()[mask].sum() / count
    offset_l1 = (offset_out - offset).abs()[mask].sum() / count
    total = heat + size_weight * size_l1 + offset_l1
    return total, {"heatmap": heat.item(), "size": size_l1.item(), "offset": offset_l1.item()}


def detection_scores(found: list[np.ndarray], samples: Samples, min_height: float) -> dict[str, float]:
    """Precision, recall and F1 at IoU 0.5 over the samples; people shorter than ``min_height`` neither
    count as misses nor make a detection on them a false alarm."""
    from evaluation.front_end import DetectionCounts

    counts = DetectionCounts()
    for i, boxes in enumerate(found):
        gt = samples.boxes_of(i)
        counts.add(gt, gt[:, 3] - gt[:, 1] >= min_height, boxes)
    precision = counts.hits / max(1, counts.hits + counts.false_alarms)
    recall = counts.hits / max(1, counts.hits + counts.misses)
    f1 = 2 * precision * recall / max(1e-9, precision + recall)
    return {"precision": round(precision, 4), "recall": round(recall, 4), "f1": round(f1, 4)}


def evaluate(model: PersonCentreNet, samples: Samples, thresholds: list[float], min_height: float
             ) -> dict[float, dict[str, float]]:
    """Detection scores on whole frames at each score threshold."""
    model.eval()
    found = []
    with torch.inference_mode():
        for start in range(0, len(samples.images), 16):
            rows = range(start, min(start + 16, len(samples.images)))
            x = torch.from_numpy(np.stack([network_input(samples.images[i], samples.foreground[i]) for i in rows]))
            logits, size, offset = model(x)
            probs = torch.sigmoid(logits)[:, 0].numpy()
            for j in range(len(rows)):
                found.append(decode_centres(probs[j], size[j].numpy(), offset[j].numpy(), min(thresholds)))
    return {
        t: detection_scores([boxes[scores >= t] for boxes, scores in found], samples, min_height) for t in thresholds
    }


def train(config: dict) -> dict:
    """Fit the detector by the recipe; returns its manifest (also written beside the weights)."""
    seed = int(config.get("seed", 0))
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    torch.set_num_threads(int(config.get("threads", 1)))
    train_set = Samples.join([s for entry in config["sites"] for s in site_samples(entry, config)])
    val_set = Samples.join([s for entry in config["val_sites"] for s in site_samples(entry, config)])
    log.info("samples: %d train (%d people), %d validation (%d people)", len(train_set.images),
             len(train_set.boxes), len(val_set.images), len(val_set.boxes))
    eval_height, thresholds = float(config["eval_min_height"]), [float(t) for t in config["score_thresholds"]]
    classic = detection_scores([val_set.boxes_of(i, classic=True) for i in range(len(val_set.images))], val_set,
                               eval_height)
    log.info("classic detector on the validation frames: %s", classic)
    model = PersonCentreNet(CentreNetConfig.from_dict(config))
    optimiser = torch.optim.AdamW(model.parameters(), lr=float(config["lr"]),
                                  weight_decay=float(config["weight_decay"]))
    iterations, batch = int(config["iterations"]), int(config["batch"])
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=float(config["lr"]), total_steps=iterations)
    best, history, started = None, [], time.time()
    output = Path(config["output"])
    sha = None
    for step in range(1, iterations + 1):
        model.train()
        rows = rng.integers(0, len(train_set.images), batch)
        loss, parts = loss_of(model, batch_tensors(train_set, rows, rng, config), float(config["size_weight"]))
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        schedule.step()
        if step % int(config["log_every"]) == 0:
            log.info("iteration %d: loss %.4f %s (%.0f s)", step, loss.item(),
                     {k: round(v, 4) for k, v in parts.items()}, time.time() - started)
        if step % int(config["val_every"]) == 0 or step == iterations:
            by_threshold = evaluate(model, val_set, thresholds, eval_height)
            threshold, measured = max(by_threshold.items(), key=lambda item: item[1]["f1"])
            history.append({"iteration": step, "loss": round(loss.item(), 4), "score_threshold": threshold, **measured})
            log.info("iteration %d: validation at %g %s (classic %s)", step, threshold, measured, classic)
            if best is None or measured["f1"] > best["f1"]:
                best = {"iteration": step, "score_threshold": threshold, **measured}
                sha = save_detector(output, model, threshold)
    manifest = {
        "weights": output.name,
        "sha256": sha,
        "format": "gaitscope.person_centrenet/1",
        "trained": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line("training.person_detector"),
        "config": config,
        "data": {"train_sites": config["sites"], "val_sites": config["val_sites"],
                 "train_samples": int(len(train_set.images)), "train_people": int(len(train_set.boxes)),
                 "val_samples": int(len(val_set.images)), "val_people": int(len(val_set.boxes)),
                 "description": "rendered multi-camera sites (synth.scene) with other seeds than the identity "
                                "benchmark's: frames, MOG2 foreground and ground-truth visible boxes"},
        "metrics": {"kept": best, "classic_detector": classic, "min_height": eval_height,
                    "seconds": round(time.time() - started, 1)},
        "history": history,
    }
    output.with_suffix(".json").write_text(json.dumps(manifest, indent=2, allow_nan=False) + "\n")
    return manifest


def main(argv: list[str] | None = None) -> int:
    return recipe_main("training.person_detector", __doc__, "configs/train/person_detector.yaml", train, argv)


if __name__ == "__main__":
    raise SystemExit(main())
