"""Inference engines behind the Predictor: torch, onnxruntime, TensorRT, and how each is built.

Owns, per backend, everything between a `ModelSource` and a ready runner: the ONNX export it
needs (through ModelSource.onnx_file), the TensorRT engine build, cache and parity gate, its
own description (the `description` of the runner it builds) and warm-up. One small interface:

    runner = BACKENDS[name].build(source, request)   # a Runner; runner.description says what
    warm_up(runner, x)                               # one forward, ms

The Predictor (dap_core.runtime) only chooses a backend (dap_core.backend_choice) and does the
pre- and post-processing around `runner.run`.

Each runner takes one preprocessed host batch, float32 [B, 3, h, w] (C-contiguous numpy), and
returns the model outputs as float32 numpy arrays [B, 1, h, w] in the order
(depth, within_T1, within_T2, ...). The returned arrays are the runner's own buffers, reused by
the next call: copy or consume them before calling again. Device-side buffers are allocated
once per batch size. Stage times (ms) are added to the `timings` dict passed in.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from dap_core.model_source import ModelSource


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


class Runner(Protocol):
    name: str
    max_batch: int | None  # largest batch one call accepts (None = any)
    description: str  # what was built and how (engine from cache, threads, ...)

    def run(self, x: np.ndarray, timings: dict[str, float]) -> list[np.ndarray]: ...


@dataclass(frozen=True)
class BuildRequest:
    """What the Predictor asks of a backend."""

    device: str
    precision: str
    thresholds: tuple[int, ...]
    input_size: tuple[int, int]
    threads: int
    cache_dir: Path
    engine_dir: Path | None = None  # None = dap_core.export.tensorrt.engine_cache_dir()

    def onnx_file(self, source: ModelSource) -> Path:
        return source.onnx_file(self.cache_dir, self.input_size, self.thresholds)


class Backend(Protocol):
    name: str

    def build(self, source: ModelSource, request: BuildRequest) -> Runner: ...


def warm_up(runner: Runner, x: np.ndarray) -> float:
    """One forward on `x` (first-call allocations, kernel selection); returns its ms."""
    start = time.perf_counter()
    runner.run(x, {})
    return _ms(start)


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
        dtypes = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}
        if precision not in dtypes:
            raise ValueError(f"torch runs fp32, bf16 or fp16, not {precision} (int8: onnxruntime)")
        self.dtype = dtypes[precision]
        self.model = model.eval().to(self.device)
        self.thresholds = tuple(thresholds)
        self._device_input = None
        self._host_outputs: list = []
        self.description = f"torch on {device}"

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

    def __init__(
        self, onnx_path: str | Path, threads: int, thresholds: Sequence[int], *, spin: bool = False
    ) -> None:
        """spin=True lets onnxruntime's pool threads busy-wait after each run, its default.
        Off here: on a robot the spinning took tens of ms of a core per frame from the
        processes beside the node, for a latency gain within the noise of a frame."""
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
        if not spin:
            options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        self.session = ort.InferenceSession(
            str(onnx_path), options, providers=["CPUExecutionProvider"]
        )
        self.input_name = INPUT_NAME
        self.output_names = [DEPTH_OUTPUT, *(mask_output_name(t) for t in thresholds)]
        self.max_batch = None if info.dynamic_batch else info.batch
        self.info = info
        self.description = f"onnxruntime CPU, {threads} threads"
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
        self.description = "TensorRT engine"

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


# ------------------------------------------------------------------ builders


class TorchBackend:
    """Eager torch on the model itself: nothing to export or cache."""

    name = "torch"

    def build(self, source: ModelSource, request: BuildRequest) -> TorchRunner:
        if source.model is None:
            raise ValueError("the torch backend needs weights, not an ONNX file")
        if request.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError(f"device {request.device} requested but CUDA is not available")
        runner = TorchRunner(source.model, request.device, request.precision, request.thresholds)
        if request.device == "cpu" and request.precision == "bf16":
            from dap_core import reduced_precision as rp

            native = rp.require_bf16()
            fp32 = TorchRunner(source.model, "cpu", "fp32", request.thresholds)
            agreement = _accuracy_gate(source, request, fp32, runner)
            runner.description = f"torch bf16 on cpu ({native}); {agreement.describe()}"
        return runner


def _accuracy_gate(source: ModelSource, request: BuildRequest, fp32: Runner, candidate: Runner):
    """dap_core.reduced_precision's gate: candidate vs FP32 on the fixed panoramas."""
    from dap_core import reduced_precision as rp
    from dap_core.progress import heartbeat

    def run(runner: Runner):
        return lambda x: [np.array(o) for o in runner.run(np.ascontiguousarray(x), {})]

    def measure():
        what = f"checking {request.precision} against fp32 on {len(rp.FIXED_SEEDS)} panoramas"
        with heartbeat(f"{what} (first run only)"):
            inputs = rp.fixed_inputs(source.config, request.input_size)
            return rp.compare(run(fp32), run(candidate), inputs)

    key = [source.digest, list(request.input_size), list(request.thresholds)]
    return rp.gate(request.precision, key, request.cache_dir, measure)


class OnnxRuntimeBackend:
    """onnxruntime CPU on the given ONNX file, or on the model's cached export."""

    name = "onnxruntime"

    def build(self, source: ModelSource, request: BuildRequest) -> OnnxRuntimeRunner:
        if request.device.startswith("cuda"):
            raise ValueError("the onnxruntime backend runs on the CPU here; use device='cpu'")
        if request.precision not in ("fp32", "int8"):
            raise ValueError(f"the onnxruntime backend runs fp32 or int8, not {request.precision}")
        fp32_path = request.onnx_file(source)
        if request.precision == "fp32":
            return OnnxRuntimeRunner(fp32_path, request.threads, request.thresholds)
        return self._int8(source, request, fp32_path)

    def _int8(self, source: ModelSource, request: BuildRequest, fp32_path: Path):
        from dap_core import reduced_precision as rp
        from dap_core.progress import heartbeat

        int8_path = request.cache_dir / "onnx" / f"{fp32_path.stem}.int8.onnx"
        if not int8_path.is_file():
            with heartbeat(f"quantising the linear layers of {fp32_path.name} to INT8"):
                rp.quantize_int8(fp32_path, int8_path)
        runner = OnnxRuntimeRunner(int8_path, request.threads, request.thresholds)
        fp32 = OnnxRuntimeRunner(fp32_path, request.threads, request.thresholds)
        agreement = _accuracy_gate(source, request, fp32, runner)
        runner.description = (
            f"onnxruntime CPU INT8 (dynamic, linear layers), {request.threads} threads; "
            f"{agreement.describe()}"
        )
        return runner


class TensorRTBackend:
    """A TensorRT engine built from the ONNX export, cached, and checked against onnxruntime
    FP32 on a fixed input before use (dap_core.export.tensorrt, dap_core.export.parity)."""

    name = "tensorrt"

    def build(self, source: ModelSource, request: BuildRequest) -> TensorRTRunner:
        from dap_core.export.onnx import (
            DEPTH_OUTPUT,
            INPUT_NAME,
            mask_output_name,
            read_onnx_info,
        )
        from dap_core.export.parity import load_or_make_reference, verify_engine
        from dap_core.export.tensorrt import TensorRTEngine, build_engine, import_tensorrt

        if not request.device.startswith("cuda"):
            raise ValueError("the tensorrt backend needs device='cuda'")
        import_tensorrt()  # fail early and clearly, before any export work
        onnx_path = request.onnx_file(source)
        info = read_onnx_info(onnx_path)
        missing = [t for t in request.thresholds if t not in info.mask_thresholds]
        if missing:
            raise ValueError(f"{onnx_path} has no range-mask output for {missing} m")
        record = build_engine(onnx_path, request.precision, cache_dir=request.engine_dir)
        batch = info.batch or 1
        shape = (batch, 3, *info.input_size)
        ref_in, ref_out = load_or_make_reference(record, onnx_path, INPUT_NAME, shape)
        engine = TensorRTEngine(record.engine_path)

        def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            import torch

            device_inputs = {k: torch.from_numpy(v).cuda() for k, v in inputs.items()}
            outputs = engine(device_inputs)
            return {k: v.float().cpu().numpy() for k, v in outputs.items()}

        report = verify_engine(run, ref_in, ref_out, request.precision, record.engine_path.name)
        wanted = [DEPTH_OUTPUT, *(mask_output_name(t) for t in request.thresholds)]
        runner = TensorRTRunner(engine, wanted, batch)
        runner.description = (
            f"TensorRT {record.key.trt_version} {request.precision} engine "
            f"{'built' if record.built else 'from cache'}, parity {report.describe()}"
        )
        return runner


BACKENDS: dict[str, Backend] = {
    b.name: b for b in (TorchBackend(), OnnxRuntimeBackend(), TensorRTBackend())
}
