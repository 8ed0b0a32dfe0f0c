"""Parity gate: an engine's output on a fixed input must match the FP32 reference.

TensorRT versions have miscompiled DINOv3 backbones (wrong values in FP32, NaN in FP16; perf
note §7.4), silently. So before a TensorRT engine is used it runs on a fixed, image-like input
and its outputs are compared with onnxruntime's FP32 outputs of the same ONNX (computed once and
stored beside the engine); beyond tolerance it is refused with EngineRejectedError.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from dap_core.files import atomic_write_bytes

# Parity tolerances on DAP's outputs (depth / max_range and mask probabilities, both in (0, 1)).
# FP32: kernel-order noise only. FP16/BF16: the mixed-precision rewrite of the fixture model
# measured against FP32 (test_export_onnx): FP16 on onnxruntime mean 5e-5 / max 3.5e-4, BF16 on
# the ONNX reference evaluator mean 1.3e-3 / max 6e-3. The bounds leave 10-80x headroom for
# trained weights and GPU tactics while still refusing the miscompiles seen in the wild (errors
# of 0.1-0.5, or NaN).
TOLERANCES: dict[str, tuple[float, float]] = {  # precision -> (mean |Δ|, max |Δ|)
    "fp32": (1e-4, 2e-3),
    "fp16": (4e-3, 6e-2),
    "bf16": (1.5e-2, 1.5e-1),
}


class EngineRejectedError(RuntimeError):
    """A TensorRT engine's output disagrees with the FP32 reference beyond tolerance."""


@dataclass(frozen=True)
class ParityReport:
    """Per-output mean and max absolute difference against the reference."""

    precision: str
    mean_abs: dict[str, float]
    max_abs: dict[str, float]
    tolerance: tuple[float, float]

    @property
    def ok(self) -> bool:
        mean_tol, max_tol = self.tolerance
        return all(
            np.isfinite(self.mean_abs[k])
            and self.mean_abs[k] <= mean_tol
            and self.max_abs[k] <= max_tol
            for k in self.mean_abs
        )

    def describe(self) -> str:
        rows = [
            f"{k}: mean |Δ| {self.mean_abs[k]:.2e}, max |Δ| {self.max_abs[k]:.2e}"
            for k in sorted(self.mean_abs)
        ]
        mean_tol, max_tol = self.tolerance
        return (
            "; ".join(rows)
            + f" (tolerance for {self.precision}: mean {mean_tol:.0e}, max {max_tol:.0e})"
        )


def compare_outputs(
    reference: Mapping[str, np.ndarray], candidate: Mapping[str, np.ndarray], precision: str
) -> ParityReport:
    """Mean/max |Δ| of every reference output; NaN/inf in the candidate count as infinite."""
    if precision not in TOLERANCES:
        raise ValueError(f"precision must be one of {sorted(TOLERANCES)}, got {precision!r}")
    mean_abs: dict[str, float] = {}
    max_abs: dict[str, float] = {}
    for name, ref in reference.items():
        if name not in candidate:
            raise ValueError(f"candidate has no output {name!r} (has {sorted(candidate)})")
        got = np.asarray(candidate[name], dtype=np.float64)
        ref64 = np.asarray(ref, dtype=np.float64)
        if got.shape != ref64.shape:
            raise ValueError(f"output {name}: shape {got.shape} != reference {ref64.shape}")
        diff = np.abs(got - ref64)
        diff[~np.isfinite(diff)] = np.inf
        mean_abs[name] = float(diff.mean())
        max_abs[name] = float(diff.max())
    return ParityReport(precision, mean_abs, max_abs, TOLERANCES[precision])


def verify_engine(
    run: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]],
    reference_inputs: dict[str, np.ndarray],
    reference_outputs: Mapping[str, np.ndarray],
    precision: str,
    engine_name: str = "engine",
) -> ParityReport:
    """Run the engine on the fixed reference input; raise EngineRejectedError on disagreement."""
    report = compare_outputs(reference_outputs, run(reference_inputs), precision)
    if not report.ok:
        raise EngineRejectedError(
            f"TensorRT {engine_name} disagrees with the FP32 onnxruntime reference and is refused: "
            f"{report.describe()}. Try precision fp32 or another TensorRT version "
            "(DINOv3 miscompiles are known on TensorRT <= 10.4 and on Jetson 10.3)."
        )
    return report


def reference_input(height: int, width: int, batch: int = 1, seed: int = 0) -> np.ndarray:
    """Fixed, image-like ImageNet-normalized input [batch, 3, H, W] float32 for parity checks.

    Smooth random colour fields (a 1/16-scale noise image upsampled) rather than white noise,
    so activations resemble those of a real panorama.
    """
    import cv2

    rng = np.random.default_rng(seed)
    out = np.empty((batch, 3, height, width), np.float32)
    mean = np.array([0.485, 0.456, 0.406], np.float32)[:, None, None]
    std = np.array([0.229, 0.224, 0.225], np.float32)[:, None, None]
    for b in range(batch):
        small = rng.random((max(height // 16, 2), max(width // 16, 2), 3), dtype=np.float32)
        rgb = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC).clip(0, 1)
        out[b] = (rgb.transpose(2, 0, 1) - mean) / std
    return out


def onnxruntime_reference(
    onnx_path: str | Path, inputs: dict[str, np.ndarray], threads: int | None = None
) -> dict[str, np.ndarray]:
    """FP32 reference outputs of the ONNX file on onnxruntime's CPU provider."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, inputs), strict=True))


def load_or_make_reference(
    record,
    onnx_path: str | Path,
    input_name: str,
    shape: tuple[int, int, int, int],
    make_reference: Callable[[dict[str, np.ndarray]], Mapping[str, np.ndarray]] | None = None,
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Reference input/outputs for an engine, computed once per ONNX and stored in the cache."""
    path = (
        record.engine_path.parent / f"{Path(onnx_path).stem}.{record.key.onnx_sha256[:16]}.ref.npz"
    )
    if path.is_file():
        with np.load(path) as data:
            inputs = {input_name: data["__input__"]}
            outputs = {k: data[k] for k in data.files if k != "__input__"}
        if inputs[input_name].shape == shape:
            return inputs, outputs
    batch, _, height, width = shape
    inputs = {input_name: reference_input(height, width, batch)}
    maker = make_reference or (lambda x: onnxruntime_reference(onnx_path, x))
    outputs = {k: np.asarray(v, np.float32) for k, v in maker(inputs).items()}
    buffer = _npz_bytes({"__input__": inputs[input_name], **outputs})
    atomic_write_bytes(path, buffer)
    return inputs, outputs


def _npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    handle = io.BytesIO()
    np.savez(handle, **arrays)
    return handle.getvalue()
