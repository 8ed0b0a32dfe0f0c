"""TensorRT engines from DAP's ONNX export: precision planning, build, on-disk cache, parity gate.

Written against the TensorRT 10 and 11 Python APIs (name-based I/O, `execute_async_v3`).

Precision. TensorRT 10 builds reduced precision by weak typing: `BuilderFlag.FP16`/`BF16` plus
`OBEY_PRECISION_CONSTRAINTS`, with LayerNorm, Softmax and the attention-logit MatMul pinned to
FP32 layer by layer. TensorRT 11 removed those flags: the network is always strongly typed and
precision comes from the ONNX tensor types, so for FP16/BF16 the FP32 export is first rewritten
by `mixed_precision.to_mixed_precision` (same FP32 islands). Both paths keep graph I/O in FP32.

Cache. An engine is valid only for one TensorRT version, GPU and build configuration, so the
cache key hashes the ONNX bytes, TensorRT version, GPU name and compute capability, precision
and batch range; a JSON sidecar beside each engine records the key in clear text.

Gate. TensorRT versions have miscompiled DINOv3 backbones (perf note §7.4), so before an engine
is used its output on a fixed input is compared with an FP32 reference (onnxruntime on the
same ONNX, stored beside the engine); an engine beyond tolerance is refused.

Engine files are executable artifacts: load only engines this code built.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from dap_core.export.parity import EngineRejectedError  # noqa: F401  (re-exported)
from dap_core.files import atomic_write_bytes, sha256_file
from dap_core.progress import heartbeat

LOG = logging.getLogger(__name__)

PRECISIONS = ("fp32", "fp16", "bf16")
MIN_TENSORRT_MAJOR = 10  # the name-based I/O API and execute_async_v3
DEFAULT_WORKSPACE_BYTES = 4 << 30
ENGINE_CACHE_ENV = "DAP_ENGINE_CACHE"
# Versions with published DINOv3 miscompiles (NVIDIA/TensorRT#4742, #4723, #4558): warned about,
# and the parity gate decides.
LAST_SUSPECT_VERSION = (10, 4)


class TensorRTUnavailableError(RuntimeError):
    """TensorRT (or a CUDA device for it) is missing on this machine."""


def import_tensorrt() -> ModuleType:
    """Import the `tensorrt` Python package or raise a clear TensorRTUnavailableError."""
    try:
        import tensorrt
    except ImportError as err:
        raise TensorRTUnavailableError(
            "TensorRT is not installed (import tensorrt failed: "
            f"{err}). Install NVIDIA's tensorrt wheel for your CUDA version on a machine with an "
            "NVIDIA GPU, or use backend='torch' or 'onnxruntime'."
        ) from err
    major = tensorrt_major(tensorrt.__version__)
    if major < MIN_TENSORRT_MAJOR:
        raise TensorRTUnavailableError(
            f"TensorRT {tensorrt.__version__} is too old: dap needs TensorRT "
            f"{MIN_TENSORRT_MAJOR} or newer (name-based I/O API)."
        )
    return tensorrt


def tensorrt_major(version: str) -> int:
    """Major version number of a TensorRT version string ("10.13.0.35" -> 10)."""
    try:
        return int(version.split(".")[0])
    except ValueError as err:
        raise ValueError(f"cannot parse TensorRT version {version!r}") from err


def _major_minor(version: str) -> tuple[int, int]:
    parts = [*version.split("."), "0"]
    try:
        return int(parts[0]), int(parts[1])
    except ValueError as err:
        raise ValueError(f"cannot parse TensorRT version {version!r}") from err


# --------------------------------------------------------------------------- precision plan


@dataclass(frozen=True)
class PrecisionPlan:
    """How an engine of one precision is built with one TensorRT version.

    strongly_typed: create the network strongly typed (always so on TensorRT 11+).
    builder_flags:  `trt.BuilderFlag` names to set (TensorRT 10 weak typing only).
    onnx_dtype:     build from the mixed-precision rewrite of the ONNX in this dtype, or None.
    pin_fp32:       pin LayerNorm, Softmax and attention-logit layers to FP32 after parsing.
    """

    precision: str
    trt_version: str
    strongly_typed: bool
    builder_flags: tuple[str, ...] = ()
    onnx_dtype: str | None = None
    pin_fp32: bool = False
    notes: tuple[str, ...] = ()

    def describe(self) -> str:
        mode = "strongly typed" if self.strongly_typed else "weakly typed"
        parts = [f"{self.precision} on TensorRT {self.trt_version}: {mode}"]
        if self.builder_flags:
            parts.append("flags " + "+".join(self.builder_flags))
        if self.onnx_dtype:
            parts.append(f"{self.onnx_dtype} matrix ops from a mixed-precision ONNX")
        if self.pin_fp32:
            parts.append("LayerNorm/Softmax/attention logits pinned to FP32")
        return "; ".join(parts + list(self.notes))


def plan_precision(precision: str, trt_version: str) -> PrecisionPlan:
    """Choose the build recipe for `precision` ("fp32", "fp16", "bf16") on `trt_version`."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    major = tensorrt_major(trt_version)
    if major < MIN_TENSORRT_MAJOR:
        raise ValueError(
            f"TensorRT {trt_version} is not supported (need {MIN_TENSORRT_MAJOR} or newer)"
        )
    notes: tuple[str, ...] = ()
    if _major_minor(trt_version) <= LAST_SUSPECT_VERSION:
        notes = (
            f"TensorRT {trt_version} has published DINOv3 miscompiles; the parity gate decides",
        )
    if major >= 11:
        # Strong typing is the only mode; reduced precision must be in the ONNX types.
        onnx_dtype = None if precision == "fp32" else precision
        return PrecisionPlan(precision, trt_version, True, (), onnx_dtype, False, notes)
    if precision == "fp32":
        return PrecisionPlan(precision, trt_version, False, (), None, False, notes)
    flag = "FP16" if precision == "fp16" else "BF16"
    return PrecisionPlan(
        precision, trt_version, False, (flag, "OBEY_PRECISION_CONSTRAINTS"), None, True, notes
    )


def pin_precision_sensitive_layers(network: Any, trt: ModuleType) -> int:
    """Pin LayerNorm, Softmax and the MatMul producing each Softmax's logits to FP32.

    For TensorRT 10 weak typing with OBEY_PRECISION_CONSTRAINTS. Returns how many layers were
    pinned.
    """
    layers = [network.get_layer(i) for i in range(network.num_layers)]
    producer: dict[str, Any] = {}
    for layer in layers:
        for j in range(layer.num_outputs):
            producer[layer.get_output(j).name] = layer
    passthrough = {trt.LayerType.ELEMENTWISE, trt.LayerType.SCALE, trt.LayerType.IDENTITY}
    pinned: dict[int, Any] = {}
    for layer in layers:
        if layer.type == trt.LayerType.NORMALIZATION:
            pinned[id(layer)] = layer
        elif layer.type == trt.LayerType.SOFTMAX:
            pinned[id(layer)] = layer
            stack = [layer.get_input(0)]
            seen: set[str] = set()
            while stack:
                tensor = stack.pop()
                if tensor is None or tensor.name in seen or tensor.name not in producer:
                    continue
                seen.add(tensor.name)
                src = producer[tensor.name]
                if src.type == trt.LayerType.MATRIX_MULTIPLY:
                    pinned[id(src)] = src
                elif src.type in passthrough:
                    stack.extend(src.get_input(k) for k in range(src.num_inputs))
    for layer in pinned.values():
        layer.precision = trt.float32
        for j in range(layer.num_outputs):
            layer.set_output_type(j, trt.float32)
    return len(pinned)


# --------------------------------------------------------------------------- cache


@dataclass(frozen=True)
class EngineKey:
    """Everything an engine depends on; two builds with equal keys are interchangeable."""

    onnx_sha256: str
    trt_version: str
    gpu_name: str
    compute_capability: str
    precision: str
    batch: tuple[int, int, int] = (1, 1, 1)  # (min, opt, max) batch of the optimization profile

    def digest(self) -> str:
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def engine_name(self, stem: str) -> str:
        return f"{stem}.{self.precision}.{self.digest()[:16]}.engine"


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes (ONNX external-data files are not included)."""
    return sha256_file(path)


def engine_cache_dir() -> Path:
    """Engine cache folder: $DAP_ENGINE_CACHE, else <cache_root>/engines."""
    from dap_core.export import cache_root

    env = os.environ.get(ENGINE_CACHE_ENV)
    return Path(env) if env else cache_root() / "engines"


@dataclass(frozen=True)
class GpuInfo:
    name: str
    compute_capability: str


def current_gpu(device_index: int = 0) -> GpuInfo:
    """Name and compute capability of a CUDA device, via torch."""
    import torch

    if not torch.cuda.is_available():
        raise TensorRTUnavailableError("TensorRT needs an NVIDIA GPU, and CUDA is not available")
    major, minor = torch.cuda.get_device_capability(device_index)
    return GpuInfo(torch.cuda.get_device_name(device_index), f"{major}.{minor}")


@dataclass
class EngineRecord:
    """A cached engine: its file, sidecar, key and whether this call built it."""

    engine_path: Path
    meta_path: Path
    key: EngineKey
    built: bool
    plan: PrecisionPlan
    meta: dict[str, Any] = field(default_factory=dict)


def _read_meta(meta_path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(meta_path.read_text())
    except (OSError, ValueError):
        return None


def find_cached_engine(key: EngineKey, stem: str, cache_dir: Path) -> Path | None:
    """The engine file for `key` if it and a sidecar with the same key exist."""
    engine = cache_dir / key.engine_name(stem)
    meta = _read_meta(engine.with_suffix(".json"))
    if engine.is_file() and meta is not None and meta.get("key_digest") == key.digest():
        return engine
    return None


# --------------------------------------------------------------------------- build


def _network_flags(trt: ModuleType, plan: PrecisionPlan) -> int:
    # On TensorRT 11 STRONGLY_TYPED is deprecated and ignored (always on); pass it only on 10.
    if plan.strongly_typed and tensorrt_major(trt.__version__) < 11:
        return 1 << int(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)
    return 0


def _parse_onnx(trt: ModuleType, parser: Any, onnx_path: Path) -> None:
    if parser.parse_from_file(str(onnx_path)):
        return
    errors = []
    for i in range(parser.num_errors):
        err = parser.get_error(i)
        errors.append(err.desc() if hasattr(err, "desc") else str(err))
    raise RuntimeError(
        f"TensorRT could not parse {onnx_path}:\n  " + "\n  ".join(errors or ["(no details)"])
    )


def _add_batch_profile(builder: Any, network: Any, config: Any, batch: tuple[int, int, int]):
    """Optimization profile for a dynamic batch axis; a static ONNX needs none."""
    dynamic = False
    profile = builder.create_optimization_profile()
    for i in range(network.num_inputs):
        tensor = network.get_input(i)
        shape = tuple(tensor.shape)
        if shape and shape[0] == -1:
            if any(s == -1 for s in shape[1:]):
                raise ValueError(f"input {tensor.name} has dynamic spatial dims {shape}")
            rest = shape[1:]
            profile.set_shape(tensor.name, (batch[0], *rest), (batch[1], *rest), (batch[2], *rest))
            dynamic = True
    if dynamic:
        config.add_optimization_profile(profile)
    return dynamic


def build_engine(
    onnx_path: str | Path,
    precision: str = "fp16",
    *,
    cache_dir: str | Path | None = None,
    force: bool = False,
    max_batch: int = 1,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    gpu: GpuInfo | None = None,
    trt: ModuleType | None = None,
) -> EngineRecord:
    """Build (or fetch from the cache) a TensorRT engine for an FP32 DAP ONNX file.

    `max_batch` matters only for an ONNX exported with a dynamic batch axis. Returns the
    cached record without building when an engine with the same key exists, unless `force`.
    """
    trt = trt or import_tensorrt()
    onnx_path = Path(onnx_path)
    if not onnx_path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {onnx_path}")
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    gpu = gpu or current_gpu()
    cache = Path(cache_dir) if cache_dir is not None else engine_cache_dir()
    plan = plan_precision(precision, trt.__version__)
    batch = (1, max_batch, max_batch)
    key = EngineKey(
        file_sha256(onnx_path), trt.__version__, gpu.name, gpu.compute_capability, precision, batch
    )
    engine_path = cache / key.engine_name(onnx_path.stem)
    meta_path = engine_path.with_suffix(".json")
    if not force and find_cached_engine(key, onnx_path.stem, cache) is not None:
        LOG.info("using cached TensorRT engine %s", engine_path)
        return EngineRecord(engine_path, meta_path, key, False, plan, _read_meta(meta_path) or {})

    what = f"building a TensorRT engine from {onnx_path.name} ({plan.describe()}; first run only)"
    with heartbeat(what):
        return _build(trt, onnx_path, plan, cache, key, gpu, batch, workspace_bytes)


def _build(trt, onnx_path, plan, cache, key, gpu, batch, workspace_bytes) -> EngineRecord:  # type: ignore[no-untyped-def]
    engine_path = cache / key.engine_name(onnx_path.stem)
    meta_path = engine_path.with_suffix(".json")
    source = onnx_path
    mixed_notes: tuple[str, ...] = ()
    if plan.onnx_dtype is not None:
        source, mixed_notes = _write_mixed_onnx(onnx_path, plan.onnx_dtype, cache, key)
    logger = trt.Logger(trt.Logger.WARNING)
    builder = trt.Builder(logger)
    network = builder.create_network(_network_flags(trt, plan))
    parser = trt.OnnxParser(network, logger)
    _parse_onnx(trt, parser, source)
    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_bytes))
    for name in plan.builder_flags:
        config.set_flag(getattr(trt.BuilderFlag, name))
    pinned = pin_precision_sensitive_layers(network, trt) if plan.pin_fp32 else 0
    dynamic = _add_batch_profile(builder, network, config, batch)
    timing_path = cache / f"timing-{trt.__version__}-{_slug(gpu.name)}.cache"
    timing = config.create_timing_cache(timing_path.read_bytes() if timing_path.is_file() else b"")
    config.set_timing_cache(timing, False)
    serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise RuntimeError(
            f"TensorRT failed to build an engine from {source} ({plan.describe()}); "
            "see the TensorRT log above"
        )
    atomic_write_bytes(engine_path, bytes(serialized))
    atomic_write_bytes(timing_path, bytes(config.get_timing_cache().serialize()))
    meta = {
        "key": asdict(key),
        "key_digest": key.digest(),
        "onnx": str(onnx_path),
        "plan": plan.describe(),
        "layers_pinned_fp32": pinned,
        "dynamic_batch": dynamic,
        "mixed_precision_notes": list(mixed_notes),
    }
    atomic_write_bytes(meta_path, json.dumps(meta, indent=2).encode())
    LOG.info("wrote TensorRT engine %s", engine_path)
    return EngineRecord(engine_path, meta_path, key, True, plan, meta)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text).strip("_") or "gpu"


def _write_mixed_onnx(
    onnx_path: Path, dtype: str, cache: Path, key: EngineKey
) -> tuple[Path, tuple[str, ...]]:
    import onnx

    from dap_core.export.mixed_precision import to_mixed_precision

    model = onnx.load(str(onnx_path))
    mixed, report = to_mixed_precision(model, dtype)
    target = cache / f"{onnx_path.stem}.{dtype}.{key.onnx_sha256[:16]}.onnx"
    target.parent.mkdir(parents=True, exist_ok=True)
    onnx.save(mixed, str(target))
    LOG.info(
        "mixed-precision ONNX %s: %d ops in %s, %d attention-logit MatMuls kept FP32",
        target,
        report.lowered,
        dtype,
        report.kept_fp32_logits,
    )
    return target, report.notes


# --------------------------------------------------------------------------- run


def _torch_dtype(trt: ModuleType, dtype: Any):
    import torch

    table = {
        trt.float32: torch.float32,
        trt.float16: torch.float16,
        trt.int32: torch.int32,
        trt.int8: torch.int8,
        trt.bool: torch.bool,
    }
    if hasattr(trt, "bfloat16"):
        table[trt.bfloat16] = torch.bfloat16
    if hasattr(trt, "int64"):
        table[trt.int64] = torch.int64
    if dtype not in table:
        raise TypeError(f"unsupported TensorRT tensor dtype {dtype}")
    return table[dtype]


class TensorRTEngine:
    """Runs a serialized engine on torch CUDA tensors; output buffers are kept between calls.

    Call with named input tensors already on the GPU; returns named output tensors on the
    same stream (not synchronized: read them after `torch.cuda.current_stream().synchronize()`
    or through `.cpu()`, which synchronizes).
    """

    def __init__(self, engine_path: str | Path, *, trt: ModuleType | None = None):
        import torch

        self.trt = trt or import_tensorrt()
        if not torch.cuda.is_available():
            raise TensorRTUnavailableError("TensorRT engines need CUDA, which is not available")
        self.path = Path(engine_path)
        self._logger = self.trt.Logger(self.trt.Logger.WARNING)
        self._runtime = self.trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(self.path.read_bytes())
        if self.engine is None:
            raise RuntimeError(
                f"TensorRT could not load {self.path}: built by another TensorRT version or GPU?"
            )
        self.context = self.engine.create_execution_context()
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == self.trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        self._outputs: dict[str, torch.Tensor] = {}
        self._shapes: dict[str, tuple[int, ...]] = {}

    def __call__(self, inputs: Mapping[str, Any]) -> dict[str, Any]:
        import torch

        missing = set(self.input_names) - set(inputs)
        if missing:
            raise ValueError(f"missing engine inputs {sorted(missing)}")
        for name in self.input_names:
            tensor = inputs[name]
            expected = _torch_dtype(self.trt, self.engine.get_tensor_dtype(name))
            if not tensor.is_cuda or tensor.dtype != expected or not tensor.is_contiguous():
                raise ValueError(
                    f"engine input {name} must be a contiguous CUDA {expected} tensor, got "
                    f"{tensor.dtype} on {tensor.device}"
                )
            shape = tuple(tensor.shape)
            if self._shapes.get(name) != shape:
                self.context.set_input_shape(name, shape)
                self._shapes[name] = shape
                self._outputs.clear()  # output shapes follow the batch
            self.context.set_tensor_address(name, tensor.data_ptr())
        device = inputs[self.input_names[0]].device
        for name in self.output_names:
            if name not in self._outputs:
                shape = tuple(self.context.get_tensor_shape(name))
                dtype = _torch_dtype(self.trt, self.engine.get_tensor_dtype(name))
                self._outputs[name] = torch.empty(shape, dtype=dtype, device=device)
            self.context.set_tensor_address(name, self._outputs[name].data_ptr())
        stream = torch.cuda.current_stream(device)
        if not self.context.execute_async_v3(stream.cuda_stream):
            raise RuntimeError(f"TensorRT execution of {self.path} failed")
        return dict(self._outputs)
