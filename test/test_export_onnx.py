"""ONNX export: onnxruntime equals torch, RoPE baked (no If / Sin / Cos), both adapters, batch.

Exports cost ~5-15 s each on 2 cores, so each model is exported once per module.
"""

from __future__ import annotations

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from dap_export_helpers import fixture_onnx_path, load_fixture_model
from float32_bounds import assert_within_rounding, grid_tokens, output_reduction
from onnx import TensorProto, helper

from dap_core.export.mixed_precision import to_mixed_precision
from dap_core.export.onnx import (
    INPUT_NAME,
    check_exported_graph,
    export_onnx,
    mask_output_name,
    read_onnx_info,
)
from dap_core.export.parity import TOLERANCES, compare_outputs
from dap_core.model import DAP, DAPConfig

# onnxruntime (MLAS kernels, fused LayerNorm/GELU) and torch evaluate the same float32 network
# with other sum orders: outputs agree within the float32 rounding bound of float32_bounds.py.


def rounding_path(config: DAPConfig, height: int, width: int) -> int:
    return output_reduction(config, grid_tokens(config, height, width))


def run_onnx(path, x: np.ndarray) -> dict[str, np.ndarray]:
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    names = [o.name for o in session.get_outputs()]
    return dict(zip(names, session.run(names, {INPUT_NAME: x}), strict=True))


@pytest.fixture(scope="module")
def fixture_model(official_fixtures):
    return load_fixture_model(official_fixtures)


@pytest.fixture(scope="module")
def fixture_onnx(tmp_path_factory, official_fixtures):
    """The official-architecture fixture model, official adapter, exported at 64x128."""
    return fixture_onnx_path(tmp_path_factory, official_fixtures)


@pytest.fixture(scope="module")
def clean_dynamic(tmp_path_factory):
    """A clean-adapter model with two mask heads, exported with a dynamic batch axis."""
    torch.manual_seed(0)
    config = DAPConfig.preset(
        "tiny", depth=4, layer_indices=(0, 1, 2, 3), mask_thresholds=(10, 50), input_size=(32, 64)
    )
    model = DAP(config).eval()
    path = tmp_path_factory.mktemp("onnx") / "clean_dyn.onnx"
    export_onnx(model, path, dynamic_batch=True)
    return model, path


def test_fixture_export_matches_torch_and_official_outputs(
    fixture_model, fixture_onnx, official_fixtures
):
    x = np.load(official_fixtures / "input.npy")
    got = run_onnx(fixture_onnx, x)
    with torch.no_grad():
        ref = fixture_model.forward_official(torch.from_numpy(x))
    reduction = rounding_path(fixture_model.config, *x.shape[-2:])
    assert_within_rounding(got["depth"], ref["pred_depth"].numpy(), reduction, "depth vs torch")
    # Our masks report "within 100 m" = 1 - the official "beyond" head.
    within = got[mask_output_name(100)]
    assert_within_rounding(within, 1 - ref["pred_mask"].numpy(), reduction, "mask vs torch")
    expected = np.load(official_fixtures / "expected_pred_depth.npy")
    assert_within_rounding(got["depth"], expected, reduction, "depth vs the official fixture")


def test_graph_has_no_control_flow_and_rope_is_baked(fixture_onnx):
    ops = check_exported_graph(fixture_onnx)  # onnx.checker (full) + lint
    assert not {"If", "Loop", "Scan", "Sin", "Cos"} & set(ops)
    model = onnx.load(str(fixture_onnx))
    ops_scanned = {n.op_type for n in model.graph.node}
    assert "If" not in ops_scanned and "Sin" not in ops_scanned
    assert "LayerNormalization" in ops_scanned  # opset >= 17 keeps LayerNorm one op (TensorRT)
    opset = next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))
    assert opset >= 17


def test_metadata_describes_the_export(fixture_model, fixture_onnx):
    info = read_onnx_info(fixture_onnx)
    assert info.input_size == (64, 128)
    assert info.mask_thresholds == (100,)
    assert not info.dynamic_batch and info.batch == 1
    assert info.output_names == ("depth", "within_100m")
    config = info.config()
    assert config.adapter == "official"
    assert config.replace(input_size=fixture_model.config.input_size) == fixture_model.config


def test_clean_adapter_dynamic_batch_matches_torch_at_several_batches(clean_dynamic):
    model, path = clean_dynamic
    info = read_onnx_info(path)
    assert info.dynamic_batch and info.batch is None
    assert info.output_names == ("depth", "within_10m", "within_50m")
    rng = np.random.default_rng(5)
    for batch in (1, 3):
        x = rng.standard_normal((batch, 3, 32, 64)).astype(np.float32)
        got = run_onnx(path, x)
        with torch.no_grad():
            out = model(torch.from_numpy(x))
        reduction = rounding_path(model.config, 32, 64)
        assert_within_rounding(got["depth"], out.depth.numpy(), reduction, f"batch {batch}")
        for t in (10, 50):
            assert_within_rounding(
                got[mask_output_name(t)], out.masks[t].numpy(), reduction, f"{t} m"
            )


@pytest.mark.slow
def test_mid_size_model_matches_torch(tmp_path):
    """The shipped architecture ("tiny" preset: ViT-Ti x 8 blocks, five DPT heads)."""
    torch.manual_seed(1)
    model = DAP(DAPConfig.preset("tiny")).eval()
    path = tmp_path / "mid.onnx"
    export_onnx(model, path, input_size=(128, 256), mask_thresholds=(10, 100))
    x = np.random.default_rng(2).standard_normal((1, 3, 128, 256)).astype(np.float32)
    got = run_onnx(path, x)
    with torch.no_grad():
        out = model(torch.from_numpy(x), mask_thresholds=(10, 100))
    reduction = rounding_path(model.config, 128, 256)
    assert_within_rounding(got["depth"], out.depth.numpy(), reduction, "depth")
    assert_within_rounding(got["within_100m"], out.masks[100].numpy(), reduction, "100 m mask")
    assert read_onnx_info(path).mask_thresholds == (10, 100)


def test_export_refuses_bad_arguments(fixture_model, tmp_path):
    with pytest.raises(ValueError, match="multiples of 16"):
        export_onnx(fixture_model, tmp_path / "a.onnx", input_size=(60, 128))
    with pytest.raises(ValueError, match="no range-mask head"):
        export_onnx(fixture_model, tmp_path / "b.onnx", input_size=(64, 128), mask_thresholds=(10,))
    with pytest.raises(ValueError, match="opset"):
        export_onnx(fixture_model, tmp_path / "c.onnx", input_size=(64, 128), opset=16)


def _graph_with(op_type: str, tmp_path):
    node = (
        helper.make_node("Sin", ["x"], ["y"])
        if op_type == "Sin"
        else helper.make_node("Identity", ["x"], ["y"])
    )
    graph = helper.make_graph(
        [node],
        "g",
        [helper.make_tensor_value_info(INPUT_NAME, TensorProto.FLOAT, [1, 3, 16, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 3, 16, 32])],
    )
    graph.node[0].input[0] = INPUT_NAME
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    model.metadata_props.add(key="dap.config", value=DAPConfig().to_json())
    model.metadata_props.add(key="dap.mask_thresholds", value="[]")
    path = tmp_path / f"{op_type}.onnx"
    onnx.save(model, str(path))
    return path


def test_lint_catches_runtime_rope(tmp_path):
    with pytest.raises(ValueError, match="Sin x1"):
        check_exported_graph(_graph_with("Sin", tmp_path))
    assert check_exported_graph(_graph_with("Identity", tmp_path)) == {"Identity": 1}


def test_read_info_refuses_foreign_and_corrupt_files(tmp_path):
    foreign = tmp_path / "foreign.onnx"
    graph = helper.make_graph([], "g", [], [])
    onnx.save(helper.make_model(graph), str(foreign))
    with pytest.raises(ValueError, match="not a DAP export"):
        read_onnx_info(foreign)
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x00not protobuf\xff" * 10)
    with pytest.raises(ValueError, match="not a readable ONNX"):
        read_onnx_info(corrupt)


# ------------------------------------------------------------------ mixed precision


def test_fp16_mixed_precision_keeps_fp32_islands_and_stays_close(
    fixture_onnx, official_fixtures, tmp_path
):
    model = onnx.load(str(fixture_onnx))
    mixed, report = to_mixed_precision(model, "fp16")
    onnx.checker.check_model(mixed, full_check=True)
    # 5 blocks: one attention-logit MatMul each stays FP32.
    assert report.kept_fp32_logits == 5
    nodes = list(mixed.graph.node)
    producer = {o: n for n in nodes for o in n.output}
    init_types = {t.name: t.data_type for t in mixed.graph.initializer}

    def dtype_of(name):  # initializer type, or the Cast that made it
        if name in init_types:
            return init_types[name]
        src = producer.get(name)
        if src is not None and src.op_type == "Cast":
            return next(a.i for a in src.attribute if a.name == "to")
        return None

    for node in nodes:
        if node.op_type in ("LayerNormalization", "Softmax"):
            assert all(dtype_of(i) in (None, TensorProto.FLOAT) for i in node.input if i)
        if node.op_type == "Conv":
            assert dtype_of(node.input[1]) == TensorProto.FLOAT16
    assert [o.type.tensor_type.elem_type for o in mixed.graph.output] == [TensorProto.FLOAT] * 2
    x = np.load(official_fixtures / "input.npy")
    path = tmp_path / "fixture_fp16.onnx"
    onnx.save(mixed, str(path))
    report16 = compare_outputs(run_onnx(fixture_onnx, x), run_onnx(path, x), "fp16")
    assert report16.ok, report16.describe()
    # FP16 really ran: outputs are close but not bit-identical to FP32.
    assert max(report16.max_abs.values()) > 0
    mean_tol, _ = TOLERANCES["fp16"]
    assert max(report16.mean_abs.values()) < mean_tol / 4


def test_bf16_mixed_precision_is_valid_opset_22_and_stays_close(fixture_onnx, official_fixtures):
    from onnx.reference import ReferenceEvaluator  # onnxruntime has no bf16 CPU kernels

    mixed, report = to_mixed_precision(onnx.load(str(fixture_onnx)), "bf16")
    assert report.opset == 22
    onnx.checker.check_model(mixed, full_check=True)
    types = {t.data_type for t in mixed.graph.initializer}
    assert TensorProto.BFLOAT16 in types
    x = np.load(official_fixtures / "input.npy")
    names = [o.name for o in mixed.graph.output]
    got = dict(zip(names, ReferenceEvaluator(mixed).run(None, {INPUT_NAME: x}), strict=True))
    report_bf16 = compare_outputs(run_onnx(fixture_onnx, x), got, "bf16")
    assert report_bf16.ok, report_bf16.describe()
    assert max(report_bf16.mean_abs.values()) > 1e-5  # bf16 (8-bit mantissa) really ran


def test_mixed_precision_refuses_unknown_dtype(fixture_onnx):
    with pytest.raises(ValueError, match="dtype"):
        to_mixed_precision(onnx.load(str(fixture_onnx)), "int8")
