"""GAR on a GaitBase-style backbone, with OpenGait-compatible parameter names.

Layout conventions (OpenGait's): silhouettes enter as ``[n, c, s, h, w]`` (batch, channels,
frames, height, width); a 2-D backbone runs per frame (:class:`SetBlockWrapper`), frames are
max-pooled (:class:`TemporalMaxPool`, sequence-length aware), rows are pooled into parts
(:func:`horizontal_pooling`, mean + max), each part gets its own FC (:class:`SeparateFCs`), and a
BNNeck (:class:`SeparateBNNecks`) gives the classification logits at training time.

The parameter names of :class:`GaitBase` without ratio attention are exactly OpenGait's
``Baseline`` with a ``ResNet9`` backbone (``Backbone.forward_block.conv1.conv.weight``, ...,
``FCs.fc_bin``, ``BNNecks.fc_bin``, ``BNNecks.bn1d.*``), so a GaitBase checkpoint loads strictly.

GAR additions (GADER sec. 3.2): ``ratio_attention`` (r = sigmoid(conv1d(ratios over time)),
multiplying the stem's output frame by frame) and, at training time only, an RGB branch with
1x1 adapters for feature distillation (:class:`GARDistillation`).

Optional, off by default: ``motion_lags`` adds :class:`MotionProfile`, the one cue that max-pooling
over frames cannot see: how the walk repeats in time (cadence), read from the silhouettes'
self-similarity and added to every part's embedding.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import torch
import torch.nn.functional as F
from torch import nn


@dataclass(frozen=True)
class GaitBaseConfig:
    """Hyper-parameters of :class:`GaitBase` (the keys of OpenGait's ``model_cfg``, flattened).

    channels/layers/strides: per ResNet stage (OpenGait's GaitBase: 64/128/256/512, 1/1/1/1,
    1/2/2/1). maxpool: a 3x3/2 max-pool after the stem (halves h and w, ~4x cheaper backbone).
    parts: horizontal bins. embed_dim: per-part embedding size C. class_num: training identities.
    ratio_attention: add GAR's ratio attention (a conv1d of ``ratio_kernel`` taps over time).
    motion_lags: add :class:`MotionProfile` over lags 1..motion_lags frames (0: none); it reads frames in
    their order at a steady rate (``MOTION_FRAME_RATE``), so sequences must be consecutive frames at that rate.
    """

    channels: tuple[int, ...] = (64, 128, 256, 512)
    layers: tuple[int, ...] = (1, 1, 1, 1)
    strides: tuple[int, ...] = (1, 2, 2, 1)
    maxpool: bool = False
    in_channels: int = 1
    parts: int = 16
    embed_dim: int = 256
    class_num: int = 74
    ratio_attention: bool = False
    ratio_kernel: int = 3
    motion_lags: int = 0

    def __post_init__(self) -> None:
        if not (len(self.channels) == len(self.layers) == len(self.strides) == 4):
            raise ValueError("channels, layers and strides need one entry per ResNet stage (4)")
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "layers", tuple(int(c) for c in self.layers))
        object.__setattr__(self, "strides", tuple(int(c) for c in self.strides))

    def to_dict(self) -> dict:
        d = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}

    @classmethod
    def from_dict(cls, d: dict) -> GaitBaseConfig:
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown gait model keys: {sorted(unknown)}")
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in d.items()})


class BasicConv2d(nn.Module):
    """A bias-free conv whose parameter sits at ``.conv`` (OpenGait's naming)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int, padding: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=padding, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs + identity or 1x1 projection), torchvision's names."""

    def __init__(self, inplanes: int, planes: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = None
        if stride != 1 or inplanes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(inplanes, planes, 1, stride=stride, bias=False), nn.BatchNorm2d(planes)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class ResNet9(nn.Module):
    """OpenGait's ResNet9 backbone (per frame): stem conv3x3 + BN + ReLU (+ max-pool), 4 stages.

    ``stem`` and ``stages`` are split so that GAR's ratio attention can act between them and the
    distillation can read every intermediate feature.
    """

    def __init__(
        self, channels: Sequence[int], layers: Sequence[int], strides: Sequence[int], in_channels: int, maxpool: bool
    ) -> None:
        super().__init__()
        self.maxpool_flag = maxpool
        self.conv1 = BasicConv2d(in_channels, channels[0], 3, 1, 1)
        self.bn1 = nn.BatchNorm2d(channels[0])
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        inplanes = channels[0]
        for i, (planes, blocks, stride) in enumerate(zip(channels, layers, strides), start=1):
            if blocks >= 1:
                mods = [BasicBlock(inplanes, planes, stride)] + [
                    BasicBlock(planes, planes, 1) for _ in range(blocks - 1)
                ]
                setattr(self, f"layer{i}", nn.Sequential(*mods))
                inplanes = planes
            else:
                setattr(self, f"layer{i}", nn.Identity())
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def stem(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        return self.maxpool(x) if self.maxpool_flag else x

    def stages(self) -> list[nn.Module]:
        return [self.layer1, self.layer2, self.layer3, self.layer4]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.stages():
            x = layer(x)
        return x


class SetBlockWrapper(nn.Module):
    """Run a 2-D module on every frame: ``[n, c, s, h, w] -> [n, c', s, h', w']``."""

    def __init__(self, forward_block: nn.Module) -> None:
        super().__init__()
        self.forward_block = forward_block

    @staticmethod
    def per_frame(module, x: torch.Tensor) -> torch.Tensor:
        n, c, s, h, w = x.shape
        y = module(x.transpose(1, 2).reshape(n * s, c, h, w))
        return y.reshape(n, s, *y.shape[1:]).transpose(1, 2).contiguous()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.per_frame(self.forward_block, x)


def temporal_max_pool(x: torch.Tensor, seq_lengths: Sequence[int] | None) -> torch.Tensor:
    """Max over frames. x: [n, c, s, h, w] -> [n, c, h, w].

    With ``seq_lengths`` the n=1 batch holds several sequences packed along s (OpenGait's seqL),
    and the result has one row per sequence.
    """
    if seq_lengths is None:
        return x.max(dim=2)[0]
    if x.shape[0] != 1 or sum(seq_lengths) != x.shape[2]:
        raise ValueError(
            f"packed sequences need n=1 and sum(seq_lengths)={x.shape[2]}, got n={x.shape[0]}, sum={sum(seq_lengths)}"
        )
    return torch.cat([part.max(dim=2)[0] for part in torch.split(x, list(seq_lengths), dim=2)])


def horizontal_pooling(x: torch.Tensor, bins: int) -> torch.Tensor:
    """[n, c, h, w] -> [n, c, bins]: each horizontal strip pooled by mean + max."""
    n, c = x.shape[:2]
    z = x.reshape(n, c, bins, -1)
    return z.mean(-1) + z.max(-1)[0]


class SeparateFCs(nn.Module):
    """One linear map per part: [n, c_in, p] -> [n, c_out, p]. ``fc_bin``: (p, c_in, c_out)."""

    def __init__(self, parts_num: int, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.fc_bin = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(parts_num, in_channels, out_channels)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.permute(2, 0, 1).matmul(self.fc_bin).permute(1, 2, 0).contiguous()


class SeparateBNNecks(nn.Module):
    """BNNeck per part (one BatchNorm1d over c*p) + cosine classifier per part.

    [n, c, p] -> (bn features [n, c, p] L2-normalised per part, logits [n, class_num, p]).
    """

    def __init__(self, parts_num: int, in_channels: int, class_num: int) -> None:
        super().__init__()
        self.fc_bin = nn.Parameter(nn.init.xavier_uniform_(torch.zeros(parts_num, in_channels, class_num)))
        self.bn1d = nn.BatchNorm1d(in_channels * parts_num)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        n, c, p = x.shape
        x = self.bn1d(x.reshape(n, c * p)).reshape(n, c, p)
        feature = F.normalize(x.permute(2, 0, 1), dim=-1)  # [p, n, c]
        logits = feature.matmul(F.normalize(self.fc_bin, dim=1))  # [p, n, class_num]
        return feature.permute(1, 2, 0).contiguous(), logits.permute(1, 2, 0).contiguous()


class RatioAttention(nn.Module):
    """GADER eq. 2: r = sigmoid(conv1d(ratios over time)), one weight per frame.

    ratios: [n, s] (box height / 64) -> weights [n, 1, s, 1, 1]. Packed sequences (n=1 with
    ``seq_lengths``) are convolved one by one, so no sequence sees its neighbour's ratios.
    """

    def __init__(self, kernel_size: int) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2)

    def forward(self, ratios: torch.Tensor, seq_lengths: Sequence[int] | None = None) -> torch.Tensor:
        chunks = [ratios] if seq_lengths is None else list(torch.split(ratios, list(seq_lengths), dim=1))
        out = torch.cat([torch.sigmoid(self.conv(c.unsqueeze(1))) for c in chunks], dim=2)  # [n, 1, s]
        return out[..., None, None]


MOTION_FRAME_RATE = 25.0
"""Frames per second the motion profile's lags count in: the rate of everything it is trained on (CASIA-B and
the rendered walkers). Sequences from other rates are resampled to it (``stages.gait.embedding.steady_rate_positions``)."""


class MotionProfile(nn.Module):
    """Self-similarity of a walk over time, mapped to an offset of every part's embedding.

    For each lag L in 1..max_lag, the mean squared distance between frames L apart (silhouettes
    average-pooled 4x4, divided by twice the sequence's variance, so that unrelated frames read 1): a
    dip at one step and one stride. Unlike the silhouettes' shape, the walk's rhythm looks the same
    from every side (BenAbdelkader et al., "Gait recognition using image self-similarity", 2004),
    which is what head-on against side-on matching lacks. Lags a sequence is too short for are marked
    unseen. The last layer starts at zero, so a pretrained model's embeddings are unchanged until
    training moves it.
    """

    def __init__(self, max_lag: int, parts: int, embed_dim: int, hidden: int = 64) -> None:
        super().__init__()
        self.max_lag, self.parts, self.embed_dim = max_lag, parts, embed_dim
        self.mlp = nn.Sequential(nn.Linear(2 * max_lag, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, parts * embed_dim))
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def profile(self, sils: torch.Tensor) -> torch.Tensor:
        """sils [n, s, h, w] (one length) -> [n, 2 * max_lag]: distances per lag, then 1 where seen."""
        n, s = sils.shape[:2]
        x = F.avg_pool2d(sils.reshape(n * s, 1, *sils.shape[2:]).float(), 4).reshape(n, s, -1)
        x = x - x.mean(1, keepdim=True)
        scale = 2 * (x * x).sum(-1).mean(1, keepdim=True) + 1e-6  # mean distance of unrelated frames
        seen = min(s - 1, self.max_lag)
        distances = x.new_ones(n, self.max_lag)  # lags the sequence is too short for read as unrelated frames
        for lag in range(1, seen + 1):
            distances[:, lag - 1] = ((x[:, lag:] - x[:, :-lag]) ** 2).sum(-1).mean(1) / scale[:, 0]
        mask = (torch.arange(self.max_lag, device=x.device) < seen).to(x.dtype)
        return torch.cat([distances, mask.expand(n, -1)], 1)

    def forward(self, sils: torch.Tensor, seq_lengths: Sequence[int] | None = None) -> torch.Tensor:
        """sils [n, s, h, w] (or n=1 packed with ``seq_lengths``) -> offsets [n, embed_dim, parts]."""
        if seq_lengths is None:
            profile = self.profile(sils)
        else:
            profile = torch.cat([self.profile(part) for part in torch.split(sils, list(seq_lengths), dim=1)])
        return self.mlp(profile.to(self.mlp[0].weight.dtype)).reshape(-1, self.embed_dim, self.parts)


@dataclass
class GaitOutput:
    """embeddings: [n, p, c] per-part embeddings used for retrieval (before the BNNeck).
    logits: [n, p, class_num]. features: intermediate per-frame maps [n, c_i, s, h_i, w_i]
    (stem then each stage), filled only when asked for (distillation)."""

    embeddings: torch.Tensor
    logits: torch.Tensor
    features: list[torch.Tensor] = field(default_factory=list)


class GaitBase(nn.Module):
    """GaitBase-style gait network with optional GAR ratio attention.

    forward(sils [n, s, h, w] in 0..1, ratios [n, s] or None, seq_lengths) -> GaitOutput.
    Without ratios the attention is skipped (identity), which is what CASIA-B needs.
    """

    def __init__(self, config: GaitBaseConfig) -> None:
        super().__init__()
        self.config = config
        self.Backbone = SetBlockWrapper(
            ResNet9(config.channels, config.layers, config.strides, config.in_channels, config.maxpool)
        )
        self.FCs = SeparateFCs(config.parts, config.channels[-1], config.embed_dim)
        self.BNNecks = SeparateBNNecks(config.parts, config.embed_dim, config.class_num)
        self.RatioAttention = RatioAttention(config.ratio_kernel) if config.ratio_attention else None
        self.MotionProfile = (MotionProfile(config.motion_lags, config.parts, config.embed_dim)
                              if config.motion_lags > 0 else None)

    def forward(
        self,
        sils: torch.Tensor,
        ratios: torch.Tensor | None = None,
        seq_lengths: Sequence[int] | None = None,
        return_features: bool = False,
    ) -> GaitOutput:
        x = sils.unsqueeze(1) if sils.dim() == 4 else sils  # [n, c, s, h, w]
        motion = None if self.MotionProfile is None else self.MotionProfile(x[:, 0], seq_lengths)
        net: ResNet9 = self.Backbone.forward_block
        x = SetBlockWrapper.per_frame(net.stem, x)
        if self.RatioAttention is not None and ratios is not None:
            x = x * self.RatioAttention(ratios.to(x.dtype), seq_lengths)
        features = [x] if return_features else []
        for layer in net.stages():
            x = SetBlockWrapper.per_frame(layer, x)
            if return_features:
                features.append(x)
        pooled = temporal_max_pool(x, seq_lengths)  # [n, c, h, w]
        parts = horizontal_pooling(pooled, self.config.parts)  # [n, c, p]
        embed = self.FCs(parts)  # [n, C, p]
        if motion is not None:
            embed = embed + motion
        _, logits = self.BNNecks(embed)
        return GaitOutput(embed.permute(0, 2, 1).contiguous(), logits.permute(0, 2, 1).contiguous(), features)


class GARDistillation(nn.Module):
    """GAR training model (GADER sec. 3.2.2-3.3): a silhouette GaitBase, an RGB GaitBase of the
    same shape (3 input channels) and 1x1 conv adapters C_i on the silhouette's intermediate
    features. Only ``silhouette`` is kept for inference.

    forward(sils [n, s, h, w], rgb [n, 3, s, h, w], ratios) -> (silhouette out, rgb out, distill loss)
    where distill = mean_i MSE(stopgrad(F_i^rgb), C_i(F_i^sil)).
    """

    def __init__(self, config: GaitBaseConfig) -> None:
        super().__init__()
        self.silhouette = GaitBase(config)
        rgb_cfg = GaitBaseConfig.from_dict({**config.to_dict(), "in_channels": 3, "motion_lags": 0})
        self.rgb = GaitBase(rgb_cfg)
        self.adapters = nn.ModuleList(nn.Conv2d(c, c, 1) for c in (config.channels[0], *config.channels))

    def forward(self, sils: torch.Tensor, rgb: torch.Tensor, ratios: torch.Tensor | None = None):
        out_s = self.silhouette(sils, ratios, return_features=True)
        out_f = self.rgb(rgb, ratios, return_features=True)
        losses = [
            F.mse_loss(SetBlockWrapper.per_frame(adapter, fs), ff.detach())
            for adapter, fs, ff in zip(self.adapters, out_s.features, out_f.features)
        ]
        return out_s, out_f, torch.stack(losses).mean()
