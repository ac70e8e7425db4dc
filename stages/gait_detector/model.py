"""GADER's light-weight DHS classifier (sec. 3.1.2, eq. 1): five conv layers, temporal max pooling, MLP.

Input layout: a DHS window ``(N, 1, W, t)``: W = silhouette width (44) along the height of the
image, t = frames along its width. The convolutions pad the spatial axis but not time ("valid" in
time) and grow their temporal reach by dilation instead of striding, so the feature at time
position ``p`` depends on frames ``[p, p + receptive_field)`` only. Hence features computed once
over a whole track and max-pooled over a window's positions are exactly the features of that
window classified alone: :meth:`DHSClassifier.classify_windows` scores every window of a track
with one convolution pass plus one batched MLP call.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
from torch import nn

CLASSES: tuple[str, ...] = ("full_walking", "full_standing", "partial_walking", "partial_standing")
FULL_WALKING = 0


def class_index(full_body: bool, walking: bool) -> int:
    """Index into :data:`CLASSES` of {full body, partial} x {walking, standing}."""
    return (0 if full_body else 2) + (0 if walking else 1)


@dataclass(frozen=True)
class ClassifierConfig:
    """Architecture hyper-parameters (stored in the checkpoint beside the weights).

    width: DHS height = silhouette width in pixels.
    channels: output channels of the five conv layers.
    time_dilations: temporal dilation of each layer (kernel 3); receptive field
    1 + 2 * sum(time_dilations) frames.
    spatial_strides: stride of each layer along the spatial axis (strided convolutions shrink it
    instead of pooling layers, which cost more than the convolutions on CPU at these sizes).
    hidden: MLP hidden units.
    """

    width: int = 44
    channels: tuple[int, ...] = (8, 16, 16, 32, 32)
    time_dilations: tuple[int, ...] = (1, 1, 2, 2, 2)
    spatial_strides: tuple[int, ...] = (2, 2, 2, 2, 1)
    hidden: int = 64

    def __post_init__(self) -> None:
        if not len(self.channels) == len(self.time_dilations) == len(self.spatial_strides) == 5:
            raise ValueError("the GADER classifier has exactly five conv layers")

    @property
    def receptive_field(self) -> int:
        """Frames one temporal feature position sees; the shortest window the classifier accepts."""
        return 1 + 2 * sum(self.time_dilations)

    @property
    def pooled_width(self) -> int:
        w = self.width
        for stride in self.spatial_strides:
            w = (w - 1) // stride + 1  # kernel 3, padding 1
        return w

    def to_dict(self) -> dict:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> ClassifierConfig:
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in data.items()})


class DHSClassifier(nn.Module):
    """Four-way {full, partial} x {walking, standing} classifier of DHS windows."""

    def __init__(self, config: ClassifierConfig = ClassifierConfig()) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        c_in = 1
        for c_out, dilation, stride in zip(config.channels, config.time_dilations, config.spatial_strides):
            layers += [
                nn.Conv2d(c_in, c_out, 3, stride=(stride, 1), padding=(1, 0), dilation=(1, dilation), bias=False),
                nn.BatchNorm2d(c_out),
                nn.ReLU(inplace=True),
            ]
            c_in = c_out
        self.backbone = nn.Sequential(*layers)
        self.embedding_dim = config.channels[-1] * config.pooled_width
        self.mlp = nn.Sequential(
            nn.Linear(self.embedding_dim, config.hidden),
            nn.ReLU(inplace=True),
            nn.Linear(config.hidden, len(CLASSES)),
        )

    def temporal_features(self, dhs: torch.Tensor) -> torch.Tensor:
        """DHS ``(N, 1, W, T)`` with T >= receptive field -> ``(N, D, T - receptive_field + 1)``."""
        if dhs.shape[-1] < self.config.receptive_field:
            raise ValueError(f"DHS has {dhs.shape[-1]} frames; the classifier needs >= {self.config.receptive_field}")
        f = self.backbone(dhs)
        return f.flatten(1, 2)

    def forward(self, windows: torch.Tensor) -> torch.Tensor:
        """Windows ``(N, 1, W, t)`` -> logits ``(N, 4)``: conv, max over all of t, MLP (eq. 1)."""
        return self.mlp(self.temporal_features(windows).amax(dim=-1))

    def classify_windows(self, dhs: torch.Tensor, starts: torch.Tensor, stops: torch.Tensor) -> torch.Tensor:
        """Logits ``(K, 4)`` of windows ``[starts[k], stops[k])`` of one DHS ``(1, 1, W, T)``.

        Equal to ``forward`` on each window cut out alone; windows must be >= receptive field long.
        """
        features = self.temporal_features(dhs)[0]  # (D, P): position p covers frames [p, p + rf)
        spans = stops - starts - self.config.receptive_field + 1  # positions inside each window
        pooled = torch.empty(len(starts), features.shape[0], dtype=features.dtype)
        for span in torch.unique(spans).tolist():  # one gather per window length
            rows = torch.nonzero(spans == span).flatten()
            runs = features.unfold(1, span, 1)  # (D, P - span + 1, span) view
            pooled[rows] = runs[:, starts[rows]].amax(dim=-1).T
        return self.mlp(pooled)
