"""CLIP-GAR model definitions, used by training, evaluation and the pipeline stage.

Tensor layouts: silhouette clips ``x`` are (B, T, 64, 44) float in [0, 1]; part features are
(B, P, C) with P horizontal parts top to bottom; text features are (N_all, d), one row per class
sentence in table order; logits are (B, N_all).

- :class:`GaitVisualEncoder` V: a DeepGaitV2-like pseudo-3-D network (per-frame 3x3 convs and
  temporal 3x1x1 convs in residual blocks), temporal max pooling, horizontal pooling into P parts
  (mean + max) and per-part FCs.
- :class:`AlignHead`: theta (1x1 conv to the text dimension) and the learnable temperature of the
  Align stage; :func:`align_loss` is eq. 1 (symmetric KL between softmax similarities and ground truth).
- :class:`FusionHead`: phi(f_t) + e_text and f_v + e_vis + e_pos concatenated, one transformer
  encoder block, one binary head per class token (eq. 2-3, BCE).
- :class:`ClipGar`: the inference model (V, theta, fusion, stored text features).
- :class:`ClassifierBaseline`: V with plain per-class heads, the paper's table 5 "classification" row.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from stages.attributes.table import CLASS_COUNTS, CLASS_OFFSETS, NUM_CLASSES_ALL


class P3DBlock(nn.Module):
    """Residual pseudo-3-D block on frames (B*T, C, H, W): 3x3 spatial, 3x1x1 temporal, 3x3 spatial.

    Spatial convs run per frame as 2-D convs (far faster than Conv3d on a CPU); the temporal conv
    mixes neighbouring frames and is added residually so the block starts close to a 2-D one.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1) -> None:
        super().__init__()
        self.spatial1 = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.temporal = nn.Conv3d(out_channels, out_channels, (3, 1, 1), 1, (1, 0, 0), bias=False)
        self.bn_t = nn.BatchNorm3d(out_channels)
        self.spatial2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False), nn.BatchNorm2d(out_channels)
            )

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x: (B*T, C, H, W) with T = ``frames`` consecutive frames per clip."""
        y = F.relu(self.bn1(self.spatial1(x)))
        n, c, h, w = y.shape
        clip = y.view(n // frames, frames, c, h, w).transpose(1, 2)  # (B, C, T, H, W)
        y = y + F.relu(self.bn_t(self.temporal(clip))).transpose(1, 2).reshape(n, c, h, w)
        y = self.bn2(self.spatial2(y))
        return F.relu(y + self.shortcut(x))


class GaitVisualEncoder(nn.Module):
    """V(x): (B, T, 64, 44) silhouettes in [0, 1] -> f_v (B, parts, embed_dim).

    channels: stem and three stages. The stem strides 2 (64x44 -> 32x22) and the second stage
    strides 2 again (-> 16x11), so the net trains on a CPU. ``frame_stride`` keeps every n-th frame
    (a 30-frame clip becomes 15 frames at 2) for the same reason, at training and inference alike.
    Temporal pooling is max over frames; horizontal pooling is OpenGait's mean + max over ``parts``
    bins of rows (``parts`` must divide 16); then one FC per part (SeparateFCs).
    """

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 16, 32, 64),
        parts: int = 8,
        embed_dim: int = 128,
        frame_stride: int = 2,
    ) -> None:
        super().__init__()
        if len(channels) != 4:
            raise ValueError(f"channels needs 4 entries (stem + 3 stages), got {channels}")
        if 16 % parts:
            raise ValueError(f"parts must divide the 16 feature rows, got {parts}")
        c0, c1, c2, c3 = channels
        self.parts = parts
        self.embed_dim = embed_dim
        self.frame_stride = frame_stride
        self.stem = nn.Sequential(nn.Conv2d(1, c0, 3, 2, 1, bias=False), nn.BatchNorm2d(c0), nn.ReLU(inplace=True))
        self.blocks = nn.ModuleList([P3DBlock(c0, c1, 1), P3DBlock(c1, c2, 2), P3DBlock(c2, c3, 1)])
        self.part_fc = nn.Parameter(torch.empty(parts, c3, embed_dim))
        nn.init.xavier_uniform_(self.part_fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4 or x.shape[2:] != (64, 44):
            raise ValueError(f"expected (B, T, 64, 44) silhouettes, got {tuple(x.shape)}")
        x = x[:, :: self.frame_stride]
        b, t = x.shape[:2]
        f = self.stem(x.reshape(b * t, 1, 64, 44))
        for block in self.blocks:
            f = block(f, t)
        f = f.view(b, t, *f.shape[1:]).amax(dim=1)  # temporal pooling -> (B, C, 16, 11)
        f = f.view(b, f.shape[1], self.parts, -1)  # horizontal pooling: P bins of consecutive rows
        f = f.mean(-1) + f.amax(-1)  # (B, C, P)
        return torch.einsum("bcp,pce->bpe", f, self.part_fc)


def _attribute_slices() -> list[slice]:
    return [slice(o, o + n) for o, n in zip(CLASS_OFFSETS, CLASS_COUNTS)]


class AlignHead(nn.Module):
    """theta and tau of the Align stage: parts (B, P, C) -> similarity logits (B, N_all) = s / tau.

    theta is a 1x1 conv (a linear map shared by the parts) to the text dimension d; the projected
    parts are averaged into one visual vector per clip before the cosine similarity of eq. 1.
    """

    def __init__(self, in_dim: int, text_dim: int, init_temperature: float = 0.07) -> None:
        super().__init__()
        self.theta = nn.Conv1d(in_dim, text_dim, 1)
        self.log_inv_tau = nn.Parameter(torch.tensor(math.log(1.0 / init_temperature)))

    def visual(self, parts: torch.Tensor) -> torch.Tensor:
        """(B, P, C) -> (B, d), L2-normalised."""
        return F.normalize(self.theta(parts.transpose(1, 2)).mean(dim=2), dim=-1)

    def forward(self, parts: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        scale = self.log_inv_tau.clamp(max=math.log(100.0)).exp()  # CLIP's cap on 1/tau
        return scale * self.visual(parts) @ F.normalize(text, dim=-1).t()


def align_loss(logits: torch.Tensor, truth: torch.Tensor) -> torch.Tensor:
    """Eq. 1 averaged over attributes: 0.5 * (KL(y || p_v2t) + KL(y^T || p_t2v)).

    logits: (B, N_all) similarity / tau; truth: (B, N_all) one-hot per attribute. p_v2t is a softmax
    over each attribute's classes, p_t2v a softmax over the batch for each class; ground-truth rows
    and columns are normalised to distributions, and classes with no positive clip in the batch are
    left out of the text-to-visual term.
    """
    losses = []
    for sl in _attribute_slices():
        lg, y = logits[:, sl], truth[:, sl]
        v2t = F.kl_div(F.log_softmax(lg, dim=1), y / y.sum(1, keepdim=True), reduction="batchmean")
        present = y.sum(0) > 0
        col = y[:, present]
        t2v = F.kl_div(
            F.log_softmax(lg[:, present].t(), dim=1), (col / col.sum(0, keepdim=True)).t(), reduction="batchmean"
        )
        losses.append(0.5 * (v2t + t2v))
    return torch.stack(losses).mean()


def align_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Align-stage prediction: softmax over each attribute's classes, (B, N_all)."""
    return torch.cat([logits[:, sl].softmax(dim=1) for sl in _attribute_slices()], dim=1)


class FusionHead(nn.Module):
    """Fusion stage (eq. 2-3): f_vt = [phi(f_t) + e_text ; f_v + e_vis + e_pos] -> transformer -> H.

    Returns (B, N_all) logits, one binary head H_n per class token n (trained with BCE).
    """

    def __init__(
        self, text_dim: int, channels: int, parts: int, heads: int = 4, ff_mult: int = 2, dropout: float = 0.1
    ) -> None:
        super().__init__()
        self.phi = nn.Conv1d(text_dim, channels, 1)
        self.e_text = nn.Parameter(torch.zeros(1, 1, channels))
        self.e_vis = nn.Parameter(torch.zeros(1, 1, channels))
        self.e_pos = nn.Parameter(torch.zeros(1, parts, channels))
        for p in (self.e_text, self.e_vis, self.e_pos):
            nn.init.trunc_normal_(p, std=0.02)
        # The frozen visual parts are not normalised; LayerNorm puts them on the text tokens' scale.
        self.visual_norm = nn.LayerNorm(channels)
        self.block = nn.TransformerEncoderLayer(
            channels, heads, ff_mult * channels, dropout, batch_first=True, norm_first=True
        )
        self.out_norm = nn.LayerNorm(channels)
        self.head_weight = nn.Parameter(torch.empty(NUM_CLASSES_ALL, channels))
        self.head_bias = nn.Parameter(torch.zeros(NUM_CLASSES_ALL))
        nn.init.xavier_uniform_(self.head_weight)

    def forward(self, parts: torch.Tensor, text: torch.Tensor) -> torch.Tensor:
        b = parts.shape[0]
        t = self.phi(text.t().unsqueeze(0)).transpose(1, 2) + self.e_text  # (1, N_all, C)
        v = self.visual_norm(parts) + self.e_vis + self.e_pos  # (B, P, C)
        fused = self.block(torch.cat([t.expand(b, -1, -1), v], dim=1))
        tokens = self.out_norm(fused[:, :NUM_CLASSES_ALL])  # the text tokens, one per class
        return (tokens * self.head_weight).sum(-1) + self.head_bias


class ClipGar(nn.Module):
    """The CLIP-GAR inference model: clips (B, T, 64, 44) in [0, 1] -> fusion logits (B, N_all).

    ``text_features`` (N_all, d) are the frozen text encoder's sentence embeddings, stored as a buffer
    so that the checkpoint carries them and inference needs no text model.
    """

    def __init__(
        self,
        text_features: torch.Tensor,
        channels: tuple[int, ...] = (16, 16, 32, 64),
        parts: int = 8,
        embed_dim: int = 128,
        frame_stride: int = 2,
        fusion_heads: int = 4,
        fusion_ff_mult: int = 2,
        fusion_dropout: float = 0.1,
    ) -> None:
        super().__init__()
        if text_features.shape[0] != NUM_CLASSES_ALL:
            raise ValueError(f"text_features must have {NUM_CLASSES_ALL} rows, got {tuple(text_features.shape)}")
        text_dim = int(text_features.shape[1])
        self.register_buffer("text_features", text_features.float().clone())
        self.encoder = GaitVisualEncoder(channels, parts, embed_dim, frame_stride)
        self.align = AlignHead(embed_dim, text_dim)
        self.fusion = FusionHead(text_dim, embed_dim, parts, fusion_heads, fusion_ff_mult, fusion_dropout)

    def align_logits(self, x: torch.Tensor) -> torch.Tensor:
        return self.align(self.encoder(x), self.text_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fusion(self.encoder(x), self.text_features)


class ClassifierBaseline(nn.Module):
    """The same visual encoder with plain heads: flattened parts -> (B, N_all) logits (BCE)."""

    def __init__(
        self,
        channels: tuple[int, ...] = (16, 16, 32, 64),
        parts: int = 8,
        embed_dim: int = 128,
        frame_stride: int = 2,
    ) -> None:
        super().__init__()
        self.encoder = GaitVisualEncoder(channels, parts, embed_dim, frame_stride)
        self.norm = nn.LayerNorm(parts * embed_dim)
        self.heads = nn.Linear(parts * embed_dim, NUM_CLASSES_ALL)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.heads(self.norm(self.encoder(x).flatten(1)))


def fusion_probabilities(logits: torch.Tensor) -> torch.Tensor:
    """Per-class sigmoid scores (B, N_all), the paper's thresholded multi-label output."""
    return torch.sigmoid(logits)
