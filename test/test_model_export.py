"""DAP exports to ONNX at a fixed size without control flow, and onnxruntime agrees with torch."""

from __future__ import annotations

import warnings
from collections import Counter

import pytest
import torch
from float32_bounds import assert_within_rounding, grid_tokens, output_reduction
from model_helpers import micro_config

from dap_core.model import DAP

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

MICRO = micro_config(adapter="official", mask_thresholds=(10, 100))


class _Export(torch.nn.Module):
    def __init__(self, model: DAP) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.model.forward_tensors(x, (100,))


def test_fixed_size_onnx_export_has_no_control_flow_and_matches(tmp_path):
    torch.manual_seed(0)
    model = DAP(MICRO).eval()
    model.precompute(64, 128)
    x = torch.randn(1, 3, 64, 128)
    path = tmp_path / "dap.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter's deprecation notices
        torch.onnx.export(_Export(model).eval(), (x,), str(path), dynamo=False, opset_version=18)
    ops = Counter(node.op_type for node in onnx.load(str(path)).graph.node)
    assert ops["If"] == 0 and ops["Loop"] == 0
    assert ops["Sin"] == 0 and ops["Cos"] == 0  # RoPE tables baked as constants
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    depth, mask = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected_depth, expected_mask = model.forward_tensors(x, (100,))
    # Other kernels (onnxruntime's MLAS), same float32 network: the rounding bound applies.
    reduction = output_reduction(MICRO, grid_tokens(MICRO, 64, 128))
    assert_within_rounding(depth, expected_depth.numpy(), reduction, "depth")
    assert_within_rounding(mask, expected_mask.numpy(), reduction, "100 m mask")


@pytest.mark.parametrize("low_res_output", [False, True], ids=["full_res", "low_res_output"])
def test_a_shared_head_model_exports_its_depth_and_mask_channels(tmp_path, low_res_output):
    from dap_core.export.onnx import export_onnx, read_onnx_info

    config = micro_config(
        shared_head=True, mask_thresholds=(10, 100), head_low_res_output=low_res_output
    )
    torch.manual_seed(0)
    model = DAP(config).eval()
    path = tmp_path / "shared.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export_onnx(model, path, input_size=(64, 128), mask_thresholds=(100, 10))
    assert read_onnx_info(path).mask_thresholds == (100, 10)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.randn(1, 3, 64, 128)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with torch.no_grad():
        expected = model.forward_tensors(x, (100, 10))
    reduction = output_reduction(config, grid_tokens(config, 64, 128))
    for name, mine, theirs in zip(("depth", "100 m", "10 m"), got, expected, strict=True):
        assert_within_rounding(mine, theirs.numpy(), reduction, name)
