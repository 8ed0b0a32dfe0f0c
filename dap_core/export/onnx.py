"""DAP -> ONNX: fixed input size, RoPE baked, checked, with the model config in the metadata.

Graph contract (what onnxruntime / TensorRT backends rely on):
- input  "image"  float32 [B, 3, H, W], already preprocessed (dap_core.model.preprocess);
  B is 1 (or the export batch) unless exported with a dynamic batch axis.
- output "depth"  float32 [B, 1, H, W] = range / max_range_m in (0, 1);
  outputs "within_<T>m" float32 [B, 1, H, W] = P(range <= T metres), one per exported threshold.
- metadata_props: "dap.config" (DAPConfig JSON, input_size = the export size),
  "dap.mask_thresholds" (JSON list, output order), "dap.dynamic_batch" ("0"/"1").

The export uses torch's `torch.export`-based ONNX exporter. The patch grid is fixed, so the
RoPE sin/cos tables are computed once and written into the graph as constants (no Sin/Cos,
no data-dependent If nodes: TensorRT rejects or miscomputes the `If` that DINOv3's RoPE turns
into under the TorchScript exporter, anchors §0.9); `check_exported_graph` asserts it.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import shutil
import tempfile
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from dap_core.files import ensure_dir, fsync_dir, os_error_in_chain, write_error

LOG = logging.getLogger(__name__)

INPUT_NAME = "image"
DEPTH_OUTPUT = "depth"
META_CONFIG = "dap.config"
META_THRESHOLDS = "dap.mask_thresholds"
META_DYNAMIC_BATCH = "dap.dynamic_batch"
# The torch.export-based exporter emits opset-18 ops (Split with num_outputs); lower opsets
# would need the deprecated TorchScript exporter, which also emits If nodes for DAP's adapter.
MIN_OPSET = 18
DEFAULT_OPSET = 18
FORBIDDEN_OPS = ("If", "Loop", "Scan")
ROPE_OPS = ("Sin", "Cos")
MAX_DYNAMIC_BATCH = 64
PROTOBUF_LIMIT_BYTES = 1_800_000_000  # leave room under protobuf's 2 GiB for the graph itself


def mask_output_name(threshold_m: int) -> str:
    return f"within_{int(threshold_m)}m"


@dataclass(frozen=True)
class OnnxModelInfo:
    """What an exported DAP ONNX file holds, read back from its graph and metadata."""

    path: Path
    config_json: str
    input_size: tuple[int, int]
    mask_thresholds: tuple[int, ...]
    dynamic_batch: bool
    batch: int | None  # fixed batch, or None when dynamic
    opset: int

    @property
    def output_names(self) -> tuple[str, ...]:
        return (DEPTH_OUTPUT, *(mask_output_name(t) for t in self.mask_thresholds))

    def config(self):
        from dap_core.model import DAPConfig

        return DAPConfig.from_json(self.config_json)


class _BakedRope(nn.Module):
    """Stands in for the backbone's RoPE module: returns fixed (sin, cos) tables."""

    def __init__(self, sin: torch.Tensor, cos: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("sin", sin.detach().clone(), persistent=False)
        self.register_buffer("cos", cos.detach().clone(), persistent=False)

    def forward(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.sin, self.cos


class _ExportWrapper(nn.Module):
    def __init__(self, model: nn.Module, thresholds: tuple[int, ...]) -> None:
        super().__init__()
        self.model = model
        self.thresholds = thresholds

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.forward_tensors(image, self.thresholds)


@contextlib.contextmanager
def baked_rope(model: nn.Module, height: int, width: int) -> Iterator[None]:
    """Temporarily replace the backbone's RoPE by constant tables for an H x W input."""
    backbone = model.backbone
    original = backbone.rope_embed
    patch = model.config.patch_size
    with torch.no_grad():
        sin, cos = original(height // patch, width // patch)
    backbone.rope_embed = _BakedRope(sin, cos)
    try:
        yield
    finally:
        backbone.rope_embed = original


def export_onnx(
    model: nn.Module,
    path: str | Path,
    *,
    input_size: tuple[int, int] | None = None,
    mask_thresholds: Sequence[int] | None = None,
    opset: int = DEFAULT_OPSET,
    dynamic_batch: bool = False,
    batch: int = 1,
    check: bool = True,
) -> OnnxModelInfo:
    """Export a CPU FP32 DAP model to `path` and check the result.

    input_size: (H, W), multiples of the patch size; defaults to the model's config.
    mask_thresholds: which range-mask heads to export (None = all, () = depth only).
    dynamic_batch: make the batch axis dynamic (1..64); otherwise the batch is fixed to `batch`.
    """
    from dap_core.export.parity import reference_input

    config = model.config
    height, width = tuple(input_size or config.input_size)
    patch = config.patch_size
    if height % patch or width % patch or height < patch or width < patch:
        raise ValueError(f"input_size {(height, width)} must be positive multiples of {patch}")
    if opset < MIN_OPSET:
        raise ValueError(f"opset must be >= {MIN_OPSET} for this exporter, got {opset}")
    if batch < 1:
        raise ValueError(f"batch must be >= 1, got {batch}")
    thresholds = tuple(config.mask_thresholds if mask_thresholds is None else mask_thresholds)
    unknown = [t for t in thresholds if t not in config.mask_thresholds]
    if unknown:
        raise ValueError(f"no range-mask head for {unknown} m; model has {config.mask_thresholds}")
    parameter = next(model.parameters())
    if parameter.device.type != "cpu" or parameter.dtype != torch.float32:
        raise ValueError(
            f"export needs a CPU float32 model, got {parameter.dtype} on {parameter.device}"
        )
    path = Path(path)
    dummy = torch.from_numpy(reference_input(height, width, max(batch, 2 if dynamic_batch else 1)))
    output_names = [DEPTH_OUTPUT, *(mask_output_name(t) for t in thresholds)]
    dynamic_shapes = None
    if dynamic_batch:
        dim = torch.export.Dim("batch", min=1, max=MAX_DYNAMIC_BATCH)
        dynamic_shapes = {"image": {0: dim}}
    export_config = config.replace(input_size=(height, width))
    was_training = model.training
    model.eval()
    try:
        with _staging_dir(path) as staging:
            staged = staging / path.name
            with baked_rope(model, height, width), torch.no_grad(), _quiet_exporter():
                torch.onnx.export(
                    _ExportWrapper(model, thresholds),
                    (dummy,),
                    str(staged),
                    input_names=[INPUT_NAME],
                    output_names=output_names,
                    opset_version=opset,
                    dynamo=True,
                    dynamic_shapes=dynamic_shapes,
                    external_data=_needs_external_data(model),
                    verbose=False,
                )
            _write_metadata(staged, export_config.to_json(), thresholds, dynamic_batch)
            if check:
                check_exported_graph(staged)
            _publish(staging, path)
    except Exception as err:
        os_error = os_error_in_chain(err)
        if os_error is None:
            raise
        raise write_error(path, os_error) from err
    finally:
        model.train(was_training)
    info = read_onnx_info(path)
    LOG.info("exported %s (opset %d, outputs %s)", path, info.opset, ", ".join(output_names))
    return info


@contextlib.contextmanager
def _staging_dir(path: Path) -> Iterator[Path]:
    """A hidden folder beside `path` (same filesystem) that is removed afterwards, whatever
    happened: the export is written there and only a complete, checked file is moved out."""
    ensure_dir(path.parent)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, path: Path) -> None:
    """Move the staged export into place: external weight files first, the graph last, so a
    reader never finds a graph whose weights are not there yet."""
    graph = staging / path.name
    for extra in sorted(staging.iterdir()):
        if extra != graph:
            os.replace(extra, path.parent / extra.name)
    os.replace(graph, path)
    fsync_dir(path.parent)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The exporter's graph passes log every rewrite at INFO, and warn that torchvision's ops
    (which DAP does not use) cannot be registered; keep both out of our logs."""
    import warnings

    loggers = [logging.getLogger(name) for name in ("onnxscript", "onnx_ir", "torch.onnx")]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels, strict=True):
            lg.setLevel(level)


def _needs_external_data(model: nn.Module) -> bool:
    # protobuf files cannot exceed 2 GB; ViT-L (1.46 GB) still fits in one file.
    size = sum(p.numel() * p.element_size() for p in model.parameters())
    return size > PROTOBUF_LIMIT_BYTES


def _write_metadata(path: Path, config_json: str, thresholds, dynamic_batch: bool) -> None:
    import onnx

    # External weights (models over 2 GB) stay where they are: only the graph is rewritten.
    model = onnx.load(str(path), load_external_data=False)
    entries = {
        META_CONFIG: config_json,
        META_THRESHOLDS: json.dumps([int(t) for t in thresholds]),
        META_DYNAMIC_BATCH: "1" if dynamic_batch else "0",
    }
    kept = [p for p in model.metadata_props if p.key not in entries]
    del model.metadata_props[:]
    model.metadata_props.extend(kept)
    for key, value in entries.items():
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "dap_core"
    onnx.save(model, str(path))


def read_onnx_info(path: str | Path) -> OnnxModelInfo:
    """Read a DAP ONNX file's input size, thresholds and config (no weights are parsed)."""
    import onnx

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"ONNX file not found: {path}")
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as err:  # protobuf raises DecodeError and friends
        raise ValueError(f"{path} is not a readable ONNX file: {err}") from err
    meta = {p.key: p.value for p in model.metadata_props}
    if META_CONFIG not in meta or META_THRESHOLDS not in meta:
        raise ValueError(f"{path} is not a DAP export (no {META_CONFIG} metadata)")
    inputs = [i for i in model.graph.input if i.name == INPUT_NAME]
    if not inputs:
        raise ValueError(f"{path} has no input named {INPUT_NAME!r}")
    dims = inputs[0].type.tensor_type.shape.dim
    batch_dim = dims[0]
    dynamic = bool(batch_dim.dim_param) or not batch_dim.HasField("dim_value")
    opset = max(
        (int(o.version) for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0
    )
    return OnnxModelInfo(
        path=path,
        config_json=meta[META_CONFIG],
        input_size=(int(dims[2].dim_value), int(dims[3].dim_value)),
        mask_thresholds=tuple(int(t) for t in json.loads(meta[META_THRESHOLDS])),
        dynamic_batch=dynamic,
        batch=None if dynamic else int(batch_dim.dim_value),
        opset=opset,
    )


def check_exported_graph(path: str | Path) -> dict[str, int]:
    """onnx.checker plus the DAP export lint; returns the op-type histogram.

    Fails on control flow (If/Loop/Scan), on Sin/Cos (RoPE not baked), on an opset below
    MIN_OPSET, and on spatial input dimensions that are not fixed.
    """
    import onnx

    path = Path(path)
    onnx.checker.check_model(str(path), full_check=True)
    model = onnx.load(str(path), load_external_data=False)
    ops = Counter(node.op_type for node in _all_nodes(model.graph))
    problems = [f"{op} x{ops[op]}" for op in (*FORBIDDEN_OPS, *ROPE_OPS) if ops.get(op)]
    if problems:
        raise ValueError(
            f"{path}: exported graph contains {', '.join(problems)}: control flow or RoPE "
            "computed at run time (expected baked constants)"
        )
    info = read_onnx_info(path)
    if info.opset < MIN_OPSET:
        raise ValueError(f"{path}: opset {info.opset} < {MIN_OPSET}")
    if min(info.input_size) <= 0:
        raise ValueError(f"{path}: input height/width are not fixed ({info.input_size})")
    return dict(ops)


def _all_nodes(graph) -> Iterator:
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.g is not None and attribute.g.node:
                yield from _all_nodes(attribute.g)
            for sub in attribute.graphs:
                yield from _all_nodes(sub)
