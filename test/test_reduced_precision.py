"""Reduced precision on the CPU is gated: BF16 needs native support, BF16 and INT8 must agree
with FP32 on a fixed set (range AbsRel <= 0.01, mask IoU >= 0.99) or are refused with numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dap_export_helpers import FIXTURE_SIZE, fixture_onnx_path, load_fixture_model

from dap_core import reduced_precision as rp
from dap_core.export.onnx import read_onnx_info
from dap_core.model_source import ModelSource
from dap_core.runtime import Predictor

ZEN3_FLAGS = "flags\t\t: fpu sse2 avx avx2 fma bmi2\n"  # this project's CI machine: AVX2 only
SAPPHIRE_FLAGS = "flags\t\t: avx2 avx512f avx512_bf16 amx_bf16 amx_tile\n"


@pytest.fixture(scope="module")
def model(official_fixtures):
    return load_fixture_model(official_fixtures)


def test_bf16_gate_refuses_without_native_support_and_says_why():
    ok, reason = rp.bf16_support(rp.cpu_flags(ZEN3_FLAGS))
    assert not ok and "no native BF16" in reason and "avx2" in reason
    with pytest.raises(rp.PrecisionRefusedError, match="bf16 on CPU refused: CPU has no native"):
        rp.require_bf16(rp.cpu_flags(ZEN3_FLAGS))
    ok, reason = rp.bf16_support(rp.cpu_flags(SAPPHIRE_FLAGS))
    assert ok and reason == "CPU has native BF16 (avx512_bf16, amx_bf16)"
    assert not rp.bf16_support(set())[0]  # unreadable cpuinfo: refuse, never guess


def test_bf16_predictor_on_this_cpu_follows_the_gate(model, tmp_path):
    """Without native BF16: refused before any forward. With it (e.g. Sapphire Rapids, AMX):
    the fixed-set comparison runs, and the verdict is the one its own numbers give.

    Which verdict depends on the CPU's BF16 kernels and on the weights (the random-weight
    fixture's masks sit near 0.5, so rounding flips pixels): the test checks that the gate
    measured a real BF16 forward and obeyed its thresholds, not which way it went.
    """
    native, _ = rp.bf16_support()
    build = dict(backend="torch", precision="bf16", input_size=FIXTURE_SIZE, cache_dir=tmp_path)
    if not native:
        with pytest.raises(rp.PrecisionRefusedError, match="no native BF16"):
            Predictor(model, **build)
        assert not (tmp_path / "precision_gate").exists()  # refused before measuring
        return
    try:
        reason = Predictor(model, **build).backend_reason
        accepted = True
    except rp.PrecisionRefusedError as err:
        reason, accepted = str(err), False
    [verdict_file] = (tmp_path / "precision_gate").glob("bf16-*.json")
    agreement = rp.Agreement(**json.loads(verdict_file.read_text()))
    assert 0 < agreement.absrel < 1, agreement  # BF16 really ran (FP32 vs itself gives 0)
    assert agreement.images == len(rp.FIXED_SEEDS)
    assert accepted == agreement.ok
    assert agreement.describe() in reason


def test_verdicts_are_kept_per_cpu(tmp_path):
    """A verdict cached on an AVX2 machine must not be reused by an AMX one (shared home)."""
    zen3 = rp.cpu_identity("model name\t: AMD EPYC 7B13\n" + ZEN3_FLAGS)
    sapphire = rp.cpu_identity("model name\t: Intel(R) Xeon(R) Platinum 8481C\n" + SAPPHIRE_FLAGS)
    assert zen3 == "AMD EPYC 7B13 [avx avx2 fma]"
    assert sapphire.startswith("Intel(R) Xeon(R) Platinum 8481C [amx_bf16 amx_tile avx2 avx512")
    key = ["digest", [64, 128], [100]]
    paths = {rp._verdict_path(tmp_path, "int8", key, cpu) for cpu in (zen3, sapphire)}
    assert len(paths) == 2
    assert rp._verdict_path(tmp_path, "int8", key, zen3) == rp._verdict_path(
        tmp_path, "int8", key, zen3
    )


def test_agreement_numbers_and_thresholds():
    depth = np.full((1, 1, 4, 8), 0.5)
    mask = np.zeros((1, 1, 4, 8))
    mask[..., :4] = 0.9
    same = rp.compare(lambda x: [depth, mask], lambda x: [depth, mask], [None])
    assert same.absrel == 0.0 and same.mask_iou == 1.0 and same.ok
    off = rp.compare(lambda x: [depth, mask], lambda x: [depth * 1.02, mask], [None, None])
    assert off.absrel == pytest.approx(0.02) and not off.ok and off.images == 2
    shifted = mask.copy()
    shifted[..., 4] = 0.9  # one more column within: IoU 16/20
    worse = rp.compare(lambda x: [depth, mask], lambda x: [depth, shifted], [None])
    assert worse.mask_iou == pytest.approx(0.8) and not worse.ok
    assert "AbsRel vs FP32 0.0200 (max 0.01)" in off.describe()
    nan = rp.compare(lambda x: [depth, mask], lambda x: [depth * np.nan, mask], [None])
    assert not nan.ok


def test_gate_refuses_with_numbers_and_caches_the_verdict(tmp_path):
    calls = []

    def bad():
        calls.append(1)
        return rp.Agreement(absrel=0.05, mask_iou=0.97, images=4)

    for _ in range(2):
        with pytest.raises(rp.PrecisionRefusedError, match=r"int8 refused: range AbsRel .*0\.05"):
            rp.gate("int8", ["digest"], tmp_path, bad)
    assert len(calls) == 1  # the second verdict came from the cache
    good = rp.gate("int8", ["other"], tmp_path, lambda: rp.Agreement(0.001, 0.999, 4))
    assert good.ok


def test_int8_onnxruntime_quantises_linear_layers_and_is_gated(
    model, tmp_path, tmp_path_factory, official_fixtures, monkeypatch
):
    fp32 = fixture_onnx_path(tmp_path_factory, official_fixtures)
    monkeypatch.setattr(ModelSource, "onnx_file", lambda self, *a, **k: fp32)
    try:
        predictor = Predictor(
            model,
            backend="onnxruntime",
            precision="int8",
            input_size=FIXTURE_SIZE,
            cache_dir=tmp_path,
        )
    except rp.PrecisionRefusedError as err:  # refused is a valid outcome: with its numbers
        assert "AbsRel vs FP32" in str(err) and "mask IoU" in str(err)
        predictor = None
    int8 = tmp_path / "onnx" / f"{fp32.stem}.int8.onnx"
    assert int8.is_file() and read_onnx_info(int8).input_size == FIXTURE_SIZE
    import onnx

    ops = {n.op_type for n in onnx.load(str(int8)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops or "DynamicQuantizeMatMul" in ops
    assert "Conv" in ops  # convolutions stay FP32
    if predictor is not None:
        assert predictor.backend == "onnxruntime"
        assert "INT8" in predictor.backend_reason and "AbsRel vs FP32" in predictor.backend_reason
        out = predictor.predict(np.zeros((64, 128, 3), np.uint8))
        assert np.isfinite(out.range_m).all()


def test_int8_is_refused_by_torch(model):
    with pytest.raises(ValueError, match="int8: onnxruntime"):
        Predictor(model, backend="torch", precision="int8", input_size=FIXTURE_SIZE)
