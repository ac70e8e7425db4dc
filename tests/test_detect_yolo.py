"""YOLO backend plumbing with models built from ultralytics YAML (random weights, no download)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import supervision as sv

pytest.importorskip("ultralytics")
torch = pytest.importorskip("torch")

from pipeline.messages import Frame, FrameResult
from stages.detect.yolo import MissingWeightsError, YoloDetector


@pytest.fixture(autouse=True)
def _one_thread() -> None:
    torch.set_num_threads(1)


def _two_sources() -> list[FrameResult]:
    rng = np.random.default_rng(0)
    sizes = {"a": (120, 160), "b": (90, 200)}
    return [
        FrameResult(
            Frame(source, index, index / 10, rng.integers(0, 255, (*size, 3), dtype=np.uint8)), sv.Detections.empty()
        )
        for index in range(2)
        for source, size in sizes.items()
    ]


@pytest.mark.parametrize("weights, has_masks", [("yolo11n-seg.yaml", True), ("yolo11n.yaml", False)])
def test_yaml_model_runs_a_batch_of_two_sources(weights: str, has_masks: bool) -> None:
    # Random weights: a near-zero threshold keeps some detections so every field is exercised.
    detector = YoloDetector(weights=weights, image_size=160, confidence=1e-9)
    assert detector.has_masks is has_masks
    batch = _two_sources()
    out = detector.process(batch)
    assert [(r.frame.source_id, r.frame.index) for r in out] == [(r.frame.source_id, r.frame.index) for r in batch]
    assert any(len(r.detections) for r in out)
    for result in out:
        det = result.detections
        height, width = result.frame.size
        assert det.xyxy.dtype == np.float32 and det.xyxy.shape == (len(det), 4)
        assert det.confidence.shape == (len(det),) and np.all(det.class_id == 0)
        if has_masks:
            assert det.mask.dtype == bool and det.mask.shape == (len(det), height, width)
        else:
            assert det.mask is None
    assert detector.process([]) == []


def test_missing_weights_offline_fail_fast_with_one_line() -> None:
    start = time.perf_counter()
    with pytest.raises(MissingWeightsError) as error:
        YoloDetector(weights="/nonexistent/yolo11n-seg.pt")
    assert time.perf_counter() - start < 10.0  # no download attempt and its timeouts, even on a loaded machine
    message = str(error.value)
    assert "\n" not in message and "/nonexistent/yolo11n-seg.pt" in message and "allow_download" in message
