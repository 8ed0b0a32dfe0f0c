"""Official checkpoint import: .pth with and without `module.`, and every refusal path."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from model_helpers import TINY_LAYERS, TINY_WEIGHTS, tiny_state

from dap_core.cli import main as dap_main
from dap_core.model import load_model
from dap_core.model.official import config_from_official, load_official, load_official_report

BLOCK0 = "core.pretrained.model.blocks.0."
ALIAS0 = "core.pretrained.blocks.0."

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def official_state(official_fixtures):
    return tiny_state(official_fixtures)


@pytest.fixture(scope="module")
def x64(official_fixtures):
    return torch.from_numpy(np.load(official_fixtures / "input.npy"))


@pytest.fixture(scope="module")
def reference(official_state, x64):
    model = load_official(dict(official_state), layer_indices=TINY_LAYERS)
    with torch.no_grad():
        return model.forward_official(x64)


def _outputs(model, x):
    with torch.no_grad():
        return model.forward_official(x)


def _assert_same(a, b):
    assert torch.equal(a["pred_depth"], b["pred_depth"])
    assert torch.equal(a["pred_mask"], b["pred_mask"])


@pytest.mark.parametrize("prefix", ["", "module."])
def test_pth_loads_with_and_without_module_prefix(tmp_path, official_state, x64, reference, prefix):
    path = tmp_path / "model.pth"
    torch.save({prefix + k: v for k, v in official_state.items()}, path)
    model, report = load_official_report(path, layer_indices=TINY_LAYERS)
    assert report.missing == [] and report.unexpected == []
    assert report.aliases_checked == 5 * 15  # 15 tensors in each of the 5 blocks
    assert report.buffers_from_formula == []
    _assert_same(_outputs(model, x64), reference)


def test_shared_alias_storage_as_saved_by_the_official_model(
    tmp_path, official_state, x64, reference
):
    # The real checkpoint stores each alias as the same storage as its original.
    state = dict(official_state)
    for key in list(state):
        if key.startswith("core.pretrained.blocks."):
            state[key] = state[key.replace("core.pretrained.", "core.pretrained.model.", 1)]
    path = tmp_path / "shared.pth"
    torch.save(state, path)
    _assert_same(_outputs(load_official(path, layer_indices=TINY_LAYERS), x64), reference)


def test_missing_buffers_come_from_the_formula(official_state, x64, reference):
    # Without `periods` the head count cannot be read from the shapes: give the config.
    config = config_from_official(official_state, TINY_LAYERS)
    state = {k: v for k, v in official_state.items() if not k.endswith(("periods", "bias_mask"))}
    model, report = load_official_report(state, config=config)
    assert len(report.buffers_from_formula) == 1 + 5  # periods + one bias_mask per block
    # The fixture model used the formula values, so outputs are unchanged.
    _assert_same(_outputs(model, x64), reference)


def test_checkpoint_periods_are_used_not_recomputed(official_state, x64, reference):
    state = dict(official_state)
    key = "core.pretrained.model.rope_embed.periods"
    rounded = state[key].to(torch.bfloat16).float()  # as the DINOv3 release may store them
    assert not torch.equal(rounded, state[key])
    state[key] = rounded
    model = load_official(state, layer_indices=TINY_LAYERS)
    assert torch.equal(model.backbone.rope_embed.periods, rounded)
    out = _outputs(model, x64)
    assert (out["pred_depth"] - reference["pred_depth"]).abs().max() > 1e-6


def test_checkpoint_bias_mask_is_used(official_state, x64, reference):
    state = dict(official_state)
    for i in range(5):
        state[f"core.pretrained.model.blocks.{i}.attn.qkv.bias_mask"] = torch.ones(288)
        state[f"core.pretrained.blocks.{i}.attn.qkv.bias_mask"] = torch.ones(288)
    out = _outputs(load_official(state, layer_indices=TINY_LAYERS), x64)
    # The fixture's k-bias is non-zero: unmasking it must change the outputs.
    assert (out["pred_depth"] - reference["pred_depth"]).abs().max() > 1e-4


@pytest.mark.parametrize("buffer", ["rope_embed.periods", "blocks.2.attn.qkv.bias_mask"])
def test_nan_buffer_is_refused_naming_the_key(official_state, buffer):
    state = dict(official_state)
    key = "core.pretrained.model." + buffer
    state[key] = torch.full_like(state[key], float("nan"))
    if "blocks" in key:  # drop the alias, which would disagree first
        del state[key.replace("model.blocks", "blocks")]
    with pytest.raises(ValueError, match=r"non-finite.*" + buffer.replace(".", r"\.")):
        load_official(state, layer_indices=TINY_LAYERS)


def test_shape_mismatch_is_refused_naming_the_key(official_state):
    state = dict(official_state)
    state["core.depth_head.scratch.refinenet2.out_conv.weight"] = torch.zeros(16, 16, 3, 3)
    with pytest.raises(ValueError, match=r"shape mismatch for heads\.depth\.scratch\.refinenet2"):
        load_official(state, layer_indices=TINY_LAYERS)


def test_missing_key_is_reported_by_name(official_state, x64):
    state = dict(official_state)
    del state["core.mask_head.scratch.output_conv1.bias"]
    with pytest.raises(ValueError, match=r"missing 1 key.*heads\.mask_100\.scratch\.output_conv1"):
        load_official(state, layer_indices=TINY_LAYERS)
    # The permissive mode mirrors the official loader and reports instead.
    model, report = load_official_report(state, layer_indices=TINY_LAYERS, strict=False)
    assert report.missing == ["heads.mask_100.scratch.output_conv1.bias"]
    assert torch.isfinite(_outputs(model, x64)["pred_mask"]).all()


def test_unexpected_key_is_reported_by_name(official_state):
    state = dict(official_state)
    state["core.extra_head.weight"] = torch.zeros(3)
    with pytest.raises(ValueError, match=r"unexpected key.*core\.extra_head\.weight"):
        load_official(state, layer_indices=TINY_LAYERS)
    _, report = load_official_report(state, layer_indices=TINY_LAYERS, strict=False)
    assert report.unexpected == ["core.extra_head.weight"]


def test_alias_that_differs_from_its_original_is_refused(official_state):
    state = dict(official_state)
    state[ALIAS0 + "ls1.gamma"] = state[BLOCK0 + "ls1.gamma"] + 1.0
    with pytest.raises(ValueError, match=r"alias core\.pretrained\.blocks\.0\.ls1\.gamma differs"):
        load_official(state, layer_indices=TINY_LAYERS)


def test_truncated_pth_is_refused(tmp_path, official_state):
    path = tmp_path / "model.pth"
    torch.save(dict(official_state), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        load_model(path)


def test_garbage_pth_is_refused(tmp_path):
    path = tmp_path / "model.pth"
    path.write_bytes(b"this is not a checkpoint" * 10)
    with pytest.raises(ValueError, match=str(path.name)):
        load_model(path)


class _Payload:
    """Unpickling this would create a marker file; weights_only loading must never run it."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (type(self.marker).touch, (self.marker,))


def test_arbitrary_pickle_is_never_executed(tmp_path):
    marker = tmp_path / "executed"
    path = tmp_path / "evil.pth"
    torch.save({"core.x": torch.zeros(1), "payload": _Payload(marker)}, path)
    with pytest.raises(ValueError, match="refused to load"):
        load_model(path)
    assert not marker.exists()


def test_non_tensor_entries_are_refused(tmp_path):
    path = tmp_path / "odd.pth"
    torch.save({"core.x": torch.zeros(1), "epoch": 3}, path)
    with pytest.raises(ValueError, match="not tensors: epoch"):
        load_model(path)


def test_unknown_depth_needs_layer_indices(tmp_path, official_state):
    path = tmp_path / "model.pth"
    torch.save(dict(official_state), path)
    with pytest.raises(ValueError, match="5 blocks; pass the 4 block indices"):
        load_model(path)


def test_convert_command_writes_our_format(tmp_path, official_state, x64, reference, capsys):
    path = tmp_path / "model.pth"
    torch.save({"module." + k: v for k, v in official_state.items()}, path)
    out = tmp_path / "converted"
    assert dap_main(["convert", "official", str(path), str(out), "--layers", "0,2,3,4"]) == 0
    assert "aliases checked: 75" in capsys.readouterr().out
    model = load_model(out)
    assert model.config.adapter == "official" and model.config.mask_head_meaning == "beyond"
    _assert_same(_outputs(model, x64), reference)
    # The .safetensors alone also loads (config.json beside it).
    _assert_same(_outputs(load_model(out / "model.safetensors"), x64), reference)


def test_convert_command_reports_bad_input(tmp_path, capsys):
    missing = tmp_path / "nope.pth"
    assert dap_main(["convert", "official", str(missing), str(tmp_path / "o")]) == 1
    assert "checkpoint not found" in capsys.readouterr().err
    assert dap_main(["convert", "official", str(missing), str(tmp_path), "--layers", "1,2"]) == 1
    assert "--layers needs 4" in capsys.readouterr().err


def test_official_safetensors_loads_directly(official_fixtures, x64, reference):
    # Official key names in a .safetensors (no config.json beside it) take the official path.
    with pytest.raises(ValueError, match="pass the 4 block indices"):
        load_model(official_fixtures / TINY_WEIGHTS)
    model = load_official(official_fixtures / TINY_WEIGHTS, layer_indices=TINY_LAYERS)
    _assert_same(_outputs(model, x64), reference)
