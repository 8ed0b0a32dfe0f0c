"""FP32 ONNX -> mixed-precision ONNX (FP16 or BF16 matrix ops, FP32 everywhere else).

TensorRT 11 removed the weak-typing builder flags (BuilderFlag.FP16 / BF16): reduced precision
must be written into the network's own tensor types and built strongly typed. This pass does
that for DAP with an allow-list rather than a block-list: only the ops that carry the FLOPs
(MatMul, Gemm, Conv, ConvTranspose: >99 % of DAP's FLOPs, perf note §2) run in the reduced
type. LayerNorm, Softmax, GELU, resampling, the sigmoids and all shape arithmetic stay FP32
untouched, and so does the attention-logit MatMul that feeds each Softmax (QKᵀ overflows in
FP16 on DINOv3, perf note §7.3). Graph inputs and outputs keep their FP32 types.

Weights of lowered ops are stored in the reduced type (no runtime cast of weights); activations
get Cast nodes at island borders, and consecutive lowered ops share one island without casts.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

REDUCED_TYPES = {"fp16": TensorProto.FLOAT16, "bf16": TensorProto.BFLOAT16}
LOWERED_OP_TYPES = ("MatMul", "Gemm", "Conv", "ConvTranspose")
# Conv/ConvTranspose accept bfloat16 only from ONNX opset 22 on.
BF16_CONV_MIN_OPSET = 22
# Ops that may sit between the attention-logit MatMul and its Softmax (scale, bias).
_LOGIT_PASSTHROUGH_OPS = ("Mul", "Div", "Add", "Sub", "Cast", "Where")


@dataclass(frozen=True)
class MixedPrecisionReport:
    """What the pass did: counts of lowered and deliberately FP32 nodes, and notes."""

    dtype: str
    lowered: int
    kept_fp32_logits: int
    casts_inserted: int
    opset: int
    notes: tuple[str, ...] = ()


def _default_opset(model: onnx.ModelProto) -> int:
    for entry in model.opset_import:
        if entry.domain in ("", "ai.onnx"):
            return int(entry.version)
    raise ValueError("ONNX model has no default-domain opset import")


def _attention_logit_matmuls(graph: onnx.GraphProto) -> set[str]:
    """Output names of MatMuls whose result reaches a Softmax through scale/bias ops only."""
    producer = {out: node for node in graph.node for out in node.output}
    found: set[str] = set()
    for node in graph.node:
        if node.op_type != "Softmax":
            continue
        stack = [node.input[0]]
        seen: set[str] = set()
        while stack:
            name = stack.pop()
            if name in seen or name not in producer:
                continue
            seen.add(name)
            src = producer[name]
            if src.op_type == "MatMul":
                found.add(src.output[0])
            elif src.op_type in _LOGIT_PASSTHROUGH_OPS:
                stack.extend(i for i in src.input if i)
    return found


def _float_inputs(node: onnx.NodeProto) -> list[int]:
    """Indices of inputs that carry float data for a lowered op (all of them, for these ops)."""
    return [i for i, name in enumerate(node.input) if name]


def to_mixed_precision(
    model: onnx.ModelProto, dtype: str = "fp16"
) -> tuple[onnx.ModelProto, MixedPrecisionReport]:
    """Return a copy of the FP32 `model` whose matrix ops run in `dtype` ("fp16" or "bf16").

    For "bf16" the model is first converted to opset 22 when older, because ONNX Conv only
    accepts bfloat16 from opset 22; if that conversion fails, convolutions stay FP32 and the
    report says so.
    """
    if dtype not in REDUCED_TYPES:
        raise ValueError(
            f"mixed precision dtype must be one of {sorted(REDUCED_TYPES)}, got {dtype!r}"
        )
    out = onnx.ModelProto()
    out.CopyFrom(model)
    notes: list[str] = []
    lowered_types = set(LOWERED_OP_TYPES)
    if dtype == "bf16" and _default_opset(out) < BF16_CONV_MIN_OPSET:
        try:
            out = onnx.version_converter.convert_version(out, BF16_CONV_MIN_OPSET)
            notes.append(f"converted to opset {BF16_CONV_MIN_OPSET} for bfloat16 Conv")
        except Exception as err:  # the converter raises bare RuntimeErrors per op
            lowered_types -= {"Conv", "ConvTranspose"}
            notes.append(f"opset conversion failed ({err}); convolutions kept FP32")
    graph = out.graph
    low = REDUCED_TYPES[dtype]
    logits = _attention_logit_matmuls(graph)
    inits = {t.name: t for t in graph.initializer}
    consumers: dict[str, list[onnx.NodeProto]] = defaultdict(list)
    for node in graph.node:
        for name in node.input:
            consumers[name].append(node)

    def is_lowered(node: onnx.NodeProto) -> bool:
        return node.op_type in lowered_types and node.output[0] not in logits

    low_name: dict[str, str] = {}  # FP32 tensor name -> its reduced-precision twin
    new_nodes: list[onnx.NodeProto] = []
    casts = lowered = 0
    graph_outputs = {o.name for o in graph.output}

    def reduced_input(name: str) -> str:
        nonlocal casts
        if name in low_name:
            return low_name[name]
        twin = f"{name}__{dtype}"
        if name in inits:
            array = numpy_helper.to_array(inits[name]).astype(np.float32)
            tensor = _make_reduced_initializer(array, twin, low)
            graph.initializer.append(tensor)
        else:
            new_nodes.append(helper.make_node("Cast", [name], [twin], to=low, name=f"{twin}_cast"))
            casts += 1
        low_name[name] = twin
        return twin

    for node in graph.node:
        if not is_lowered(node):
            new_nodes.append(node)
            continue
        lowered += 1
        for i in _float_inputs(node):
            node.input[i] = reduced_input(node.input[i])
        fp32_out = node.output[0]
        twin = f"{fp32_out}__{dtype}"
        node.output[0] = twin
        new_nodes.append(node)
        low_name[fp32_out] = twin
        # An FP32 copy is needed unless every reader is itself lowered.
        readers = consumers.get(fp32_out, [])
        if fp32_out in graph_outputs or any(not is_lowered(r) for r in readers):
            new_nodes.append(
                helper.make_node(
                    "Cast", [twin], [fp32_out], to=TensorProto.FLOAT, name=f"{fp32_out}_cast"
                )
            )
            casts += 1

    del graph.node[:]
    graph.node.extend(new_nodes)
    # Initializers now used only through their reduced twins are dropped.
    used = {name for node in graph.node for name in node.input}
    kept = [t for t in graph.initializer if t.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    # Stale FP32 value_info entries for renamed tensors would contradict the new types.
    del graph.value_info[:]
    report = MixedPrecisionReport(
        dtype=dtype,
        lowered=lowered,
        kept_fp32_logits=len(logits),
        casts_inserted=casts,
        opset=_default_opset(out),
        notes=tuple(notes),
    )
    return out, report


def _make_reduced_initializer(array: np.ndarray, name: str, low: int) -> onnx.TensorProto:
    if low == TensorProto.FLOAT16:
        return numpy_helper.from_array(array.astype(np.float16), name)
    import ml_dtypes  # shipped with onnx; numpy itself has no bfloat16

    return numpy_helper.from_array(array.astype(ml_dtypes.bfloat16), name)
