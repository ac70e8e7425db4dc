"""Mask refiner: a small U-Net that corrects BlazePose's person mask with the crop and the detector's mask.

BlazePose (``stages.segment.pose_crop``) is trained on people who fill its 256x256 crop; surveillance
people 45-100 pixels tall come out with parts of limbs and coats missing, and the gait embedding of
such silhouettes loses most people across cameras (``docs/gait.md``, "Where gait loses people"). The
background-subtraction mask of the classic detector has the limbs but also shadows and neighbours.
The refiner sees both, with the crop itself, on a ``REFINE_SIZE`` region around the person's box
(``REFINE_SCALE`` times what the box needs), and returns the person's mask logits there. Input
channels (``refiner_input``): RGB in [-0.5, 0.5], BlazePose's logits clipped to +-8 and divided by 4,
the detector's mask of the box (zeros where the detector gives none), and the box itself.

One model definition serves training (``training.mask_refiner``) and the segmenter below.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pipeline.messages import FrameResult
from stages.checkpoints import sha256_of
from stages.detect.background import box_pixels
from stages.segment import POSE_MODEL
from stages.segment.crops import Region, region_around, region_map_in_box, region_map_onto
from stages.segment.masks import segment_rows
from stages.segment.pose_crop import PoseCropSegmenter

REFINE_SIZE = (96, 64)  # (height, width): a 45-100 px person at about its own resolution
REFINE_SCALE = 1.25
CHANNELS = 6
FORMAT = "gaitscope.mask_refiner/1"
DEFAULT_WEIGHTS = Path(__file__).resolve().parents[2] / "weights" / "mask_refiner.pt"


@dataclass(frozen=True)
class RefinerConfig:
    """widths: channels of the encoder's levels (each level halves the resolution)."""

    widths: tuple[int, ...] = (16, 32, 64)

    def to_dict(self) -> dict:
        return {"widths": list(self.widths)}

    @classmethod
    def from_dict(cls, data: dict) -> RefinerConfig:
        return cls(widths=tuple(int(w) for w in data["widths"]))


def _block(c_in: int, c_out: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
        nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True),
    )


class MaskRefiner(nn.Module):
    """(B, CHANNELS, H, W) inputs -> (B, H, W) mask logits; H and W divisible by 2 ** (levels - 1)."""

    def __init__(self, config: RefinerConfig = RefinerConfig()) -> None:
        super().__init__()
        self.config = config
        widths = config.widths
        self.down = nn.ModuleList([_block(CHANNELS if i == 0 else widths[i - 1], w) for i, w in enumerate(widths)])
        self.up = nn.ModuleList([_block(widths[i + 1] + widths[i], widths[i]) for i in range(len(widths) - 1)])
        self.head = nn.Conv2d(widths[0], 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for i, block in enumerate(self.down):
            x = block(x if i == 0 else F.max_pool2d(x, 2))
            skips.append(x)
        for i in reversed(range(len(self.up))):
            x = F.interpolate(x, size=skips[i].shape[-2:], mode="bilinear", align_corners=False)
            x = self.up[i](torch.cat([x, skips[i]], dim=1))
        return self.head(x)[:, 0]


def refiner_input(image: np.ndarray, box: np.ndarray, pose_logits: np.ndarray, pose_region: Region,
                  detector_mask: np.ndarray | None) -> tuple[np.ndarray, Region]:
    """One person's inputs: ((CHANNELS, *REFINE_SIZE) float32, the region they cover).

    image: the frame, BGR uint8; box: xyxy; pose_logits: BlazePose's map over ``pose_region``;
    detector_mask: the detector's full-frame bool mask of this box, or None."""
    frame_h, frame_w = image.shape[:2]
    region = region_around(box, REFINE_SCALE, REFINE_SIZE)
    whole = Region(0.0, 0.0, float(frame_w), float(frame_h))
    rgb = np.stack(
        [region_map_onto(image[..., c], whole, region, REFINE_SIZE, outside=0.0) for c in (2, 1, 0)]
    ) / 255.0 - 0.5
    pose = np.clip(region_map_onto(pose_logits, pose_region, region, REFINE_SIZE), -8.0, 8.0) / 4.0
    if detector_mask is None:
        detected = np.zeros(REFINE_SIZE, np.float32)
    else:
        detected = region_map_onto(detector_mask.astype(np.float32), whole, region, REFINE_SIZE, outside=0.0)
    x1, y1, x2, y2 = box_pixels(box, (frame_h, frame_w))  # the box's pixels as ones, zeros around them
    boxed = region_map_onto(np.ones((y2 - y1, x2 - x1), np.float32), Region(x1, y1, x2 - x1, y2 - y1), region,
                            REFINE_SIZE, outside=0.0) if x2 > x1 and y2 > y1 else np.zeros(REFINE_SIZE, np.float32)
    return np.concatenate([rgb, pose[None], detected[None], boxed[None]]).astype(np.float32), region


def refiner_inputs(pose: PoseCropSegmenter, people: list[tuple[np.ndarray, np.ndarray]],
                   detector_masks: list[np.ndarray | None]) -> tuple[list[np.ndarray], list[Region]]:
    """``refiner_input`` of each (frame BGR uint8, box xyxy) pair, BlazePose run on its own crop of each:
    (inputs, regions). detector_masks: the detector's full-frame mask of each box, or None."""
    logits, pose_regions = pose.crop_logits(people)
    made = [refiner_input(image, box, values, pose_region, detected)
            for (image, box), values, pose_region, detected in zip(people, logits, pose_regions, detector_masks)]
    return [x for x, _ in made], [region for _, region in made]


def save_refiner(path: str | Path, model: MaskRefiner) -> str:
    """Write the weights and architecture to ``path``; returns the file's sha256."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(
        {
            "format": FORMAT,
            "model_config": model.config.to_dict(),
            "input": {"size": list(REFINE_SIZE), "scale": REFINE_SCALE, "channels": CHANNELS},
            "state_dict": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        },
        path,
    )
    return sha256_of(path)


def load_refiner(path: str | Path) -> tuple[MaskRefiner, str]:
    """Model in eval mode and its version string ``mask_refiner@<sha256[:12]>``."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"mask refiner weights not found at {path}; train them with "
                                "`python -m training.mask_refiner --config configs/train/mask_refiner.yaml`")
    data = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"{path} is not a gaitscope mask refiner checkpoint (format {FORMAT})")
    expected = {"size": list(REFINE_SIZE), "scale": REFINE_SCALE, "channels": CHANNELS}
    if data.get("input") != expected:
        raise ValueError(f"{path} was trained for inputs {data.get('input')}, this code makes {expected}")
    model = MaskRefiner(RefinerConfig.from_dict(data["model_config"]))
    model.load_state_dict(data["state_dict"])
    model.eval()
    return model, f"mask_refiner@{sha256_of(path)[:12]}"


class RefinedPoseSegmenter:
    """BlazePose's person mask on tracked crops, corrected by the mask refiner (module docstring).

    weights: the refiner's checkpoint (default: the shipped ``weights/mask_refiner.pt``).
    threads: BlazePose's CPU threads (the refiner runs on torch's); the other options are ``PoseCropSegmenter``'s.
    """

    def __init__(
        self,
        *,
        weights: str | None = None,
        model: str = POSE_MODEL,
        models_dir: str | None = None,
        runtime: str = "auto",
        threads: int = 1,
        crop_scale: float = 1.3,
        min_height: int = 40,
        tracked_only: bool = True,
        max_batch: int = 8,
    ) -> None:
        self.pose = PoseCropSegmenter(model=model, models_dir=models_dir, runtime=runtime, threads=threads,
                                      crop_scale=crop_scale, min_height=min_height, tracked_only=tracked_only,
                                      max_batch=max_batch)
        self.refiner, self.version = load_refiner(weights or DEFAULT_WEIGHTS)

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        return segment_rows(batch, self.pose.rows_to_segment, self.box_masks)

    def box_masks(self, people: list[tuple[np.ndarray, np.ndarray]],
                  detector_masks: list[np.ndarray | None] | None = None) -> list[np.ndarray]:
        """(frame BGR uint8, box xyxy) pairs, with the detector's full-frame mask of each box (None: none)
        -> each person's mask over its box's pixels (``box_pixels`` bounds), bool."""
        if not people:
            return []
        inputs, regions = refiner_inputs(self.pose, people, detector_masks or [None] * len(people))
        refined = self.refine(np.stack(inputs))
        return [
            region_map_in_box(values, region, box_pixels(box, image.shape[:2])) > 0.0
            for (image, box), values, region in zip(people, refined, regions)
        ]

    @property
    def crop_scale(self) -> float:
        return self.pose.crop_scale

    @property
    def min_height(self) -> int:
        return self.pose.min_height

    def refine(self, inputs: np.ndarray) -> np.ndarray:
        """(N, CHANNELS, *REFINE_SIZE) -> (N, *REFINE_SIZE) mask logits."""
        with torch.inference_mode():
            return self.refiner(torch.from_numpy(inputs)).numpy()
