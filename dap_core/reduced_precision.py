"""Reduced precision on the CPU, gated: BF16 (torch) and INT8 (onnxruntime dynamic quantisation).

Owns the two gates every reduced-precision CPU runner passes before use:

- hardware: BF16 runs only where the CPU computes it natively (avx512_bf16 or AMX); elsewhere
  oneDNN emulates it, slower than FP32, so it is refused with the reason;
- accuracy: on a fixed set of synthetic panoramas (indoor and outdoor, seeds FIXED_SEEDS) the
  candidate's range and masks are compared with FP32 of the same model: AbsRel of range vs FP32
  <= MAX_ABSREL and IoU of every mask (probability > 0.5) >= MIN_MASK_IOU, else refused with
  the numbers. A verdict is cached per model, size, heads, precision and library versions.

INT8: `onnxruntime.quantization.quantize_dynamic` on the FP32 export, linear layers only
(MatMul/Gemm weights to signed 8 bit, activations quantised per call); convolutions stay FP32.
"""

from __future__ import annotations

import hashlib
import json
import logging
import platform
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

LOG = logging.getLogger(__name__)

MAX_ABSREL = 0.01  # range AbsRel vs FP32 (the acceptance bound)
MIN_MASK_IOU = 0.99  # IoU of each binarised range mask vs FP32
FIXED_SEEDS = (0, 1, 2, 3)  # synthetic panoramas (scene chosen by the seed: indoor and outdoor)
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
INT8_OP_TYPES = ("MatMul", "Gemm")


class PrecisionRefusedError(RuntimeError):
    """A reduced-precision runner is not used here: no native support, or too far from FP32."""


# ------------------------------------------------------------------ hardware gate


def _read_cpuinfo() -> str:
    try:
        return Path("/proc/cpuinfo").read_text()
    except OSError:  # not on Linux
        return ""


def _flags_in(cpuinfo: str) -> set[str]:
    for line in cpuinfo.splitlines():
        if line.startswith("flags"):
            return set(line.split(":", 1)[1].split())
    return set()


def cpu_flags(cpuinfo: str | None = None) -> set[str]:
    """CPU feature flags from /proc/cpuinfo (empty when unreadable, e.g. not on Linux)."""
    return _flags_in(_read_cpuinfo() if cpuinfo is None else cpuinfo)


def cpu_identity(cpuinfo: str | None = None) -> str:
    """The CPU model name and its vector/matrix flags: what reduced-precision kernels depend on.

    A verdict measured on one CPU is not evidence for another (AMX, AVX-512 BF16/VNNI and AVX2
    kernels round differently), so the gate's cache key carries this.
    """
    cpuinfo = _read_cpuinfo() if cpuinfo is None else cpuinfo
    model = next(
        (line.split(":", 1)[1].strip() for line in cpuinfo.splitlines() if "model name" in line),
        platform.processor() or "unknown CPU",
    )
    units = sorted(f for f in _flags_in(cpuinfo) if f.startswith(("avx", "amx", "fma", "sse4")))
    return f"{model} [{' '.join(units)}]"


def bf16_support(flags: Iterable[str] | None = None) -> tuple[bool, str]:
    """(supported, reason): native BF16 needs avx512_bf16 or AMX (amx_bf16)."""
    flags = cpu_flags() if flags is None else set(flags)
    native = [f for f in BF16_FLAGS if f in flags]
    if native:
        return True, f"CPU has native BF16 ({', '.join(native)})"
    best = next((f for f in ("avx512f", "avx2", "avx") if f in flags), "no AVX")
    return False, (
        f"CPU has no native BF16 (needs {' or '.join(BF16_FLAGS)}; best vector unit here: "
        f"{best}); emulated BF16 is slower than FP32"
    )


def require_bf16(flags: Iterable[str] | None = None) -> str:
    """The reason string when BF16 is native here; PrecisionRefusedError otherwise."""
    ok, reason = bf16_support(flags)
    if not ok:
        raise PrecisionRefusedError(f"bf16 on CPU refused: {reason}; use fp32 or int8")
    return reason


# ------------------------------------------------------------------ accuracy gate


@dataclass(frozen=True)
class Agreement:
    """Candidate vs FP32 on the fixed set: worst image's numbers."""

    absrel: float  # mean |r - r_fp32| / r_fp32 of range, worst image
    mask_iou: float  # IoU of (p > 0.5) masks, worst image and head (1.0 with no heads)
    images: int

    @property
    def ok(self) -> bool:
        return self.absrel <= MAX_ABSREL and self.mask_iou >= MIN_MASK_IOU

    def describe(self) -> str:
        return (
            f"range AbsRel vs FP32 {self.absrel:.4f} (max {MAX_ABSREL}), mask IoU "
            f"{self.mask_iou:.4f} (min {MIN_MASK_IOU}) on {self.images} fixed panoramas"
        )


def fixed_inputs(config, input_size: tuple[int, int]) -> list[np.ndarray]:
    """The fixed set: synthetic panoramas, preprocessed as the model expects ([1, 3, h, w])."""
    from dap_core.data.synthetic import generate_panorama
    from dap_core.model.preprocess import preprocess

    h, w = input_size
    config = config.replace(input_size=(h, w))
    return [
        preprocess(generate_panorama(seed, h, 2 * h).rgb, config).numpy() for seed in FIXED_SEEDS
    ]


def mask_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two probability maps binarised at 0.5 (1.0 when both are empty)."""
    a, b = a > 0.5, b > 0.5
    union = np.logical_or(a, b).sum()
    return 1.0 if union == 0 else float(np.logical_and(a, b).sum() / union)


def compare(
    run_fp32: Callable[[np.ndarray], list[np.ndarray]],
    run_candidate: Callable[[np.ndarray], list[np.ndarray]],
    inputs: list[np.ndarray],
) -> Agreement:
    """Worst-image AbsRel of depth (= range / max range) and worst mask IoU over `inputs`.

    Runs each input through both callables, which return (depth, mask_T1, ...) arrays.
    """
    absrel, iou = 0.0, 1.0
    for x in inputs:
        ref = [np.array(o, np.float64) for o in run_fp32(x)]
        got = [np.array(o, np.float64) for o in run_candidate(x)]
        depth_ref, depth = ref[0], got[0]
        rel = np.abs(depth - depth_ref) / np.maximum(depth_ref, 1e-6)
        value = float(np.mean(rel)) if np.all(np.isfinite(depth)) else float("inf")
        absrel = max(absrel, value)
        for m_ref, m in zip(ref[1:], got[1:], strict=True):
            iou = min(iou, mask_iou(m, m_ref))
    return Agreement(absrel, iou, len(inputs))


def gate(
    precision: str,
    key: list,
    cache_dir: Path,
    measure: Callable[[], Agreement],
) -> Agreement:
    """Cached accuracy verdict for `key`; raises PrecisionRefusedError when it fails."""
    path = _verdict_path(cache_dir, precision, key)
    agreement = None
    try:
        agreement = Agreement(**json.loads(path.read_text()))
    except (OSError, ValueError, TypeError):
        agreement = measure()
        _store(path, agreement)
    if not agreement.ok:
        raise PrecisionRefusedError(f"{precision} refused: {agreement.describe()}")
    return agreement


def _verdict_path(cache_dir: Path, precision: str, key: list, cpu: str | None = None) -> Path:
    import onnxruntime
    import torch

    cpu = cpu_identity() if cpu is None else cpu
    text = json.dumps([precision, *key, torch.__version__, onnxruntime.__version__, cpu])
    name = hashlib.sha256(text.encode()).hexdigest()[:20]
    return Path(cache_dir) / "precision_gate" / f"{precision}-{name}.json"


def _store(path: Path, agreement: Agreement) -> None:
    from dap_core.files import atomic_write_bytes

    try:
        atomic_write_bytes(path, json.dumps(asdict(agreement)).encode())
    except OSError as err:  # a read-only cache only costs a new comparison next time
        LOG.warning("could not store the precision verdict in %s: %s", path, err)


# ------------------------------------------------------------------ INT8


def quantize_int8(fp32_onnx: Path, out: Path) -> Path:
    """Dynamic INT8 quantisation of the linear layers of an FP32 DAP export, written atomically
    (staged beside `out`; metadata kept so the file still reads as a DAP export)."""
    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from dap_core.files import atomic_write_bytes, os_error_in_chain, write_error

    out = Path(out)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f".{out.name}.", dir=out.parent) as staging:
            staged = Path(staging) / out.name
            quantize_dynamic(
                str(fp32_onnx),
                str(staged),
                op_types_to_quantize=list(INT8_OP_TYPES),
                weight_type=QuantType.QInt8,
            )
            model = onnx.load(str(staged))
            source = onnx.load(str(fp32_onnx), load_external_data=False)
            kept = {p.key for p in model.metadata_props}
            for prop in source.metadata_props:
                if prop.key not in kept:
                    model.metadata_props.add(key=prop.key, value=prop.value)
            atomic_write_bytes(out, model.SerializeToString())
    except Exception as err:
        os_error = os_error_in_chain(err)
        if os_error is None:
            raise
        raise write_error(out, os_error) from err
    return out
