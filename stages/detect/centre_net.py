"""A small CenterNet person detector that reads a static camera's frame and its background-subtraction
foreground together ("Objects as Points", Zhou et al. 2019, at a few hundred MFLOPs).

Input: ``(N, 4, H, W)`` float32, the frame's RGB in 0..1 and the cleaned MOG2 foreground (0 or 1) of
`stages.detect.background.BackgroundModel`, at the background model's working size, H and W multiples
of 16. Output at stride 4: a person-centre heatmap (logits), the box's log width and height in output
cells and the centre's sub-cell offset. The foreground channel tells the network where something
moved; the image tells it how many people that is and where each one's outline runs, which a blob of
two people walking one behind the other does not.

One definition for training (`training/person_detector.py`) and inference (`stages/detect/centre.py`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

STRIDE = 4  # output cells per input pixel, both axes
INPUT_MULTIPLE = 16  # H and W must be multiples of this


@dataclass(frozen=True)
class CentreNetConfig:
    """widths: channels at strides 2, 4, 8 and 16; context_dilations: dilated 3x3 convolutions at stride
    16, after two at stride 8 (a receptive field for people from 20 to 350 px tall at the working size)."""

    widths: tuple[int, int, int, int] = (24, 32, 64, 96)
    context_dilations: tuple[int, ...] = (1, 2, 4)

    def to_dict(self) -> dict:
        return {k: list(v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict) -> CentreNetConfig:
        return cls(widths=tuple(int(w) for w in d["widths"]),
                   context_dilations=tuple(int(x) for x in d["context_dilations"]))


def _conv(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class PersonCentreNet(nn.Module):
    """Frame + foreground -> (heatmap logits (N, 1, H/4, W/4), log size (N, 2, ..), offset (N, 2, ..))."""

    def __init__(self, config: CentreNetConfig = CentreNetConfig()) -> None:
        super().__init__()
        self.config = config
        w2, w4, w8, w16 = config.widths
        self.stem = nn.Sequential(_conv(4, w2, stride=2), _conv(w2, w2))
        self.down4 = nn.Sequential(_conv(w2, w4, stride=2), _conv(w4, w4))
        self.down8 = nn.Sequential(_conv(w4, w8, stride=2), _conv(w8, w8), _conv(w8, w8, dilation=2))
        self.down16 = _conv(w8, w16, stride=2)
        self.context = nn.Sequential(*[_conv(w16, w16, dilation=d) for d in config.context_dilations])
        self.reduce16 = nn.Conv2d(w16, w8, 1)
        self.lateral = nn.Conv2d(w4, w8, 1)
        self.fuse = _conv(w8, w8)
        self.heatmap = nn.Conv2d(w8, 1, 1)
        self.size = nn.Conv2d(w8, 2, 1)
        self.offset = nn.Conv2d(w8, 2, 1)
        # CenterNet's prior: almost every cell is background at the start
        nn.init.constant_(self.heatmap.bias, -4.6)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        s4 = self.down4(self.stem(x))
        s8 = self.down8(s4)
        s16 = self.context(self.down16(s8))
        s8 = s8 + F.interpolate(self.reduce16(s16), size=s8.shape[-2:], mode="nearest")
        up = F.interpolate(s8, size=s4.shape[-2:], mode="nearest")
        features = self.fuse(up + self.lateral(s4))
        return self.heatmap(features), self.size(features), self.offset(features)


def network_input(image_rgb: np.ndarray, foreground: np.ndarray) -> np.ndarray:
    """(h, w, 3) uint8 RGB and (h, w) bool foreground -> (4, H, W) float32, padded with zeros at the
    bottom and right to multiples of 16."""
    h, w = foreground.shape
    padded_h = -(-h // INPUT_MULTIPLE) * INPUT_MULTIPLE
    padded_w = -(-w // INPUT_MULTIPLE) * INPUT_MULTIPLE
    out = np.zeros((4, padded_h, padded_w), dtype=np.float32)
    out[:3, :h, :w] = image_rgb.transpose(2, 0, 1) / np.float32(255.0)
    out[3, :h, :w] = foreground
    return out


def decode_centres(
    heatmap: np.ndarray, size: np.ndarray, offset: np.ndarray, score_threshold: float, max_people: int = 100
) -> tuple[np.ndarray, np.ndarray]:
    """One image's outputs (heatmap probabilities (h, w), log size (2, h, w), offset (2, h, w)) ->
    boxes (K, 4) xyxy in input pixels and scores (K,): the local maxima (3x3) above the threshold."""
    peaks = torch.from_numpy(heatmap)[None, None]
    local_max = F.max_pool2d(peaks, 3, stride=1, padding=1)[0, 0].numpy()
    ys, xs = np.nonzero((heatmap >= score_threshold) & (heatmap == local_max))
    scores = heatmap[ys, xs]
    order = np.argsort(-scores)[:max_people]
    ys, xs, scores = ys[order], xs[order], scores[order]
    cx = (xs + offset[0, ys, xs]) * STRIDE
    cy = (ys + offset[1, ys, xs]) * STRIDE
    half_w = np.exp(np.clip(size[0, ys, xs], -5.0, 8.0)) * STRIDE / 2
    half_h = np.exp(np.clip(size[1, ys, xs], -5.0, 8.0)) * STRIDE / 2
    boxes = np.stack([cx - half_w, cy - half_h, cx + half_w, cy + half_h], axis=1).astype(np.float32)
    return boxes.reshape(-1, 4), scores.astype(np.float32)
