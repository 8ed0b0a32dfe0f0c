"""Latency measurement of the runtime: Predictor end to end, backends side by side, GPU variants.

Used by bench/bench_runtime.py (the project's speed targets) and `dap bench`. Every number is a
median over timed repeats after warm-up; GPU timings synchronize before the clock is read.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

GEMM_N = 2048


@dataclass(frozen=True)
class Latency:
    """Milliseconds: median and 90th percentile of the timed repeats."""

    median_ms: float
    p90_ms: float
    repeats: int

    @property
    def hz(self) -> float:
        return 1e3 / self.median_ms

    def __str__(self) -> str:
        return f"{self.median_ms:8.1f} ms (p90 {self.p90_ms:.1f}, {self.hz:5.2f} Hz)"


def _latency(samples_ms: list[float]) -> Latency:
    values = np.asarray(samples_ms)
    return Latency(float(np.median(values)), float(np.percentile(values, 90)), len(values))


def time_call(fn: Callable[[], object], repeats: int, warmup: int = 1) -> Latency:
    """Wall-clock latency of `fn()` (which must itself synchronize any device work)."""
    for _ in range(warmup):
        fn()
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - start) * 1e3)
    return _latency(samples)


def time_predictor(predictor, rgb: np.ndarray, repeats: int, warmup: int = 1) -> dict[str, Latency]:
    """End-to-end ("total") and per-stage latency of `predictor.predict(rgb)`."""
    for _ in range(warmup):
        predictor.predict(rgb)
    stages: dict[str, list[float]] = {}
    for _ in range(repeats):
        for name, ms in predictor.predict(rgb).timings.items():
            stages.setdefault(name, []).append(ms)
    return {name: _latency(values) for name, values in stages.items()}


def time_predictors(
    predictors: dict, rgb: np.ndarray, repeats: int, warmup: int = 1
) -> dict[str, dict[str, Latency]]:
    """`time_predictor` for several predictors, calls alternating between them so that load
    drift on a shared machine affects each alike (for same-run ratios)."""
    for predictor in predictors.values():
        for _ in range(warmup):
            predictor.predict(rgb)
    stages: dict[str, dict[str, list[float]]] = {name: {} for name in predictors}
    for _ in range(repeats):
        for name, predictor in predictors.items():
            for stage, ms in predictor.predict(rgb).timings.items():
                stages[name].setdefault(stage, []).append(ms)
    return {
        name: {stage: _latency(values) for stage, values in per.items()}
        for name, per in stages.items()
    }


def gemm_gflops(threads: int) -> float:
    """Best-of-5 float32 GEMM rate (GFLOP/s) with `threads` torch threads: the machine's
    ceiling for the FLOP-heavy parts of DAP, measured in the same run as the model."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.randn(GEMM_N, GEMM_N), torch.randn(GEMM_N, GEMM_N)
    a @ b
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * GEMM_N**3 / best / 1e9


def machine_summary(threads: int) -> str:
    import onnxruntime
    import torch

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            cpu = next(line.split(":", 1)[1].strip() for line in handle if "model name" in line)
    except (OSError, StopIteration):
        pass
    lines = [
        f"CPU: {cpu}, {os.cpu_count()} cores visible, {threads} threads used; "
        f"load average {os.getloadavg()[0]:.1f}",
        f"torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"Python {platform.python_version()}",
    ]
    if torch.cuda.is_available():
        lines.append(f"GPU: {torch.cuda.get_device_name(0)}, CUDA {torch.version.cuda}")
    return "\n".join(lines)


def random_rgb(height: int, width: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


# ------------------------------------------------------------------ GPU model-level variants


def gpu_variants(model, height: int, width: int, repeats: int, compile_model: bool = True):
    """Forward latency on CUDA of: official-style FP32 eager, BF16 eager, BF16 in one CUDA
    graph, BF16 torch.compile, and a TensorRT FP16 engine when TensorRT is installed.

    Returns {variant: Latency or an explanatory string}. Batch 1, all mask heads of `model`.
    """
    import torch

    device = torch.device("cuda")
    model = model.eval().to(device)
    x = torch.randn(1, 3, height, width, device=device)
    results: dict[str, Latency | str] = {}

    def timed(fn) -> Latency:
        def call():
            fn()
            torch.cuda.synchronize()

        return time_call(call, repeats, warmup=3)

    with torch.inference_mode():
        results["torch fp32 eager"] = timed(lambda: model.forward_tensors(x))

        def bf16():
            with torch.autocast("cuda", dtype=torch.bfloat16):
                return model.forward_tensors(x)

        results["torch bf16 eager"] = timed(bf16)
        try:
            static_x = x.clone()
            stream = torch.cuda.Stream()
            stream.wait_stream(torch.cuda.current_stream())
            with torch.cuda.stream(stream):
                for _ in range(3):
                    bf16()
            torch.cuda.current_stream().wait_stream(stream)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph), torch.autocast("cuda", dtype=torch.bfloat16):
                model.forward_tensors(static_x)
            results["torch bf16 CUDA graph"] = timed(graph.replay)
        except RuntimeError as err:  # capture can fail on some drivers / ops
            results["torch bf16 CUDA graph"] = f"capture failed: {err}"
        if compile_model:
            compiled = torch.compile(model.forward_tensors)

            def bf16_compiled():
                with torch.autocast("cuda", dtype=torch.bfloat16):
                    return compiled(x)

            results["torch bf16 torch.compile"] = timed(bf16_compiled)
    results["tensorrt fp16"] = _tensorrt_latency(model, height, width, repeats)
    return results


def _tensorrt_latency(model, height: int, width: int, repeats: int) -> Latency | str:
    import tempfile

    import torch

    from dap_core.export.tensorrt import TensorRTUnavailableError, import_tensorrt

    try:
        import_tensorrt()
    except TensorRTUnavailableError as err:
        return f"not measured: {str(err).split(' (')[0]}"
    from dap_core.export.onnx import INPUT_NAME, export_onnx
    from dap_core.export.tensorrt import TensorRTEngine, build_engine

    with tempfile.TemporaryDirectory() as tmp:
        cpu_model = model.to("cpu")
        onnx_path = f"{tmp}/model.onnx"
        export_onnx(cpu_model, onnx_path, input_size=(height, width))
        model.to("cuda")
        record = build_engine(onnx_path, "fp16", cache_dir=tmp)
        engine = TensorRTEngine(record.engine_path)
        x = {INPUT_NAME: torch.randn(1, 3, height, width, device="cuda")}

        def call():
            engine(x)
            torch.cuda.synchronize()

        return time_call(call, repeats, warmup=5)
