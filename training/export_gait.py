"""Ship a trained gait checkpoint: strip training state, write weights/<name>.pt and its manifest.

    python -m training.export_gait --checkpoint ~/.cache/gaitscope/runs/gar_casiab_cpu/latest.pt \
        --name gar_casiab --eval /tmp/casia_eval.json --command "python -m training.gait ..."

The manifest (weights/<name>.json) records file, sha256, the training command, the data, the
metrics from the evaluation JSON (``python -m evaluation.gait evaluate --out``), the report
cards (``python -m evaluation.gait report --out``), the model and training config, the cached
feature files, and the creation time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
from pathlib import Path

import torch

from stages.checkpoints import sha256_of
from stages.gait.weights import load_checkpoint

WEIGHTS_DIR = Path(__file__).resolve().parents[1] / "weights"


def _same_weights(a: dict, b: dict) -> bool:
    return (
        a.get("config") == b["config"]
        and a["model"].keys() == b["model"].keys()
        and all(torch.equal(a["model"][k], b["model"][k]) for k in b["model"])
    )


def interpolate(ckpt: dict, other: dict, alpha: float) -> dict:
    """Weight-space interpolation ``alpha * ckpt + (1 - alpha) * other`` of two checkpoints of one
    architecture, e.g. a fine-tuned model and its starting point (WiSE-FT: the fine-tuned model's
    robustness with most of the starting point's clean accuracy). A classifier with more classes
    keeps its extra rows; integer buffers (BatchNorm's batch counter) come from ``ckpt``.

    ``other`` without ``ckpt``'s motion profile reads as one whose output layer is zero (what a new
    profile starts at): the blend keeps ``ckpt``'s profile with its output scaled by ``alpha``."""
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"alpha must be in [0, 1], got {alpha}")
    profile_missing = not any(name.startswith("MotionProfile.") for name in other["model"])
    layers = [int(name.split(".")[2]) for name in ckpt["model"] if name.startswith("MotionProfile.mlp.")]
    output_layer = f"MotionProfile.mlp.{max(layers, default=0)}."
    state = {}
    for name, value in ckpt["model"].items():
        if name.startswith("MotionProfile.") and profile_missing:
            state[name] = alpha * value if name.startswith(output_layer) else value
            continue
        if name not in other["model"]:
            raise ValueError(f"{name} is missing from the checkpoint to interpolate with")
        base = other["model"][name]
        if not value.is_floating_point():
            state[name] = value
        elif value.shape == base.shape:
            state[name] = alpha * value + (1 - alpha) * base
        elif name.endswith("BNNecks.fc_bin") and value.shape[:2] == base.shape[:2] and value.shape[2] >= base.shape[2]:
            mixed = value.clone()
            mixed[:, :, : base.shape[2]] = alpha * value[:, :, : base.shape[2]] + (1 - alpha) * base
            state[name] = mixed
        else:
            raise ValueError(f"{name}: shapes {tuple(value.shape)} and {tuple(base.shape)} cannot be interpolated")
    return {**ckpt, "model": state}


def keep_classes(ckpt: dict, classes: int) -> dict:
    """The checkpoint with its training classifier cut to its first ``classes`` identities. Inference
    never uses the classifier; with thousands of synthetic training identities it is most of the file,
    and a fine-tuning run started from the cut weights keeps these rows (training.gait.init_from)."""
    state = dict(ckpt["model"])
    weight = state["BNNecks.fc_bin"]
    if not 0 < classes <= weight.shape[2]:
        raise ValueError(f"classes must be in [1, {weight.shape[2]}], got {classes}")
    state["BNNecks.fc_bin"] = weight[:, :, :classes].clone()
    config = {**ckpt["config"], "class_num": classes} if "config" in ckpt else ckpt.get("config")
    return {**ckpt, "model": state, "config": config}


def half_precision(ckpt: dict) -> dict:
    """The checkpoint with its floating-point tensors stored as float16: half the file, for models
    whose float32 file would weigh on the repository (loading casts them back to float32)."""
    state = {k: v.half() if v.is_floating_point() else v for k, v in ckpt["model"].items()}
    return {**ckpt, "model": state}


def export(
    checkpoint: Path,
    name: str,
    command: str,
    data: str,
    evaluation: dict | None,
    extra: dict,
    interpolate_with: Path | None = None,
    alpha: float = 1.0,
    classes: int | None = None,
    half: bool = False,
) -> Path:
    ckpt = load_checkpoint(checkpoint)
    if interpolate_with is not None:
        ckpt = interpolate(ckpt, load_checkpoint(interpolate_with), alpha)
        extra = {**extra, "interpolation": {"with": str(interpolate_with), "alpha": alpha}}
    if classes is not None:
        ckpt = keep_classes(ckpt, classes)
        extra = {**extra, "classifier_classes_kept": classes}
    if half:
        ckpt = half_precision(ckpt)
        extra = {**extra, "stored_as": "float16"}
    out = WEIGHTS_DIR / f"{name}.pt"
    shipped = {"model": ckpt["model"], "config": ckpt["config"], "iteration": ckpt.get("iteration")}
    if not (out.is_file() and _same_weights(load_checkpoint(out), shipped)):  # manifest-only updates keep the file
        torch.save(shipped, out)
    recipe = json.loads(ckpt["recipe"]) if "recipe" in ckpt else None
    manifest = {
        "file": out.name,
        "sha256": sha256_of(out),
        "command": command,
        "data": data,
        "metrics": evaluation or {},
        "config": {
            "model": ckpt["config"],
            "recipe": recipe,
            "iterations": ckpt.get("iteration"),
            "train_seconds": round(float(ckpt.get("elapsed_s", 0))),
        },
        "created": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }
    out.with_suffix(".json").write_text(json.dumps(manifest, indent=1))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--name", required=True)
    ap.add_argument("--command", required=True, help="the exact training command")
    ap.add_argument(
        "--data",
        default="CASIA-B subjects 001-074 (all 10 conditions x 11 views, sequences >= 10 frames), "
        "from ../shared/data/casia-b",
    )
    ap.add_argument("--eval", default=None, help="JSON written by python -m evaluation.gait evaluate --out")
    ap.add_argument(
        "--report",
        action="append",
        default=[],
        help="JSON written by python -m evaluation.gait report --out (repeatable; kept under 'report')",
    )
    ap.add_argument("--interpolate-with", default=None, help="checkpoint to interpolate with (e.g. the starting point)")
    ap.add_argument("--alpha", type=float, default=1.0, help="weight of --checkpoint in the interpolation")
    ap.add_argument("--classes", type=int, default=None,
                    help="keep the training classifier's first N identities only (inference does not use it)")
    ap.add_argument("--half", action="store_true", help="store the weights as float16 (half the file)")
    args = ap.parse_args()
    evaluation, extra = None, {}
    if args.eval:
        evaluation = json.loads(Path(args.eval).read_text())
        extra["features"] = {"test": evaluation.pop("features", None)}
    if args.report:
        extra["report"] = [json.loads(Path(p).read_text()) for p in args.report]
    interpolate_with = Path(args.interpolate_with).expanduser() if args.interpolate_with else None
    print(
        export(
            Path(args.checkpoint).expanduser(),
            args.name,
            args.command,
            args.data,
            evaluation,
            extra,
            interpolate_with,
            args.alpha,
            args.classes,
            args.half,
        )
    )


if __name__ == "__main__":
    main()
