"""PaddleSeg backend on tiny models saved with paddle.jit.save (the export format PaddleSeg uses).

The models are fixed 1x1 convolutions that call dark pixels "person", so the whole path (crop,
resize to the deploy.yaml input size, normalise, predict, read a label map or logits, paste the
mask back into the box) is checked against a known answer. Skipped without paddlepaddle.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import supervision as sv

paddle = pytest.importorskip("paddle")

from pipeline.messages import Frame, FrameResult
from stages.segment.paddleseg import PaddleSegSegmenter

SIZE = (120, 160)


class DarkIsPerson(paddle.nn.Layer):
    """Logits: background = mean of the normalised channels, person = minus that."""

    def __init__(self, argmax: bool) -> None:
        super().__init__()
        self.argmax = argmax
        self.conv = paddle.nn.Conv2D(3, 2, 1)
        weight = np.stack([np.full((3, 1, 1), 1 / 3), np.full((3, 1, 1), -1 / 3)]).astype("float32")
        self.conv.weight.set_value(weight)
        self.conv.bias.set_value(np.zeros(2, dtype="float32"))

    def forward(self, x):
        logits = self.conv(x)
        return paddle.argmax(logits, axis=1) if self.argmax else logits


def _export(directory: Path, argmax: bool, size: tuple[int, int]) -> Path:
    net = DarkIsPerson(argmax)
    net.eval()
    spec = [paddle.static.InputSpec([None, 3, None, None], "float32", name="x")]
    paddle.jit.save(net, str(directory / "model"), input_spec=spec)
    program = "model.json" if (directory / "model.json").is_file() else "model.pdmodel"
    (directory / "deploy.yaml").write_text(
        "Deploy:\n"
        f"  model: {program}\n"
        "  params: model.pdiparams\n"
        "  transforms:\n"
        f"  - type: Resize\n    target_size: [{size[1]}, {size[0]}]\n"
        "  - type: Normalize\n    mean: [0.5, 0.5, 0.5]\n    std: [0.5, 0.5, 0.5]\n"
    )
    return directory


@pytest.mark.parametrize("argmax", [True, False], ids=["label-map", "logits"])
def test_paddleseg_masks_dark_person_inside_boxes(tmp_path: Path, argmax: bool) -> None:
    model_dir = _export(tmp_path, argmax, size=(64, 32))
    stage = PaddleSegSegmenter(model_dir=str(model_dir), crop_scale=1.2)
    assert stage.model.input_size == (64, 32)
    image = np.full((*SIZE, 3), 220, dtype=np.uint8)
    truth = np.zeros(SIZE, dtype=bool)
    truth[30:90, 40:70] = True
    truth[20:100, 140:160] = True  # a second person cut by the right edge
    image[truth] = 20
    boxes = np.array([[35, 25, 75, 95], [135, 15, 160, 105]], dtype=np.float32)
    frames = [
        FrameResult(Frame("a", 0, 0.0, image), sv.Detections(xyxy=boxes, tracker_id=np.array([3, 4]))),
        FrameResult(Frame("b", 0, 0.0, image), sv.Detections(xyxy=np.zeros((0, 4), np.float32))),
    ]
    first, second = stage.process(frames)
    masks = first.detections.mask
    assert masks.dtype == bool and masks.shape == (2, *SIZE)
    assert first.detections.tracker_id.tolist() == [3, 4]
    for box, mask in zip(boxes.astype(int), masks):
        region = truth[box[1] : box[3], box[0] : box[2]]
        predicted = mask[box[1] : box[3], box[0] : box[2]]
        assert (predicted == region).mean() > 0.93  # edges blur by a pixel through the 64x32 input
        outside = mask.copy()
        outside[box[1] : box[3], box[0] : box[2]] = False
        assert not outside.any()
    assert second.detections.mask.shape == (0, *SIZE)
