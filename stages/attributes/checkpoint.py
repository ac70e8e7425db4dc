"""Save and load attribute model checkpoints (plain dicts of tensors, strings and numbers).

Layout: ``{"format", "kind": "clip_gar" | "baseline", "model": constructor kwargs, "clip_frames",
"table": [[name, [labels]], ...], "text_encoder": description, "state_dict"}``. Loaded with
``torch.load(weights_only=True)``; the stored attribute table must equal the code's table, so a
checkpoint can never silently map logits onto the wrong classes.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from stages.attributes.model import ClassifierBaseline, ClipGar
from stages.attributes.table import NUM_CLASSES_ALL, table_signature
from stages.checkpoints import sha256_of

FORMAT = "gaitscope.attributes.v1"
KINDS = ("clip_gar", "baseline")


def save_checkpoint(
    path: str | Path, model: nn.Module, kind: str, model_kwargs: dict, clip_frames: int, text_encoder: str = ""
) -> str:
    """Write the checkpoint atomically; returns its sha256."""
    if kind not in KINDS:
        raise ValueError(f"unknown checkpoint kind {kind!r}; valid: {', '.join(KINDS)}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "kind": kind,
        "model": {k: list(v) if isinstance(v, tuple) else v for k, v in model_kwargs.items()},
        "clip_frames": int(clip_frames),
        "table": table_signature(),
        "text_encoder": text_encoder,
        "state_dict": {k: v.detach().cpu().clone() for k, v in model.state_dict().items()},
    }
    tmp = path.with_suffix(path.suffix + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return sha256_of(path)


def load_checkpoint(path: str | Path) -> tuple[nn.Module, dict]:
    """(model in eval mode, metadata without the state_dict). Clear one-line errors for bad files."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"attribute checkpoint not found: {path} (train one with "
            "`python -m training.attributes --config configs/train/clip_gar.yaml`)"
        )
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unreadable file gets the same actionable message
        raise ValueError(f"{path} is not a readable torch checkpoint: {exc}") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gaitscope attribute checkpoint (format {FORMAT})")
    if payload["table"] != table_signature():
        raise ValueError(f"{path} was trained on another attribute table than stages/attributes/table.py")
    kwargs = dict(payload["model"])
    if "channels" in kwargs:
        kwargs["channels"] = tuple(kwargs["channels"])
    state = payload["state_dict"]
    if payload["kind"] == "clip_gar":
        text = state["text_features"]
        if text.shape[0] != NUM_CLASSES_ALL:
            raise ValueError(f"{path}: text features for {text.shape[0]} classes, expected {NUM_CLASSES_ALL}")
        model: nn.Module = ClipGar(text, **kwargs)
    elif payload["kind"] == "baseline":
        model = ClassifierBaseline(**kwargs)
    else:
        raise ValueError(f"{path}: unknown checkpoint kind {payload['kind']!r}")
    model.load_state_dict(state, strict=True)
    model.eval()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["sha256"] = sha256_of(path)
    return model, meta
