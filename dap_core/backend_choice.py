"""Which backend runs a model: the requested one, or for "auto" a choice that never surprises.

Owns the decision and its reason, and the per-machine cache of CPU backend timings.

"auto" on CUDA: TensorRT when it is installed and its engine passes the parity gate, else torch.
"auto" on the CPU, in order:
1. an ONNX file was given -> onnxruntime; int8 -> onnxruntime; bf16 -> torch (both gated by
   dap_core.reduced_precision);
   onnxruntime not installed -> torch;
2. timings measured earlier on this machine for this model, size and heads -> the faster;
3. a small model (<= LARGE_MODEL_PARAMS), or one whose ONNX export is already cached ->
   measure torch and onnxruntime now (the export takes seconds), cache, keep the faster;
4. a large model with no export cached -> torch by rule: exporting ViT-L to ONNX only to time
   it would cost minutes before the first image. Run it once with backend="onnxruntime" (which
   exports and caches it) and "auto" measures both from then on.
The reason string carries the numbers; the Predictor prints it once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dap_core.backends import BACKENDS, BuildRequest, Runner
from dap_core.model_source import LARGE_MODEL_PARAMS, ModelSource

LOG = logging.getLogger(__name__)

CPU_MEASURE_RUNS = 5  # timed forwards per backend when "auto" compares torch and onnxruntime
CHOICES = ("auto", *BACKENDS)


@dataclass
class Choice:
    runner: Runner
    reason: str
    warmed: bool = False  # the runner already ran (while measuring): no warm-up needed


def choose(requested: str, source: ModelSource, request: BuildRequest, x: np.ndarray) -> Choice:
    """Build the requested backend, or choose one for "auto"; `x` is an input for timing."""
    if requested not in CHOICES:
        raise ValueError(f"backend must be one of {CHOICES}, got {requested!r}")
    if requested != "auto":
        runner = BACKENDS[requested].build(source, request)
        return Choice(runner, f"requested; {runner.description}")
    if request.device.startswith("cuda"):
        return _choose_cuda(source, request)
    return _choose_cpu(source, request, x)


def _choose_cuda(source: ModelSource, request: BuildRequest) -> Choice:
    from dap_core.export.parity import EngineRejectedError
    from dap_core.export.tensorrt import TensorRTUnavailableError

    try:
        runner = BACKENDS["tensorrt"].build(source, request)
        return Choice(runner, f"auto: TensorRT available; {runner.description}")
    except (TensorRTUnavailableError, EngineRejectedError) as err:
        why = str(err).split(". ")[0]
    if source.model is None:
        raise ValueError(
            f"auto on {request.device}: TensorRT unusable ({why}) and an ONNX file cannot "
            "run on torch; pass the weights directory instead"
        )
    runner = BACKENDS["torch"].build(source, request)
    return Choice(runner, f"auto: TensorRT unusable ({why}); torch on {request.device}")


def _choose_cpu(source: ModelSource, request: BuildRequest, x: np.ndarray) -> Choice:
    build = {name: BACKENDS[name].build for name in ("torch", "onnxruntime")}
    if source.model is None:
        return Choice(
            build["onnxruntime"](source, request), "auto: an ONNX file was given; onnxruntime CPU"
        )
    if request.precision == "int8":
        runner = build["onnxruntime"](source, request)
        return Choice(runner, f"auto: int8 on CPU runs on onnxruntime; {runner.description}")
    if request.precision != "fp32":
        runner = build["torch"](source, request)
        reason = f"auto: {request.precision} on CPU runs on torch only; {runner.description}"
        return Choice(runner, reason)
    try:
        import onnxruntime  # noqa: F401
    except ImportError:
        return Choice(build["torch"](source, request), "auto: onnxruntime not installed; torch")
    where = f"at {request.input_size[0]}x{request.input_size[1]} on {request.threads} CPU threads"
    cache = _timings_path(source, request)
    timings = _read_timings(cache)
    if timings is not None:
        best = _faster(timings)
        reason = f"auto: {_compare(timings, best)} {where} (measured earlier on this machine)"
        return Choice(build[best](source, request), reason)
    exported = source.onnx_cache_path(request.cache_dir, request.input_size, request.thresholds)
    if source.large and not exported.is_file():
        reason = (
            f"auto: torch by rule for a large model ({source.parameters / 1e6:.0f} M parameters "
            f"> {LARGE_MODEL_PARAMS / 1e6:.0f} M) with no timing cached: timing onnxruntime "
            "would first export ONNX (minutes). Run once with backend onnxruntime to export it; "
            "auto then measures both"
        )
        return Choice(build["torch"](source, request), reason)
    try:
        ort_runner = build["onnxruntime"](source, request)
    except Exception as err:  # export or session failure: the optional path only
        LOG.warning("onnxruntime unusable, using torch: %s", err)
        reason = f"auto: onnxruntime unusable ({err}); torch on CPU"
        return Choice(build["torch"](source, request), reason)
    runners = {"torch": build["torch"](source, request), "onnxruntime": ort_runner}
    timings = measure(runners, x)
    _store_timings(cache, timings)
    best = _faster(timings)
    reason = f"auto: {_compare(timings, best)} {where} (measured now)"
    return Choice(runners[best], reason, warmed=True)


def _faster(timings: dict[str, float]) -> str:
    return min(timings, key=timings.get)


def _compare(timings: dict[str, float], best: str) -> str:
    other = next(n for n in timings if n != best)
    return f"{best} {timings[best]:.0f} ms vs {other} {timings[other]:.0f} ms per frame"


def measure(runners: dict[str, Runner], x: np.ndarray, runs: int = CPU_MEASURE_RUNS):
    """Median forward ms of each runner after one warm-up; runs alternate so that load drift
    on a shared machine hits every backend alike."""
    for runner in runners.values():
        runner.run(x, {})
    samples: dict[str, list[float]] = {name: [] for name in runners}
    for _ in range(runs):
        for name, runner in runners.items():
            timings: dict[str, float] = {}
            runner.run(x, timings)
            samples[name].append(timings["forward"])
    return {name: float(np.median(values)) for name, values in samples.items()}


def _timings_path(source: ModelSource, request: BuildRequest) -> Path:
    import onnxruntime
    import torch

    key = json.dumps(
        [
            source.digest,
            request.input_size,
            request.thresholds,
            request.threads,
            torch.__version__,
            onnxruntime.__version__,
            platform.processor() or platform.machine(),
            os.cpu_count(),
        ]
    )
    name = hashlib.sha256(key.encode()).hexdigest()[:20]
    return request.cache_dir / "backend_timings" / f"{name}.json"


def _read_timings(path: Path) -> dict[str, float] | None:
    try:
        data = json.loads(path.read_text())
        return {"torch": float(data["torch"]), "onnxruntime": float(data["onnxruntime"])}
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _store_timings(path: Path, timings: dict[str, float]) -> None:
    from dap_core.files import atomic_write_bytes

    try:
        atomic_write_bytes(path, json.dumps(timings).encode())
    except OSError as err:  # a read-only cache only costs a re-measurement next time
        LOG.warning("could not store backend timings in %s: %s", path, err)
