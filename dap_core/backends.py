"""Inference engines behind the Predictor: torch, onnxruntime, TensorRT.

Each runner takes one preprocessed host batch, float32 [B, 3, h, w] (C-contiguous numpy), and
returns the model outputs as float32 numpy arrays [B, 1, h, w] in the order
(depth, within_T1, within_T2, ...). The returned arrays are the runner's own buffers, reused by
the next call: copy or consume them before calling again. Device-side buffers are allocated
once per batch size. Stage times (ms) are added to the `timings` dict passed in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import numpy as np


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class Runner(Protocol):
    name: str
    max_batch: int | None  # largest batch one call accepts (None = any)

    def run(self, x: np.ndarray, timings: dict[str, float]) -> list[np.ndarray]: ...


class TorchRunner:
    """Eager PyTorch on CPU or CUDA; bf16/fp16 via autocast (LayerNorm and softmax stay FP32)."""

    name = "torch"
    max_batch = None

    def __init__(self, model, device: str, precision: str, thresholds: Sequence[int]) -> None:
        import torch

        self.torch = torch
        self.device = torch.device(device)
        if self.device.type == "cpu" and precision == "fp16":
            raise ValueError("precision fp16 is not supported by torch on CPU; use fp32 or bf16")
        self.dtype = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}[precision]
        self.model = model.eval().to(self.device)
        self.thresholds = tuple(thresholds)
        self._device_input = None
        self._host_outputs: list = []

    def _autocast(self):
        if self.dtype is None:
            import contextlib

            return contextlib.nullcontext()
        return self.torch.autocast(device_type=self.device.type, dtype=self.dtype)

    def run(self, x: np.ndarray, timings: dict[str, float]) -> list[np.ndarray]:
        torch = self.torch
        host = torch.from_numpy(x)  # shares memory with the Predictor's input buffer
        cuda = self.device.type == "cuda"
        start = time.perf_counter()
        if cuda:
            if self._device_input is None or self._device_input.shape != host.shape:
                self._device_input = torch.empty(host.shape, device=self.device)
                self._host_outputs = []
            self._device_input.copy_(host, non_blocking=True)
            torch.cuda.synchronize(self.device)
            timings["upload"] = _ms(start)
            start = time.perf_counter()
            source = self._device_input
        else:
            source = host
        with torch.inference_mode(), self._autocast():
            outputs = self.model.forward_tensors(source, self.thresholds)
        if cuda:
            torch.cuda.synchronize(self.device)
        timings["forward"] = _ms(start)
        if not cuda:
            return [o.float().numpy() for o in outputs]
        start = time.perf_counter()
        if not self._host_outputs:
            self._host_outputs = [
                torch.empty(o.shape, dtype=torch.float32, pin_memory=True) for o in outputs
            ]
        for buffer, out in zip(self._host_outputs, outputs, strict=True):
            buffer.copy_(out, non_blocking=True)
        torch.cuda.synchronize(self.device)
        timings["download"] = _ms(start)
        return [b.numpy() for b in self._host_outputs]


class OnnxRuntimeRunner:
    """onnxruntime's CPU provider with I/O binding into preallocated numpy outputs."""

    name = "onnxruntime"

    def __init__(self, onnx_path: str | Path, threads: int, thresholds: Sequence[int]) -> None:
        import onnxruntime as ort

        from dap_core.export.onnx import DEPTH_OUTPUT, INPUT_NAME, mask_output_name, read_onnx_info

        info = read_onnx_info(onnx_path)
        missing = [t for t in thresholds if t not in info.mask_thresholds]
        if missing:
            raise ValueError(
                f"{onnx_path} has no range-mask output for {missing} m "
                f"(exported: {list(info.mask_thresholds)})"
            )
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = INPUT_NAME
        self.output_names = [DEPTH_OUTPUT, *(mask_output_name(t) for t in thresholds)]
        self.max_batch = None if info.dynamic_batch else info.batch
        self.info = info
        self._binding = None
        self._outputs: list[np.ndarray] = []
        self._shape: tuple[int, ...] | None = None

    def run(self, x: np.ndarray, timings: dict[str, float]) -> list[np.ndarray]:
        start = time.perf_counter()
        if self._shape != x.shape:
            batch, _, height, width = x.shape
            self._outputs = [
                np.empty((batch, 1, height, width), np.float32) for _ in self.output_names
            ]
            binding = self.session.io_binding()
            for name, out in zip(self.output_names, self._outputs, strict=True):
                binding.bind_output(name, "cpu", 0, np.float32, out.shape, out.ctypes.data)
            self._binding = binding
            self._shape = x.shape
        # The input buffer is the Predictor's, fixed per shape; bind it every call regardless
        # (cheap) so a caller passing another array of the same shape is honoured.
        self._binding.bind_cpu_input(self.input_name, x)
        self.session.run_with_iobinding(self._binding)
        timings["forward"] = _ms(start)
        return self._outputs


class TensorRTRunner:
    """A verified TensorRT engine on CUDA; host <-> device through pinned buffers."""

    name = "tensorrt"

    def __init__(self, engine, output_names: Sequence[str], max_batch: int) -> None:
        import torch

        self.torch = torch
        self.engine = engine  # a dap_core.export.tensorrt.TensorRTEngine, already verified
        self.output_names = list(output_names)
        self.max_batch = max_batch
        self._device_input = None
        self._host_outputs: list = []

    def run(self, x: np.ndarray, timings: dict[str, float]) -> list[np.ndarray]:
        torch = self.torch
        start = time.perf_counter()
        host = torch.from_numpy(x)
        if self._device_input is None or self._device_input.shape != host.shape:
            self._device_input = torch.empty(host.shape, device="cuda")
            self._host_outputs = []
        self._device_input.copy_(host, non_blocking=True)
        torch.cuda.synchronize()
        timings["upload"] = _ms(start)
        start = time.perf_counter()
        outputs = self.engine({"image": self._device_input})
        torch.cuda.synchronize()
        timings["forward"] = _ms(start)
        start = time.perf_counter()
        if not self._host_outputs:
            self._host_outputs = [
                torch.empty(outputs[n].shape, dtype=torch.float32, pin_memory=True)
                for n in self.output_names
            ]
        for buffer, name in zip(self._host_outputs, self.output_names, strict=True):
            buffer.copy_(outputs[name], non_blocking=True)
        torch.cuda.synchronize()
        timings["download"] = _ms(start)
        return [b.numpy() for b in self._host_outputs]
