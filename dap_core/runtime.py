"""Predictor: one interface for running DAP on whatever the machine has.

    predictor = Predictor("weights/dap_small")            # backend="auto", device="cpu"
    prediction = predictor.predict(rgb)                    # uint8 [H, W, 3] or [B, H, W, 3]
    prediction.range_m                                     # float32 metres, camera resolution

Owns: choosing (through dap_core.backend_choice), pre-processing and post-processing. Who
owns the rest: dap_core.model_source reads the weights and caches the ONNX export;
dap_core.backends builds each backend ("torch" CPU/CUDA, "onnxruntime" CPU, "tensorrt" CUDA
with its engine cache and parity gate) behind one `build(source, request)` interface;
dap_core.backend_choice decides for "auto" (cached CPU timings or a cheap rule, never an ONNX
export of a large model just to time it). The choice and its reason are in `.backend` and
`.backend_reason`, and printed once per process.

Pre/post-processing: the camera image is resized to the model input (area when shrinking,
cubic otherwise, as dap_core.model.preprocess) into buffers reused between calls; outputs are
resized back bilinearly, wrapping around the ERP seam (column 0 and column W-1 are neighbours
on the sphere). Range = depth x max_range_m, finite and not gated (Prediction.gated_range gates).
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any

import numpy as np

from dap_core.prediction import Prediction

LOG = logging.getLogger(__name__)

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
PRECISIONS = ("fp32", "bf16", "fp16", "int8")


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


# ------------------------------------------------------------------------- predictor


class Predictor:
    """Runs DAP on uint8 RGB panoramas and returns a Prediction at camera resolution.

    weights: a DAP model, a weights directory / .safetensors / official .pth, or a DAP .onnx
        export (onnxruntime or TensorRT only).
    backend: "auto", "torch", "onnxruntime" or "tensorrt".
    device: "cpu", "cuda", "cuda:N" or "auto" (CUDA when available).
    precision: "fp32", "bf16", "fp16" (CUDA) or "int8" (onnxruntime CPU). On the CPU, bf16
        and int8 pass dap_core.reduced_precision's gates (native BF16; agreement with FP32)
        or are refused with PrecisionRefusedError and the numbers.
    mask_thresholds: range masks to compute, metres (None = every head of the model).
    input_size: model input (H, W), multiples of 16 (None = the model's config).
    threads: CPU threads for torch / onnxruntime (None = all cores this process may use).
    cache_dir: where ONNX exports, engines and backend timings are kept ($DAP_ROS_CACHE).

    reuse_outputs: return the same result arrays on every call (no per-frame allocation at
        camera resolution); each call then overwrites the previous Prediction's arrays.
        Off by default: results belong to the caller.
    announce: say the backend decision on stderr (once per process); a command that reports
        it itself passes False, so the decision is printed once.

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
        announce: bool = True,
    ) -> None:
        import torch

        from dap_core.backend_choice import choose
        from dap_core.backends import BuildRequest
        from dap_core.export import cache_root
        from dap_core.model_source import load_source
        from dap_core.progress import say

        if backend not in BACKENDS:
            raise ValueError(f"backend must be one of {BACKENDS}, got {backend!r}")
        if precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
        self.threads = int(threads or available_cores())
        if self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {threads}")
        torch.set_num_threads(self.threads)
        self.cache_dir = Path(cache_dir) if cache_dir is not None else cache_root()
        engine_dir = Path(cache_dir) / "engines" if cache_dir is not None else None
        self.device = _resolve_device(device)
        self.precision = precision
        self._source = load_source(weights)
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
        request = BuildRequest(
            device=self.device,
            precision=precision,
            thresholds=self.mask_thresholds,
            input_size=self.input_size,
            threads=self.threads,
            cache_dir=self.cache_dir,
            engine_dir=engine_dir,
        )
        choice = choose(backend, self._source, request, self._input_buffer(1))
        self._runner = choice.runner
        self.backend: str = self._runner.name
        self.backend_reason = choice.reason
        if announce:  # a CLI that reports the decision itself passes False: said once
            say(f"{self.describe()}", once=True)
        if choice.warmed:
            self.warmup_ms = 0.0  # it ran while being measured
        elif warmup:
            self.warmup_ms = self._warm_up()

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
        from dap_core.backends import warm_up

        return warm_up(self._runner, self._input_buffer(1))

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


def _resolve_input_size(input_size, config, source) -> tuple[int, int]:
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
