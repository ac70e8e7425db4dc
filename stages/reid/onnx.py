"""ONNX appearance ReID: OSNet-style exports (torchreid and the like) run on the tracks' crops.

The model takes ``[N, 3, 256, 128]`` RGB normalised with ImageNet mean/std and returns one feature
vector per crop. Each crop's feature is L2-normalised; a window's embedding is the renormalised
mean over its crops (the same pooling as the project's own appearance model). onnxruntime runs the
crops batched; without it OpenCV's dnn runs them one at a time.
"""

from __future__ import annotations

import cv2
import numpy as np

from pipeline.messages import TrackWindow
from stages.checkpoints import sha256_of
from stages.model_files import ModelFileError, resolve_model_path
from stages.reid import OSNET_MODEL
from stages.reid.model import MEAN, STD
from stages.reid.stage import check_routes, embed_windows
from stages.runtimes import OnnxModel

MISSING_HINT = "export a torchreid OSNet model to ONNX (torchreid's model zoo), or set reid.model"


class OnnxReID:
    """Appearance embeddings from an ONNX person-ReID model.

    model: the ``.onnx`` file; relative paths are looked up in the models directory (``models_dir``,
    else ``$GAITSCOPE_MODELS``, else ``~/.cache/gaitscope/models``).
    input_height / input_width: the model's input size in pixels (crops are resized to it).
    runtime: "auto" (onnxruntime when installed, else OpenCV's dnn), "onnxruntime" or "opencv".
    routes: "all" (every window, so the gallery can fuse appearance with gait) or "appearance" (windows the
        gait detector sent to appearance).
    max_frames: at most this many crops per window, spread evenly. batch: crops per model call.
    """

    def __init__(
        self,
        *,
        model: str = OSNET_MODEL,
        models_dir: str | None = None,
        input_height: int = 256,
        input_width: int = 128,
        runtime: str = "auto",
        threads: int = 1,
        routes: str = "all",
        max_frames: int = 16,
        batch: int = 32,
    ) -> None:
        check_routes(routes)
        path = resolve_model_path(model, models_dir)
        self.model = OnnxModel(
            path,
            what="ReID",
            input_shape=(3, input_height, input_width),
            missing_hint=MISSING_HINT,
            runtime=runtime,
            threads=threads,
        )
        probe = self.model.run(np.zeros((1, 3, input_height, input_width), dtype=np.float32))
        if probe.ndim != 2 or probe.shape[0] != 1:
            raise ModelFileError(path, f"ReID model gives output {list(probe.shape)} for one crop, expected one "
                                 "feature vector (1, D)", "give a ReID model that embeds one crop")
        self.version = f"{path.stem}@{sha256_of(path)[:12]}"
        self.input_size = (input_height, input_width)
        self.routes = routes
        self.max_frames = max_frames if max_frames > 0 else None
        self.batch = max(1, batch)

    def process(self, batch: list[TrackWindow]) -> list[TrackWindow]:
        return embed_windows(batch, self.routes, self.max_frames, self.embed_crops, self.version)

    def embed_crops(self, crops_bgr: np.ndarray) -> np.ndarray:
        """(n, h, w, 3) uint8 BGR crops -> (n, D) float32 L2-normalised features."""
        out = []
        for start in range(0, len(crops_bgr), self.batch):
            features = self.model.run(self._prepare(crops_bgr[start : start + self.batch]))
            features = features.reshape(len(features), -1).astype(np.float32)
            out.append(features / np.maximum(np.linalg.norm(features, axis=1, keepdims=True), 1e-12))
        return np.concatenate(out) if out else np.zeros((0, 0), dtype=np.float32)

    def _prepare(self, crops_bgr: np.ndarray) -> np.ndarray:
        height, width = self.input_size
        resized = np.stack([cv2.resize(c, (width, height), interpolation=cv2.INTER_LINEAR) for c in crops_bgr])
        rgb = resized[..., ::-1].astype(np.float32) / np.float32(255.0)
        normalised = (rgb - np.float32(MEAN)) / np.float32(STD)
        return np.ascontiguousarray(normalised.transpose(0, 3, 1, 2))
