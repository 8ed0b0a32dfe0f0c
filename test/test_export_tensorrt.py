"""TensorRT path without TensorRT: clear errors, precision plans, cache keys, build call sequence.

TensorRT cannot be installed where these tests run. The build is exercised against a fake
`tensorrt` module at the module boundary that records every call, with the two API
generations modelled on the documented differences (TensorRT 11 has no BuilderFlag.FP16/BF16
or OBEY_PRECISION_CONSTRAINTS, and strongly typed networks are always on).
"""

from __future__ import annotations

import builtins
import enum
import json
import sys
import types
from pathlib import Path

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper, numpy_helper

from dap_core.export.parity import (
    TOLERANCES,
    EngineRejectedError,
    compare_outputs,
    load_or_make_reference,
    reference_input,
    verify_engine,
)
from dap_core.export.tensorrt import (
    EngineKey,
    GpuInfo,
    TensorRTUnavailableError,
    build_engine,
    import_tensorrt,
    pin_precision_sensitive_layers,
    plan_precision,
)

GPU = GpuInfo("NVIDIA H100 80GB HBM3", "9.0")

# ------------------------------------------------------------------ fake tensorrt


class LayerType(enum.Enum):
    NORMALIZATION = 1
    SOFTMAX = 2
    MATRIX_MULTIPLY = 3
    ELEMENTWISE = 4
    SCALE = 5
    IDENTITY = 6
    CONVOLUTION = 7


class FakeTensor:
    def __init__(self, name, shape=(1, 3, 64, 128)):
        self.name = name
        self.shape = shape


class FakeLayer:
    def __init__(self, name, type_, inputs, outputs):
        self.name, self.type = name, type_
        self._inputs = inputs
        self._outputs = [FakeTensor(o) for o in outputs]
        self.precision = None
        self.output_types = {}

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    def get_input(self, i):
        return self._inputs[i]

    def get_output(self, j):
        return self._outputs[j]

    def set_output_type(self, j, dtype):
        self.output_types[j] = dtype


def attention_network():
    """LayerNorm -> q/k MatMul (logits) -> scale -> Softmax -> MatMul(P, V) -> Conv."""
    x = FakeTensor("image")
    ln = FakeLayer("ln", LayerType.NORMALIZATION, [x], ["ln_out"])
    qk = FakeLayer("qk", LayerType.MATRIX_MULTIPLY, [ln.get_output(0)], ["logits"])
    scale = FakeLayer("scale", LayerType.ELEMENTWISE, [qk.get_output(0)], ["scaled"])
    soft = FakeLayer("softmax", LayerType.SOFTMAX, [scale.get_output(0)], ["probs"])
    pv = FakeLayer("pv", LayerType.MATRIX_MULTIPLY, [soft.get_output(0)], ["attn"])
    conv = FakeLayer("conv", LayerType.CONVOLUTION, [pv.get_output(0)], ["depth"])
    return [ln, qk, scale, soft, pv, conv]


class FakeNetwork:
    def __init__(self, flags, log):
        self.flags = flags
        self.layers = attention_network()
        self.inputs = [FakeTensor("image")]
        log.append(("create_network", flags))

    num_layers = property(lambda self: len(self.layers))
    num_inputs = property(lambda self: len(self.inputs))

    def get_layer(self, i):
        return self.layers[i]

    def get_input(self, i):
        return self.inputs[i]


def make_fake_tensorrt(version: str, *, fail_parse: bool = False) -> types.ModuleType:
    """A `tensorrt` stand-in recording calls in `trt.log`; 11.x lacks the weak-typing flags."""
    trt = types.ModuleType("tensorrt")
    trt.__version__ = version
    trt.log = []
    trt.float32 = "float32"
    trt.LayerType = LayerType
    flags = ["TF32", "VERSION_COMPATIBLE"]
    if version.startswith("10."):
        flags += ["FP16", "BF16", "OBEY_PRECISION_CONSTRAINTS"]
    trt.BuilderFlag = enum.Enum("BuilderFlag", flags)
    trt.NetworkDefinitionCreationFlag = types.SimpleNamespace(STRONGLY_TYPED=5)
    trt.MemoryPoolType = types.SimpleNamespace(WORKSPACE="WORKSPACE")

    class Logger:
        WARNING = 2

        def __init__(self, severity):
            self.severity = severity

    class Parser:
        def __init__(self, network, logger):
            self.network = network
            self.num_errors = 1 if fail_parse else 0

        def parse_from_file(self, path):
            trt.log.append(("parse_from_file", path))
            return not fail_parse

        def get_error(self, i):
            return types.SimpleNamespace(desc=lambda: "Unsupported operator If")

    class TimingCache:
        def serialize(self):
            return b"timing"

    class Config:
        def __init__(self):
            self.cache = None

        def set_memory_pool_limit(self, pool, size):
            trt.log.append(("set_memory_pool_limit", pool, size))

        def set_flag(self, flag):
            trt.log.append(("set_flag", flag.name))

        def create_timing_cache(self, data):
            trt.log.append(("create_timing_cache", bytes(data)))
            return TimingCache()

        def set_timing_cache(self, cache, ignore_mismatch):
            self.cache = cache

        def get_timing_cache(self):
            return self.cache

        def add_optimization_profile(self, profile):
            trt.log.append(("add_optimization_profile", profile.shapes))

    class Profile:
        def __init__(self):
            self.shapes = {}

        def set_shape(self, name, lo, opt, hi):
            self.shapes[name] = (lo, opt, hi)

    class Builder:
        def __init__(self, logger):
            trt.log.append(("Builder",))

        def create_network(self, flags):
            self.network = FakeNetwork(flags, trt.log)
            return self.network

        def create_builder_config(self):
            return Config()

        def create_optimization_profile(self):
            return Profile()

        def build_serialized_network(self, network, config):
            trt.log.append(("build_serialized_network",))
            trt.built_network = network
            return b"PLAN:" + version.encode()

    trt.Logger, trt.OnnxParser, trt.Builder = Logger, Parser, Builder
    return trt


# ------------------------------------------------------------------ helpers


def tiny_attention_onnx(path: Path) -> Path:
    """A small valid FP32 graph: LayerNorm -> Q/K MatMul -> Mul -> Softmax -> MatMul."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.standard_normal((8, 8)).astype(np.float32), "w")
    scale = numpy_helper.from_array(np.array(0.35, np.float32), "scale")
    gamma = numpy_helper.from_array(np.ones(8, np.float32), "gamma")
    beta = numpy_helper.from_array(np.zeros(8, np.float32), "beta")
    nodes = [
        helper.make_node("LayerNormalization", ["x", "gamma", "beta"], ["n"], axis=-1),
        helper.make_node("MatMul", ["n", "w"], ["q"]),
        helper.make_node("Transpose", ["q"], ["kt"], perm=[0, 2, 1]),
        helper.make_node("MatMul", ["q", "kt"], ["logits"]),
        helper.make_node("Mul", ["logits", "scale"], ["scaled"]),
        helper.make_node("Softmax", ["scaled"], ["p"], axis=-1),
        helper.make_node("MatMul", ["p", "q"], ["y"]),
    ]
    graph = helper.make_graph(
        nodes,
        "attention",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 8])],
        [w, scale, gamma, beta],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
    onnx.save(model, str(path))
    return path


@pytest.fixture
def onnx_file(tmp_path):
    return tiny_attention_onnx(tmp_path / "dap.onnx")


# ------------------------------------------------------------------ availability


def test_missing_tensorrt_raises_clear_error(monkeypatch):
    real_import = builtins.__import__

    def no_tensorrt(name, *args, **kwargs):
        if name == "tensorrt":
            raise ImportError("No module named 'tensorrt'")
        return real_import(name, *args, **kwargs)

    monkeypatch.delitem(sys.modules, "tensorrt", raising=False)
    monkeypatch.setattr(builtins, "__import__", no_tensorrt)
    with pytest.raises(TensorRTUnavailableError, match=r"TensorRT is not installed.*onnxruntime"):
        import_tensorrt()


def test_tensorrt_older_than_10_is_refused(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", make_fake_tensorrt("8.6.1"))
    with pytest.raises(TensorRTUnavailableError, match="too old"):
        import_tensorrt()


# ------------------------------------------------------------------ precision plans


def test_trt10_fp16_is_weakly_typed_with_fp32_islands_pinned():
    plan = plan_precision("fp16", "10.13.0.35")
    assert not plan.strongly_typed
    assert plan.builder_flags == ("FP16", "OBEY_PRECISION_CONSTRAINTS")
    assert plan.pin_fp32 and plan.onnx_dtype is None


def test_trt10_bf16_uses_the_bf16_flag():
    assert plan_precision("bf16", "10.9.0").builder_flags[0] == "BF16"


def test_trt11_reduced_precision_comes_from_the_onnx_types_not_flags():
    for precision in ("fp16", "bf16"):
        plan = plan_precision(precision, "11.4.0.106")
        assert plan.strongly_typed
        assert plan.builder_flags == ()
        assert plan.onnx_dtype == precision
        assert not plan.pin_fp32


def test_fp32_plans_set_no_precision_flags():
    assert plan_precision("fp32", "10.13.0").builder_flags == ()
    assert plan_precision("fp32", "11.4.0").onnx_dtype is None


def test_known_bad_versions_are_flagged_and_bad_arguments_refused():
    assert "miscompiles" in plan_precision("fp16", "10.3.0").describe()
    assert "miscompiles" not in plan_precision("fp16", "10.13.0").describe()
    with pytest.raises(ValueError, match="precision"):
        plan_precision("int8", "10.13.0")
    with pytest.raises(ValueError, match="not supported"):
        plan_precision("fp16", "8.6.1")


def test_pinning_covers_layernorm_softmax_and_the_logit_matmul_only():
    trt = make_fake_tensorrt("10.13.0")
    network = FakeNetwork(0, [])
    pinned = pin_precision_sensitive_layers(network, trt)
    by_name = {layer.name: layer for layer in network.layers}
    assert pinned == 3
    for name in ("ln", "softmax", "qk"):
        assert by_name[name].precision == "float32"
        assert by_name[name].output_types == {0: "float32"}
    for name in ("scale", "pv", "conv"):  # P·V and convolutions stay reduced precision
        assert by_name[name].precision is None


# ------------------------------------------------------------------ cache keys


def test_engine_key_changes_with_every_field():
    base = EngineKey("a" * 64, "10.13.0", GPU.name, GPU.compute_capability, "fp16")
    variants = [
        EngineKey("b" * 64, "10.13.0", GPU.name, "9.0", "fp16"),
        EngineKey("a" * 64, "11.4.0", GPU.name, "9.0", "fp16"),
        EngineKey("a" * 64, "10.13.0", "NVIDIA RTX 4090", "9.0", "fp16"),
        EngineKey("a" * 64, "10.13.0", GPU.name, "8.9", "fp16"),
        EngineKey("a" * 64, "10.13.0", GPU.name, "9.0", "bf16"),
        EngineKey("a" * 64, "10.13.0", GPU.name, "9.0", "fp16", (1, 4, 4)),
    ]
    digests = {base.digest()} | {v.digest() for v in variants}
    assert len(digests) == 1 + len(variants)
    same = EngineKey("a" * 64, "10.13.0", GPU.name, GPU.compute_capability, "fp16")
    assert same.digest() == base.digest()
    assert base.engine_name("dap").startswith("dap.fp16.")


# ------------------------------------------------------------------ build


def test_trt10_build_sets_flags_pins_layers_writes_engine_and_sidecar(onnx_file, tmp_path):
    trt = make_fake_tensorrt("10.13.0.35")
    cache = tmp_path / "engines"
    record = build_engine(onnx_file, "fp16", cache_dir=cache, gpu=GPU, trt=trt)
    assert record.built
    assert record.engine_path.read_bytes() == b"PLAN:10.13.0.35"
    assert ("create_network", 0) in trt.log
    assert ("parse_from_file", str(onnx_file)) in trt.log  # the FP32 ONNX itself
    assert [e[1] for e in trt.log if e[0] == "set_flag"] == ["FP16", "OBEY_PRECISION_CONSTRAINTS"]
    assert ("set_memory_pool_limit", "WORKSPACE", 4 << 30) in trt.log
    meta = json.loads(record.meta_path.read_text())
    assert meta["key"]["gpu_name"] == GPU.name
    assert meta["key"]["trt_version"] == "10.13.0.35"
    assert meta["key_digest"] == record.key.digest()
    assert meta["layers_pinned_fp32"] == 3
    assert (cache / "timing-10.13.0.35-NVIDIA_H100_80GB_HBM3.cache").read_bytes() == b"timing"


def test_cached_engine_is_reused_and_force_rebuilds(onnx_file, tmp_path):
    trt = make_fake_tensorrt("10.13.0.35")
    first = build_engine(onnx_file, "fp16", cache_dir=tmp_path, gpu=GPU, trt=trt)
    trt.log.clear()
    second = build_engine(onnx_file, "fp16", cache_dir=tmp_path, gpu=GPU, trt=trt)
    assert not second.built and second.engine_path == first.engine_path
    assert trt.log == []  # no builder touched
    third = build_engine(onnx_file, "fp16", cache_dir=tmp_path, gpu=GPU, trt=trt, force=True)
    assert third.built and ("build_serialized_network",) in trt.log
    other_gpu = GpuInfo("NVIDIA L4", "8.9")
    fourth = build_engine(onnx_file, "fp16", cache_dir=tmp_path, gpu=other_gpu, trt=trt)
    assert fourth.built and fourth.engine_path != first.engine_path


def test_changed_onnx_bytes_invalidate_the_cache(onnx_file, tmp_path):
    trt = make_fake_tensorrt("10.13.0.35")
    first = build_engine(onnx_file, "fp32", cache_dir=tmp_path, gpu=GPU, trt=trt)
    model = onnx.load(str(onnx_file))
    model.doc_string = "retrained"
    onnx.save(model, str(onnx_file))
    second = build_engine(onnx_file, "fp32", cache_dir=tmp_path, gpu=GPU, trt=trt)
    assert second.built and second.key.onnx_sha256 != first.key.onnx_sha256


def test_trt11_build_parses_a_mixed_precision_onnx_without_precision_flags(onnx_file, tmp_path):
    trt = make_fake_tensorrt("11.4.0.106")
    record = build_engine(onnx_file, "fp16", cache_dir=tmp_path, gpu=GPU, trt=trt)
    assert not [e for e in trt.log if e[0] == "set_flag"]
    assert ("create_network", 0) in trt.log  # STRONGLY_TYPED is implicit (and ignored) on 11
    parsed = Path(next(e[1] for e in trt.log if e[0] == "parse_from_file"))
    assert parsed != onnx_file
    mixed = onnx.load(str(parsed))
    types_by_name = {t.name: t.data_type for t in mixed.graph.initializer}
    assert TensorProto.FLOAT16 in types_by_name.values()
    ops = {n.op_type for n in mixed.graph.node}
    assert "Cast" in ops and "LayerNormalization" in ops
    assert record.meta["layers_pinned_fp32"] == 0


def test_trt10_strongly_typed_flag_would_be_passed_when_planned(onnx_file, tmp_path):
    from dap_core.export.tensorrt import PrecisionPlan, _network_flags

    plan = PrecisionPlan("fp16", "10.13.0", strongly_typed=True, onnx_dtype="fp16")
    assert _network_flags(make_fake_tensorrt("10.13.0"), plan) == 1 << 5
    assert _network_flags(make_fake_tensorrt("11.4.0"), plan) == 0


def test_parse_errors_are_reported_with_the_parser_messages(onnx_file, tmp_path):
    trt = make_fake_tensorrt("10.13.0", fail_parse=True)
    with pytest.raises(RuntimeError, match=r"(?s)could not parse.*Unsupported operator If"):
        build_engine(onnx_file, "fp32", cache_dir=tmp_path, gpu=GPU, trt=trt)


def test_missing_onnx_and_bad_batch_are_clear_errors(tmp_path):
    trt = make_fake_tensorrt("10.13.0")
    with pytest.raises(FileNotFoundError, match="ONNX file not found"):
        build_engine(tmp_path / "none.onnx", "fp16", cache_dir=tmp_path, gpu=GPU, trt=trt)
    onnx_path = tiny_attention_onnx(tmp_path / "m.onnx")
    with pytest.raises(ValueError, match="max_batch"):
        build_engine(onnx_path, "fp16", cache_dir=tmp_path, gpu=GPU, trt=trt, max_batch=0)


def test_dynamic_batch_inputs_get_an_optimization_profile(onnx_file, tmp_path, monkeypatch):
    trt = make_fake_tensorrt("10.13.0")
    original_init = FakeNetwork.__init__

    def dynamic_init(self, flags, log):
        original_init(self, flags, log)
        self.inputs = [FakeTensor("image", (-1, 3, 64, 128))]

    monkeypatch.setattr(FakeNetwork, "__init__", dynamic_init)
    build_engine(onnx_file, "fp32", cache_dir=tmp_path, gpu=GPU, trt=trt, max_batch=4)
    profiles = [e[1] for e in trt.log if e[0] == "add_optimization_profile"]
    assert profiles == [{"image": ((1, 3, 64, 128), (4, 3, 64, 128), (4, 3, 64, 128))}]


# ------------------------------------------------------------------ parity gate


def reference_outputs():
    rng = np.random.default_rng(1)
    return {
        "depth": rng.uniform(0.05, 0.9, (1, 1, 16, 32)).astype(np.float32),
        "within_10m": rng.uniform(0, 1, (1, 1, 16, 32)).astype(np.float32),
    }


def test_engine_within_tolerance_is_accepted():
    ref = reference_outputs()
    noisy = {k: v + np.float32(1e-3) for k, v in ref.items()}
    report = verify_engine(lambda x: noisy, {"image": None}, ref, "fp16")
    assert report.ok
    assert report.max_abs["depth"] == pytest.approx(1e-3, rel=1e-3)


def test_engine_beyond_tolerance_is_refused_with_numbers_in_the_message():
    ref = reference_outputs()
    wrong = {k: v.copy() for k, v in ref.items()}
    wrong["depth"][..., :4] += 0.3  # a miscompiled corner, as on TensorRT 10.3
    with pytest.raises(EngineRejectedError, match=r"refused: .*depth: mean .*max \|Δ\| 3.00e-01"):
        verify_engine(lambda x: wrong, {"image": None}, ref, "fp16", "dap.fp16.engine")


def test_nan_output_is_refused_even_in_one_pixel():
    ref = reference_outputs()
    bad = {k: v.copy() for k, v in ref.items()}
    bad["within_10m"][0, 0, 3, 3] = np.nan
    report = compare_outputs(ref, bad, "bf16")
    assert not report.ok and report.max_abs["within_10m"] == np.inf


def test_fp32_tolerance_is_tighter_than_fp16():
    assert TOLERANCES["fp32"][1] < TOLERANCES["fp16"][1] < TOLERANCES["bf16"][1]
    ref = reference_outputs()
    shifted = {k: v + np.float32(3e-3) for k, v in ref.items()}
    assert compare_outputs(ref, shifted, "fp16").ok
    assert not compare_outputs(ref, shifted, "fp32").ok


def test_reference_is_computed_once_and_stored(tmp_path, onnx_file):
    trt = make_fake_tensorrt("10.13.0")
    record = build_engine(onnx_file, "fp16", cache_dir=tmp_path, gpu=GPU, trt=trt)
    calls = []

    def maker(inputs):
        calls.append(inputs["image"].shape)
        return {"depth": inputs["image"][:, :1] * 0 + 0.5}

    first = load_or_make_reference(record, onnx_file, "image", (1, 3, 32, 64), maker)
    second = load_or_make_reference(record, onnx_file, "image", (1, 3, 32, 64), maker)
    assert calls == [(1, 3, 32, 64)]
    np.testing.assert_array_equal(first[0]["image"], second[0]["image"])
    np.testing.assert_array_equal(second[1]["depth"], np.full((1, 1, 32, 64), 0.5, np.float32))


def test_reference_input_is_deterministic_and_image_like():
    a = reference_input(32, 64, batch=2, seed=3)
    b = reference_input(32, 64, batch=2, seed=3)
    np.testing.assert_array_equal(a, b)
    assert a.shape == (2, 3, 32, 64) and a.dtype == np.float32
    # ImageNet-normalized [0, 1] colours lie in about [-2.12, 2.64]
    assert a.min() >= -2.2 and a.max() <= 2.7
    # Smooth: neighbouring pixels differ far less than independent noise would (~0.4 std)
    assert np.abs(np.diff(a, axis=-1)).mean() < 0.1
