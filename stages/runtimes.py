"""Runtimes for third-party model files: ONNX (onnxruntime, else OpenCV's dnn) and TFLite (LiteRT, else
OpenCV's dnn).

Each wrapper loads a file once and runs a batch of inputs laid out the way the model expects. Any
reason a model cannot be used (file missing, file not a model, input shape not the expected one,
no runtime installed) is a `stages.model_files.ModelFileError` whose message is one line naming the
file, what is wrong and what to do, so an ``auto`` choice can say it and move on to the next
candidate, and a configured backend fails with that one line.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

from stages.model_files import ModelFileError


def _check_file(path: Path, what: str, hint: str) -> None:
    if not path.is_file():
        raise ModelFileError(path, f"{what} model file not found", hint)


def _check_shape(path: Path, what: str, actual: Sequence[object], expected: Sequence[int | None]) -> None:
    """Compare a model's input shape with the expected one (None or a symbolic name = any size)."""
    fixed = [d if isinstance(d, int) and d > 0 else None for d in actual]
    if len(fixed) != len(expected) or any(e is not None and a is not None and a != e for a, e in zip(fixed, expected)):
        wanted = "x".join("N" if e is None else str(e) for e in expected)
        raise ModelFileError(path, f"{what} model takes input {list(actual)}, expected {wanted}",
                             "give a model this backend can run")


class OnnxModel:
    """One ONNX model with one input, run with onnxruntime (batched) or OpenCV's dnn (one item a call).

    input_shape: the expected (C, H, W) of one item; a model with another input is refused.
    missing_hint: what to do when the file is not there (where the official file comes from).
    runtime: "auto" (onnxruntime when installed), "onnxruntime" or "opencv".
    """

    def __init__(
        self,
        path: str | Path,
        *,
        what: str,
        input_shape: tuple[int, int, int],
        missing_hint: str,
        runtime: str = "auto",
        threads: int = 1,
    ) -> None:
        self.path = Path(path)
        _check_file(self.path, what, missing_hint)
        if runtime not in ("auto", "onnxruntime", "opencv"):
            raise ValueError(f"ONNX runtime must be auto, onnxruntime or opencv, got {runtime!r}")
        self.what = what
        self._session = None
        self._net = None
        if runtime in ("auto", "onnxruntime"):
            try:
                import onnxruntime
            except ImportError:
                if runtime == "onnxruntime":
                    raise ModelFileError(self.path, f"{what} model needs onnxruntime, which is not installed",
                                         "pip install onnxruntime") from None
            else:
                options = onnxruntime.SessionOptions()
                options.intra_op_num_threads = max(1, threads)
                options.inter_op_num_threads = 1
                options.log_severity_level = 3
                try:
                    self._session = onnxruntime.InferenceSession(
                        str(self.path), options, providers=["CPUExecutionProvider"]
                    )
                except Exception as error:  # noqa: BLE001 - onnxruntime raises its own exception types
                    raise ModelFileError(self.path, f"not a readable ONNX file ({_first_line(error)})",
                                         f"replace it with the publisher's {what} model") from None
                inputs = self._session.get_inputs()
                if len(inputs) != 1:
                    raise ModelFileError(self.path, f"{what} model has {len(inputs)} inputs, expected 1", "give a single-input model")
                _check_shape(self.path, what, inputs[0].shape, (None, *input_shape))
                self._input_name = inputs[0].name
                self.runtime = "onnxruntime"
        if self._session is None:
            try:
                self._net = cv2.dnn.readNetFromONNX(str(self.path))
            except cv2.error as error:
                raise ModelFileError(self.path, f"not a readable ONNX file ({_first_line(error)})",
                                     f"replace it with the publisher's {what} model") from None
            self.runtime = "opencv"
            self._probe(input_shape)

    def _probe(self, input_shape: tuple[int, int, int]) -> None:
        """OpenCV states no input shape: run one zero item to learn whether the model takes it."""
        try:
            self.run(np.zeros((1, *input_shape), dtype=np.float32))
        except cv2.error as error:
            raise ModelFileError(self.path, f"{self.what} model does not take input {_dims(input_shape)} "
                                 f"({_first_line(error)})", "give a model this backend can run") from None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, C, H, W) float32 -> the first output, (N, ...) float32."""
        if self._session is not None:
            return np.asarray(self._session.run(None, {self._input_name: np.ascontiguousarray(batch)})[0])
        outputs = []
        for item in batch:  # OpenCV's dnn importer fixes a batch of 1 into flatten/Gemm shapes
            self._net.setInput(np.ascontiguousarray(item[None]))
            outputs.append(self._net.forward())
        return np.concatenate(outputs) if outputs else np.zeros((0,), dtype=np.float32)


class TFLiteModel:
    """One TFLite model with one NHWC input, run with LiteRT (``ai-edge-litert``, batched) or OpenCV's dnn.

    input_shape: the expected (H, W, C) of one item. output: name of the output tensor to return.
    missing_hint: what to do when the file is not there.
    runtime: "auto" (LiteRT when installed), "litert" or "opencv".
    """

    def __init__(
        self,
        path: str | Path,
        *,
        what: str,
        input_shape: tuple[int, int, int],
        output: str,
        missing_hint: str,
        runtime: str = "auto",
        threads: int = 1,
    ) -> None:
        self.path = Path(path)
        _check_file(self.path, what, missing_hint)
        if runtime not in ("auto", "litert", "opencv"):
            raise ValueError(f"TFLite runtime must be auto, litert or opencv, got {runtime!r}")
        self.what = what
        self.input_shape = input_shape
        self._interpreter = None
        self._net = None
        self._output = output
        self._batch = 0
        if runtime in ("auto", "litert"):
            try:
                from ai_edge_litert.interpreter import Interpreter
            except ImportError:
                if runtime == "litert":
                    raise ModelFileError(self.path, f"{what} model needs LiteRT, which is not installed",
                                         "pip install ai-edge-litert") from None
            else:
                try:
                    self._interpreter = Interpreter(model_path=str(self.path), num_threads=max(1, threads))
                except (ValueError, RuntimeError) as error:
                    raise ModelFileError(self.path, f"not a readable TFLite file ({_first_line(error)})",
                                         f"replace it with the publisher's {what} model") from None
                inputs = self._interpreter.get_input_details()
                if len(inputs) != 1:
                    raise ModelFileError(self.path, f"{what} model has {len(inputs)} inputs, expected 1", "give a single-input model")
                _check_shape(self.path, what, [int(d) for d in inputs[0]["shape"]], (None, *input_shape))
                outputs = {o["name"]: o["index"] for o in self._interpreter.get_output_details()}
                if output not in outputs:
                    raise ModelFileError(self.path, f"{what} model has no output {output!r} (has {sorted(outputs)})",
                                         f"give the publisher's {what} model")
                self._output_index = outputs[output]
                self.runtime = "litert"
        if self._interpreter is None:
            try:
                self._net = cv2.dnn.readNetFromTFLite(str(self.path))
            except cv2.error as error:
                raise ModelFileError(self.path, f"not a readable TFLite file ({_first_line(error)})",
                                     f"replace it with the publisher's {what} model") from None
            names = sorted(self._net.getUnconnectedOutLayersNames())
            if output not in names:
                raise ModelFileError(self.path, f"{what} model has no output {output!r} (has {names})",
                                     f"give the publisher's {what} model")
            self.runtime = "opencv"
            try:
                self.run(np.zeros((1, *input_shape), dtype=np.float32))
            except cv2.error as error:
                raise ModelFileError(self.path, f"{what} model does not take input {_dims(input_shape)} "
                                     f"({_first_line(error)})", "give a model this backend can run") from None

    def run(self, batch: np.ndarray) -> np.ndarray:
        """(N, H, W, C) float32 -> the chosen output, (N, ...) float32 in the model's NHWC layout."""
        batch = np.ascontiguousarray(batch, dtype=np.float32)
        if self._interpreter is not None:
            if len(batch) != self._batch:
                self._interpreter.resize_tensor_input(
                    self._interpreter.get_input_details()[0]["index"], [len(batch), *self.input_shape]
                )
                self._interpreter.allocate_tensors()
                self._batch = len(batch)
            self._interpreter.set_tensor(self._interpreter.get_input_details()[0]["index"], batch)
            self._interpreter.invoke()
            return np.array(self._interpreter.get_tensor(self._output_index))
        # OpenCV's TFLite importer takes NCHW and returns NCHW.
        self._net.setInput(batch.transpose(0, 3, 1, 2))
        out = self._net.forward(self._output)
        return out.transpose(0, 2, 3, 1) if out.ndim == 4 else out


def _dims(shape: Sequence[int]) -> str:
    return "x".join(str(d) for d in shape)


def _first_line(error: BaseException) -> str:
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    return (lines[-1] if lines else type(error).__name__)[:200]
