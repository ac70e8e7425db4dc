"""PaddleSeg segmenter: a PP-HumanSeg / PP-LiteSeg exported inference model run on person crops.

The model directory is what PaddleSeg's ``tools/export.py`` writes: a program (``model.json`` with
paddle 3, ``model.pdmodel`` before), ``model.pdiparams`` and optionally ``deploy.yaml``, whose
``Resize`` target size, ``Normalize`` mean/std and program/params names are used when present.
Each person's region (the box with context, at the model input's aspect ratio, so people are not
stretched) is cut out at the model input size, normalised like PaddleSeg's deploy transforms (RGB,
/255, (x - mean) / std), segmented, and the person probability is pasted back into the box. The
output may be a label map (``output_op: argmax``), probabilities (``softmax``) or logits (``none``).

paddle is imported lazily; MKLDNN stays disabled (exported models fail with it on these CPUs).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import yaml

from pipeline.messages import FrameResult
from stages.detect.background import box_pixels
from stages.model_files import ModelFileError, resolve_model_path
from stages.segment import PADDLESEG_MODEL
from stages.segment.crops import cut_region, region_around, region_map_in_box
from stages.segment.masks import with_masks

_INSTALL_HINT = "pip install 'gaitscope[paddle]' (paddlepaddle; paddleseg itself is only needed to export models)"


class PaddleSegUnavailableError(ImportError):
    """paddlepaddle is not installed."""


@dataclass(frozen=True)
class ExportedModel:
    """Where an exported PaddleSeg model's files are and how its inputs are prepared."""

    program: Path
    params: Path
    input_size: tuple[int, int]  # (height, width)
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    @classmethod
    def find(cls, model_dir: Path, input_size: tuple[int, int]) -> ExportedModel:
        """Reads ``deploy.yaml`` when there is one; ``input_size`` is used when it sets none."""
        if not model_dir.is_dir():
            raise FileNotFoundError(
                f"PaddleSeg model directory {model_dir} not found (an exported inference model: "
                "model.json or model.pdmodel, model.pdiparams, deploy.yaml)"
            )
        deploy = _read_deploy(model_dir)
        mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)  # PaddleSeg's Normalize defaults
        for transform in deploy.get("transforms") or []:
            if transform.get("type") == "Resize" and "target_size" in transform:
                width, height = transform["target_size"]  # PaddleSeg gives (width, height)
                input_size = (int(height), int(width))
            if transform.get("type") == "Normalize":
                mean = tuple(float(v) for v in transform.get("mean", mean))
                std = tuple(float(v) for v in transform.get("std", std))
        program = (
            model_dir / deploy["model"] if "model" in deploy else _first(model_dir, ("model.json", "model.pdmodel"))
        )
        params = model_dir / deploy.get("params", "model.pdiparams")
        for path in (program, params):
            if not path.is_file():
                raise FileNotFoundError(f"PaddleSeg model directory {model_dir} has no {path.name}")
        return cls(program, params, input_size, mean, std)  # type: ignore[arg-type]


class PaddleSegSegmenter:
    """Person masks from a PaddleSeg exported model, one crop per detection.

    model_dir: directory of the exported inference model; a relative path is looked up in the
    working directory, then in the models directory (``models_dir``, else ``$GAITSCOPE_MODELS``,
    else ``~/.cache/gaitscope/models``).
    input_height / input_width: model input size (pixels) when deploy.yaml does not give one.
    person_class: class index of "person" in the model's output (1 for PP-HumanSeg).
    threshold: least person probability for a mask pixel.
    crop_scale: the crop is the region with the model input's aspect ratio that holds the box, grown
    this many times and centred on it (context, and people not stretched); black outside the frame.
    max_batch: most crops per forward pass.
    cpu_threads: threads paddle may use.
    """

    def __init__(
        self,
        *,
        model_dir: str = PADDLESEG_MODEL,
        models_dir: str | None = None,
        input_height: int = 192,
        input_width: int = 192,
        person_class: int = 1,
        threshold: float = 0.5,
        crop_scale: float = 1.3,
        max_batch: int = 16,
        cpu_threads: int = 1,
    ) -> None:
        self.model = ExportedModel.find(resolve_model_path(model_dir, models_dir), (input_height, input_width))
        try:
            from paddle import inference
        except ImportError as error:
            raise PaddleSegUnavailableError(f"the paddleseg segmenter needs paddlepaddle: {_INSTALL_HINT}") from error
        config = inference.Config(str(self.model.program), str(self.model.params))
        config.disable_gpu()
        config.disable_mkldnn()
        config.disable_glog_info()
        config.set_cpu_math_library_num_threads(cpu_threads)
        try:
            self._predictor = inference.create_predictor(config)
        except Exception as error:  # noqa: BLE001 - paddle raises its own types for unreadable programs
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            reason = lines[-1][:160] if lines else type(error).__name__
            raise ModelFileError(self.model.program, f"PaddleSeg cannot load it ({reason})",
                                 "export it again with PaddleSeg's tools/export.py") from None
        self._input = self._predictor.get_input_handle(self._predictor.get_input_names()[0])
        self._output_name = self._predictor.get_output_names()[0]
        self.person_class = person_class
        self.threshold = threshold
        if crop_scale < 1.0:
            raise ValueError(f"crop_scale must be at least 1 (the crop holds the whole box), got {crop_scale}")
        self.crop_scale = float(crop_scale)
        self.max_batch = max_batch

    def process(self, batch: list[FrameResult]) -> list[FrameResult]:
        crops, places = [], []
        for item_index, item in enumerate(batch):
            for row, box in enumerate(item.detections.xyxy):
                box_px = box_pixels(box, item.frame.size)
                if box_px[2] <= box_px[0] or box_px[3] <= box_px[1]:
                    continue  # a box with no pixels in the frame keeps an empty mask
                region = region_around(box, self.crop_scale, self.model.input_size)
                crops.append(cut_region(item.frame.image, region, self.model.input_size))
                places.append((item_index, row, box_px, region))
        probabilities = self.person_probability(crops)
        masks = [np.zeros((len(item.detections), *item.frame.size), dtype=bool) for item in batch]
        for (item_index, row, (x1, y1, x2, y2), region), prob in zip(places, probabilities):
            # The crop has context around the box; only the box's part becomes the mask.
            masks[item_index][row, y1:y2, x1:x2] = region_map_in_box(prob, region, (x1, y1, x2, y2)) >= self.threshold
        return [
            FrameResult(item.frame, with_masks(item.detections, item_masks), item.ended_track_ids)
            for item, item_masks in zip(batch, masks)
        ]

    def person_probability(self, crops: list[np.ndarray]) -> list[np.ndarray]:
        """Crops (h, w, 3) uint8 BGR -> person probability maps (H_in, W_in) float32 in 0..1."""
        out: list[np.ndarray] = []
        for start in range(0, len(crops), self.max_batch):
            inputs = np.stack([self._prepare(crop) for crop in crops[start : start + self.max_batch]])
            self._input.reshape(list(inputs.shape))
            self._input.copy_from_cpu(inputs)
            self._predictor.run()
            raw = self._predictor.get_output_handle(self._output_name).copy_to_cpu()
            out.extend(self._to_probability(raw))
        return out

    def _prepare(self, crop: np.ndarray) -> np.ndarray:
        height, width = self.model.input_size
        rgb = cv2.cvtColor(cv2.resize(crop, (width, height), interpolation=cv2.INTER_LINEAR), cv2.COLOR_BGR2RGB)
        normalised = (rgb.astype(np.float32) / 255.0 - np.float32(self.model.mean)) / np.float32(self.model.std)
        return np.ascontiguousarray(normalised.transpose(2, 0, 1))

    def _to_probability(self, raw: np.ndarray) -> np.ndarray:
        """Model output -> (N, H, W) float32 person probability."""
        if raw.ndim == 3 or (raw.ndim == 4 and raw.shape[1] == 1 and np.issubdtype(raw.dtype, np.integer)):
            labels = raw.reshape(raw.shape[0], raw.shape[-2], raw.shape[-1])
            return (labels == self.person_class).astype(np.float32)
        if raw.ndim != 4:
            raise ValueError(f"unexpected PaddleSeg output shape {raw.shape}; expected (N, H, W) or (N, C, H, W)")
        scores = raw.astype(np.float32)
        if scores.min() < 0.0 or scores.max() > 1.0 or not np.allclose(scores.sum(axis=1), 1.0, atol=1e-3):
            scores = np.exp(scores - scores.max(axis=1, keepdims=True))  # logits -> softmax
            scores /= scores.sum(axis=1, keepdims=True)
        return scores[:, self.person_class]


def _read_deploy(model_dir: Path) -> dict:
    for name in ("deploy.yaml", "deploy.yml"):
        path = model_dir / name
        if path.is_file():
            with path.open() as handle:
                return (yaml.safe_load(handle) or {}).get("Deploy", {})
    return {}


def _first(model_dir: Path, names: tuple[str, ...]) -> Path:
    for name in names:
        if (model_dir / name).is_file():
            return model_dir / name
    return model_dir / names[0]
