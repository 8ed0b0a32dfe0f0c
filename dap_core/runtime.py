"""Predictor: one interface for running DAP on whatever the machine has.

    predictor = Predictor("weights/dap_small")            # backend="auto", device="cpu"
    prediction = predictor.predict(rgb)                    # uint8 [H, W, 3] or [B, H, W, 3]
    prediction.range_m                                     # float32 metres, camera resolution

Backends: "torch" (CPU or CUDA), "onnxruntime" (CPU), "tensorrt" (CUDA; engine built from
an ONNX export, cached on disk and checked against an FP32 reference before use). "auto"
tries TensorRT, then CUDA torch (on a CUDA device), else on the CPU measures torch and
onnxruntime once on the actual model and keeps the faster; the choice and the reason are in
`.backend` and `.backend_reason`.

Pre/post-processing: the camera image is resized to the model input (area when shrinking,
cubic otherwise, as dap_core.model.preprocess) into buffers reused between calls; outputs are
resized back bilinearly, wrapping around the ERP seam (column 0 and column W-1 are neighbours
on the sphere). Range = depth x max_range_m, finite and not gated (Prediction.gated_range gates).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from dap_core.prediction import Prediction

LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "bf16", "fp16")
CPU_MEASURE_RUNS = 5  # timed forwards per backend when "auto" compares torch and onnxruntime


def available_cores() -> int:
    """CPU cores this process may run on (affinity-aware)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


# ------------------------------------------------------------------------- resampling


class _SeamAwareUpsampler:
    """Bilinear (h, w) -> (H, W) resize of ERP maps whose columns wrap around.

    OpenCV's INTER_LINEAR does the bulk (pixel-centre aligned, exact float bilinear); the few
    output columns whose source position falls left of column 0 or right of column w-1 are
    recomputed with the wrapped neighbour instead of OpenCV's clamped edge.
    """

    def __init__(self, src: tuple[int, int], dst: tuple[int, int]) -> None:
        import cv2

        self.cv2 = cv2
        (h, w), (H, W) = src, dst
        self.dst = dst
        self.upsample = h <= H and w <= W
        sx = (np.arange(W) + 0.5) * (w / W) - 0.5
        seam = np.flatnonzero((sx < 0) | (sx > w - 1)) if self.upsample else np.array([], int)
        x0 = np.floor(sx[seam]).astype(np.int64)
        self.seam = seam
        self.x0 = np.mod(x0, w)
        self.x1 = np.mod(x0 + 1, w)
        self.fx = (sx[seam] - x0).astype(np.float32)[None, :]  # [1, S]
        sy = np.clip((np.arange(H) + 0.5) * (h / H) - 0.5, 0, h - 1)
        y0 = np.floor(sy).astype(np.int64)
        self.y0, self.y1 = y0, np.minimum(y0 + 1, h - 1)
        self.fy = (sy - y0).astype(np.float32)[:, None]  # [H, 1]

    def __call__(self, src: np.ndarray, out: np.ndarray) -> np.ndarray:
        H, W = self.dst
        flag = self.cv2.INTER_LINEAR if self.upsample else self.cv2.INTER_AREA
        self.cv2.resize(src, (W, H), dst=out, interpolation=flag)
        if self.seam.size:
            left = src[self.y0][:, self.x0] * (1 - self.fy) + src[self.y1][:, self.x0] * self.fy
            right = src[self.y0][:, self.x1] * (1 - self.fy) + src[self.y1][:, self.x1] * self.fy
            out[:, self.seam] = left * (1 - self.fx) + right * self.fx
        return out


# ------------------------------------------------------------------------- model sources


@dataclass
class _Source:
    """What the Predictor was given: a torch model, an ONNX file, or both."""

    model: Any  # DAP or None
    onnx_path: Path | None
    config: Any  # DAPConfig
    digest: str  # identifies weights + config, for caches


def _model_digest(model) -> str:
    """sha256 over the config and every tensor of the state dict (names, shapes, bytes)."""
    digest = hashlib.sha256(model.config.to_json().encode())
    for name, tensor in sorted(model.state_dict().items()):
        digest.update(name.encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _load_source(weights) -> _Source:
    from dap_core.model import DAP

    if isinstance(weights, DAP):
        return _Source(weights, None, weights.config, _model_digest(weights))
    path = Path(weights)
    if path.suffix == ".onnx":
        from dap_core.export.onnx import read_onnx_info
        from dap_core.export.tensorrt import file_sha256

        info = read_onnx_info(path)
        return _Source(None, path, info.config(), file_sha256(path))
    model = DAP.load(path)
    return _Source(model, None, model.config, _model_digest(model))


# ------------------------------------------------------------------------- predictor


class Predictor:
    """Runs DAP on uint8 RGB panoramas and returns a Prediction at camera resolution.

    weights: a DAP model, a weights directory / .safetensors / official .pth, or a DAP .onnx
        export (onnxruntime or TensorRT only).
    backend: "auto", "torch", "onnxruntime" or "tensorrt".
    device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available).
    precision: "fp32", "bf16" or "fp16" (fp16 needs CUDA; onnxruntime runs fp32 only).
    mask_thresholds: range masks to compute, metres (None = every head of the model).
    input_size: model input (H, W), multiples of 16 (None = the model's config).
    threads: CPU threads for torch / onnxruntime (None = all cores this process may use).
    cache_dir: where ONNX exports, engines and backend timings are kept ($DAP_ROS_CACHE).

    reuse_outputs: return the same result arrays on every call (no per-frame allocation at
        camera resolution); each call then overwrites the previous Prediction's arrays.
        Off by default: results belong to the caller.

    Not thread-safe: input buffers are shared between calls; use one Predictor per thread.
    """

    def __init__(
        self,
        weights,
        backend: str = "auto",
        device: str = "cpu",
        precision: str = "fp32",
        mask_thresholds=None,
        input_size: tuple[int, int] | None = None,
        threads: int | None = None,
        *,
        cache_dir: str | Path | None = None,
        warmup: bool = True,
        reuse_outputs: bool = False,
    ) -> None:
        import torch

        from dap_core.export import cache_root

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.threads = int(threads or available_cores())
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(self.threads)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        self._engine_dir = Path(cache_dir) / "engines" if cache_dir is not None else None
        self.device = _resolve_device(device)
        self.precision = precision
        self._source = _load_source(weights)
        config = self._source.config
        self.config = config
        self.max_range_m = float(config.max_range_m)
        self.input_size = _resolve_input_size(input_size, config, self._source)
        self.mask_thresholds = _resolve_thresholds(mask_thresholds, config)
        self.backend_reason = ""
        self.warmup_ms: float | None = None
        self._buffers: dict[tuple, Any] = {}
        self._resizers: dict[tuple, _SeamAwareUpsampler] = {}
        self.reuse_outputs = reuse_outputs
        self._runner = self._select(backend)
        self.backend: str = self._runner.name
        LOG.info("DAP backend %s: %s", self.backend, self.backend_reason)
        if warmup and self.warmup_ms is None:
            self.warmup_ms = self._warm_up()

    # ----------------------------------------------------------------- selection
    def _select(self, backend: str):
        cuda = self.device.startswith("cuda")
        if backend == "torch":
            self.backend_reason = f"requested; torch on {self.device}"
            return self._torch_runner()
        if backend == "onnxruntime":
            if cuda:
                raise ValueError("the onnxruntime backend runs on the CPU here; use device='cpu'")
            self.backend_reason = f"requested; onnxruntime CPU, {self.threads} threads"
            return self._onnxruntime_runner()
        if backend == "tensorrt":
            if not cuda:
                raise ValueError("the tensorrt backend needs device='cuda'")
            runner = self._tensorrt_runner()
            self.backend_reason = f"requested; {self.backend_reason}"
            return runner
        # auto
        if cuda:
            from dap_core.export.parity import EngineRejectedError
            from dap_core.export.tensorrt import TensorRTUnavailableError

            try:
                runner = self._tensorrt_runner()
                self.backend_reason = f"auto: TensorRT available; {self.backend_reason}"
                return runner
            except (TensorRTUnavailableError, EngineRejectedError) as err:
                why = str(err).split(". ")[0]
            if self._source.model is None:
                raise ValueError(
                    f"auto on {self.device}: TensorRT unusable ({why}) and an ONNX file cannot "
                    "run on torch; pass the weights directory instead"
                )
            self.backend_reason = f"auto: TensorRT unusable ({why}); torch on {self.device}"
            return self._torch_runner()
        return self._select_cpu()

    def _select_cpu(self):
        if self._source.model is None:
            self.backend_reason = "auto: an ONNX file was given; onnxruntime CPU"
            return self._onnxruntime_runner()
        if self.precision != "fp32":
            self.backend_reason = f"auto: {self.precision} on CPU runs on torch only"
            return self._torch_runner()
        try:
            import onnxruntime  # noqa: F401
        except ImportError:
            self.backend_reason = "auto: onnxruntime not installed; torch on CPU"
            return self._torch_runner()
        timings = self._cached_cpu_timings()
        runners = {}
        if timings is None:
            try:
                ort_runner = self._onnxruntime_runner()
            except Exception as err:  # export or session failure: the optional path only
                LOG.warning("onnxruntime unusable, using torch: %s", err)
                self.backend_reason = f"auto: onnxruntime unusable ({err}); torch on CPU"
                return self._torch_runner()
            runners = {"torch": self._torch_runner(), "onnxruntime": ort_runner}
            timings = self._measure(runners)
            self._store_cpu_timings(timings)
        best = min(timings, key=timings.get)
        other = next(n for n in timings if n != best)
        self.backend_reason = (
            f"auto: {best} {timings[best]:.0f} ms vs {other} {timings[other]:.0f} ms per frame "
            f"at {self.input_size[0]}x{self.input_size[1]} on {self.threads} CPU threads "
            f"({'measured now' if runners else 'measured earlier on this machine'})"
        )
        if best in runners:
            self.warmup_ms = 0.0  # both were warmed up while measuring
            return runners[best]
        return self._torch_runner() if best == "torch" else self._onnxruntime_runner()

    def _measure(self, runners: dict) -> dict[str, float]:
        """Median forward ms of each runner; runs alternate so that load drift on a shared
        machine hits every backend alike."""
        x = self._input_buffer(1)
        for runner in runners.values():
            runner.run(x, {})  # warm-up
        samples: dict[str, list[float]] = {name: [] for name in runners}
        for _ in range(CPU_MEASURE_RUNS):
            for name, runner in runners.items():
                timings: dict[str, float] = {}
                runner.run(x, timings)
                samples[name].append(timings["forward"])
        return {name: float(np.median(values)) for name, values in samples.items()}

    def _timings_path(self) -> Path:
        import onnxruntime
        import torch

        key = json.dumps(
            [
                self._source.digest,
                self.input_size,
                self.mask_thresholds,
                self.threads,
                torch.__version__,
                onnxruntime.__version__,
                platform.processor() or platform.machine(),
                os.cpu_count(),
            ]
        )
        name = hashlib.sha256(key.encode()).hexdigest()[:20]
        return self.cache_dir / "backend_timings" / f"{name}.json"

    def _cached_cpu_timings(self) -> dict[str, float] | None:
        try:
            data = json.loads(self._timings_path().read_text())
            return {"torch": float(data["torch"]), "onnxruntime": float(data["onnxruntime"])}
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def _store_cpu_timings(self, timings: dict[str, float]) -> None:
        path = self._timings_path()
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(timings))
        except OSError as err:  # a read-only cache only costs a re-measurement next time
            LOG.warning("could not store backend timings in %s: %s", path, err)

    # ----------------------------------------------------------------- runners
    def _torch_runner(self):
        from dap_core.backends import TorchRunner

        if self._source.model is None:
            raise ValueError("the torch backend needs weights, not an ONNX file")
        if self.device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError(f"device {self.device} requested but CUDA is not available")
        return TorchRunner(self._source.model, self.device, self.precision, self.mask_thresholds)

    def _onnx_path(self, dynamic_batch: bool = False) -> Path:
        """The ONNX file to run: the one given, or an export cached under cache_dir/onnx."""
        if self._source.onnx_path is not None:
            return self._source.onnx_path
        from dap_core.export.onnx import export_onnx

        h, w = self.input_size
        key = json.dumps([self._source.digest, h, w, self.mask_thresholds, dynamic_batch])
        name = f"dap-{h}x{w}-{hashlib.sha256(key.encode()).hexdigest()[:16]}.onnx"
        path = self.cache_dir / "onnx" / name
        if not path.is_file():
            LOG.info("exporting the model to %s", path)
            tmp = path.with_name(path.name + ".partial.onnx")
            export_onnx(
                self._source.model,
                tmp,
                input_size=self.input_size,
                mask_thresholds=self.mask_thresholds,
                dynamic_batch=dynamic_batch,
            )
            os.replace(tmp, path)
        return path

    def _onnxruntime_runner(self):
        from dap_core.backends import OnnxRuntimeRunner

        if self.precision != "fp32":
            raise ValueError(f"the onnxruntime backend runs fp32 only, not {self.precision}")
        return OnnxRuntimeRunner(self._onnx_path(), self.threads, self.mask_thresholds)

    def _tensorrt_runner(self):
        from dap_core.backends import TensorRTRunner
        from dap_core.export.onnx import (
            DEPTH_OUTPUT,
            INPUT_NAME,
            mask_output_name,
            read_onnx_info,
        )
        from dap_core.export.parity import load_or_make_reference, verify_engine
        from dap_core.export.tensorrt import TensorRTEngine, build_engine, import_tensorrt

        import_tensorrt()  # fail early and clearly, before any export work
        onnx_path = self._onnx_path()
        info = read_onnx_info(onnx_path)
        record = build_engine(onnx_path, self.precision, cache_dir=self._engine_dir)
        batch = info.batch or 1
        shape = (batch, 3, *info.input_size)
        ref_in, ref_out = load_or_make_reference(record, onnx_path, INPUT_NAME, shape)
        engine = TensorRTEngine(record.engine_path)

        def run(inputs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
            import torch

            device_inputs = {k: torch.from_numpy(v).cuda() for k, v in inputs.items()}
            outputs = engine(device_inputs)
            return {k: v.float().cpu().numpy() for k, v in outputs.items()}

        report = verify_engine(run, ref_in, ref_out, self.precision, record.engine_path.name)
        self.backend_reason = (
            f"TensorRT {record.key.trt_version} {self.precision} engine "
            f"{'built' if record.built else 'from cache'}, parity {report.describe()}"
        )
        missing = [t for t in self.mask_thresholds if t not in info.mask_thresholds]
        if missing:
            raise ValueError(f"{onnx_path} has no range-mask output for {missing} m")
        wanted = [DEPTH_OUTPUT, *(mask_output_name(t) for t in self.mask_thresholds)]
        return TensorRTRunner(engine, wanted, batch)

    # ----------------------------------------------------------------- buffers
    def _input_buffer(self, batch: int) -> np.ndarray:
        key = ("input", batch)
        if key not in self._buffers:
            h, w = self.input_size
            self._buffers[key] = np.zeros((batch, 3, h, w), np.float32)
        return self._buffers[key]

    def _resized_buffer(self, batch: int) -> np.ndarray:
        key = ("resized", batch)
        if key not in self._buffers:
            h, w = self.input_size
            self._buffers[key] = np.empty((batch, h, w, 3), np.uint8)
        return self._buffers[key]

    def _warm_up(self) -> float:
        start = time.perf_counter()
        self._runner.run(self._input_buffer(1), {})
        return _ms(start)

    # ----------------------------------------------------------------- predict
    def preprocess_into(self, rgb: np.ndarray) -> np.ndarray:
        """uint8 [B, H, W, 3] -> the reused float32 [B, 3, h, w] model input (normalized)."""
        import cv2

        batch, height, width, _ = rgb.shape
        h, w = self.input_size
        x = self._input_buffer(batch)
        if (height, width) != (h, w):
            resized = self._resized_buffer(batch)
            shrink = height >= h and width >= w
            flag = cv2.INTER_AREA if shrink else cv2.INTER_CUBIC
            for b in range(batch):
                cv2.resize(rgb[b], (w, h), dst=resized[b], interpolation=flag)
        else:
            resized = rgb
        config = self.config
        mean = np.asarray(config.mean if config.normalize else (0.0, 0.0, 0.0), np.float64)
        std = np.asarray(config.std if config.normalize else (1.0, 1.0, 1.0), np.float64)
        scale = (1.0 / (255.0 * std)).astype(np.float32)
        offset = (-mean / std).astype(np.float32)
        for c in range(3):
            np.multiply(resized[..., c], scale[c], out=x[:, c], casting="unsafe")
            x[:, c] += offset[c]
        return x

    def predict(self, rgb: np.ndarray) -> Prediction:
        """Range (metres) and range-mask probabilities for uint8 RGB [H, W, 3] or [B, H, W, 3].

        Output arrays have the camera's size: [H, W] for one image, [B, H, W] for a batch.
        """
        total = time.perf_counter()
        batch = _check_rgb(rgb)
        single = rgb.ndim == 3
        frames = rgb[None] if single else rgb
        timings: dict[str, float] = {}
        start = time.perf_counter()
        x = self.preprocess_into(frames)
        timings["preprocess"] = _ms(start)
        height, width = frames.shape[1:3]
        range_m, masks = self._output_arrays(batch, height, width)
        step = self._runner.max_batch or batch
        post = 0.0
        for first in range(0, batch, step):
            chunk = x[first : first + step]
            stage: dict[str, float] = {}
            outputs = self._runner.run(np.ascontiguousarray(chunk), stage)
            for name, value in stage.items():
                timings[name] = timings.get(name, 0.0) + value
            start = time.perf_counter()
            self._postprocess(outputs, first, range_m, masks)
            post += _ms(start)
        timings["postprocess"] = post
        timings["total"] = _ms(total)
        if single:
            range_m = range_m[0]
            masks = {t: m[0] for t, m in masks.items()}
        return Prediction(range_m=range_m, masks=masks, timings=timings, backend=self.backend)

    def _output_arrays(self, batch: int, height: int, width: int):
        """Fresh result arrays, or with reuse_outputs the same ones every call (same shape)."""
        shape = (batch, height, width)
        key = ("outputs", shape)
        if self.reuse_outputs and key in self._buffers:
            return self._buffers[key]
        arrays = (
            np.empty(shape, np.float32),
            {t: np.empty(shape, np.float32) for t in self.mask_thresholds},
        )
        if self.reuse_outputs:
            self._buffers[key] = arrays
        return arrays

    def _postprocess(self, outputs, first: int, range_m: np.ndarray, masks: dict) -> None:
        depth, *mask_outputs = outputs
        h, w = depth.shape[-2:]
        height, width = range_m.shape[1:]
        key = (h, w, height, width)
        if key not in self._resizers:
            self._resizers[key] = _SeamAwareUpsampler((h, w), (height, width))
        resize = self._resizers[key]
        same = (h, w) == (height, width)
        for i in range(depth.shape[0]):
            target = range_m[first + i]
            if same:
                np.copyto(target, depth[i, 0])
            else:
                resize(depth[i, 0], target)
            target *= np.float32(self.max_range_m)
            for threshold, out in zip(self.mask_thresholds, mask_outputs, strict=True):
                if same:
                    np.copyto(masks[threshold][first + i], out[i, 0])
                else:
                    resize(out[i, 0], masks[threshold][first + i])

    def describe(self) -> str:
        h, w = self.input_size
        return (
            f"{self.backend} on {self.device} ({self.precision}, input {h}x{w}, "
            f"{self.threads} threads): {self.backend_reason}"
        )


def _resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cpu" or device == "cuda" or device.startswith("cuda:"):
        return device
    raise ValueError(f"device must be 'cpu', 'cuda', 'cuda:N' or 'auto', got {device!r}")


def _resolve_input_size(input_size, config, source: _Source) -> tuple[int, int]:
    if source.onnx_path is not None:
        fixed = tuple(config.input_size)
        if input_size is not None and tuple(input_size) != fixed:
            raise ValueError(
                f"{source.onnx_path} was exported for input {fixed}; cannot run it at "
                f"{tuple(input_size)} (export again with that size)"
            )
        return fixed  # type: ignore[return-value]
    size = tuple(int(s) for s in (input_size or config.input_size))
    patch = config.patch_size
    if len(size) != 2 or any(s <= 0 or s % patch for s in size):
        raise ValueError(f"input_size must be two positive multiples of {patch}, got {size}")
    return size  # type: ignore[return-value]


def _resolve_thresholds(mask_thresholds, config) -> tuple[int, ...]:
    if mask_thresholds is None:
        return tuple(config.mask_thresholds)
    thresholds = tuple(int(t) for t in mask_thresholds)
    unknown = [t for t in thresholds if t not in config.mask_thresholds]
    if unknown:
        raise ValueError(
            f"no range-mask head for {unknown} m; this model has {list(config.mask_thresholds)}"
        )
    return thresholds


def _check_rgb(rgb: np.ndarray) -> int:
    if not isinstance(rgb, np.ndarray) or rgb.dtype != np.uint8:
        kind = rgb.dtype if isinstance(rgb, np.ndarray) else type(rgb).__name__
        raise ValueError(f"predict expects uint8 RGB pixels, got {kind}")
    if rgb.ndim not in (3, 4) or rgb.shape[-1] != 3:
        raise ValueError(f"predict expects [H, W, 3] or [B, H, W, 3] RGB, got shape {rgb.shape}")
    if min(rgb.shape[:-1]) == 0:
        raise ValueError(f"empty image {rgb.shape}")
    return 1 if rgb.ndim == 3 else rgb.shape[0]
