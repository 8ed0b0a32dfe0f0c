"""Our checkpoint format (safetensors + config.json), single mask-head files, preprocessing."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from model_helpers import micro_config
from safetensors.torch import save_file

from dap_core.model import DAP, DAPConfig, load_model, save_model
from dap_core.model.checkpoint import load_mask_head, save_mask_head
from dap_core.model.preprocess import preprocess

MICRO = micro_config(mask_thresholds=(10, 20))
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(5)
    return DAP(MICRO).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(1, 3, 64, 128, generator=torch.Generator().manual_seed(2))


@pytest.fixture
def saved(tmp_path, model):
    return save_model(model, tmp_path / "m")


def _same_outputs(a, b, x):
    with torch.no_grad():
        oa, ob = a(x), b(x)
    assert torch.equal(oa.depth, ob.depth)
    assert oa.masks.keys() == ob.masks.keys()
    assert all(torch.equal(oa.masks[t], ob.masks[t]) for t in oa.masks)


def test_save_then_load_directory_and_file(saved, model, x):
    assert sorted(p.name for p in saved.iterdir()) == ["config.json", "model.safetensors"]
    assert DAPConfig.from_json((saved / "config.json").read_text()) == MICRO
    for source in (saved, saved / "model.safetensors", str(saved)):
        loaded = load_model(source)
        assert loaded.config == MICRO and not loaded.training
        _same_outputs(model, loaded, x)


def test_config_in_metadata_is_used_when_config_json_is_absent(saved, model, x):
    (saved / "config.json").unlink()
    _same_outputs(model, load_model(saved / "model.safetensors"), x)


def test_truncated_safetensors_is_refused(saved):
    weights = saved / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:1000])
    with pytest.raises(ValueError, match="corrupt or truncated safetensors"):
        load_model(saved)


def test_config_that_does_not_fit_the_weights_is_refused(saved):
    config = json.loads((saved / "config.json").read_text())
    config["head_features"] = 24
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"shape mismatch for heads\.depth\.scratch\.layer1_rn"):
        load_model(saved)
    config["head_features"], config["depth"], config["layer_indices"] = 16, 5, [0, 1, 2, 4]
    (saved / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"missing \d+ key\(s\): backbone\.blocks\.4\."):
        load_model(saved)


def test_bad_config_json_is_refused(saved):
    (saved / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match="bad model config"):
        load_model(saved)


def test_nan_weights_are_refused(tmp_path, model):
    state = {k: v.clone() for k, v in model.state_dict().items()}
    state["heads.mask_20.scratch.output_conv1.bias"][3] = float("nan")
    save_file(state, tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(MICRO.to_json())
    with pytest.raises(ValueError, match=r"non-finite.*heads\.mask_20\.scratch\.output_conv1"):
        load_model(tmp_path)


def test_missing_and_unknown_paths(tmp_path):
    with pytest.raises(FileNotFoundError, match="model not found"):
        load_model(tmp_path / "nothing")
    (tmp_path / "weights.onnx").write_bytes(b"x")
    with pytest.raises(ValueError, match="unknown model file type"):
        load_model(tmp_path / "weights.onnx")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match=r"model\.safetensors"):
        load_model(tmp_path / "empty")


def test_a_mask_head_saves_and_loads_on_its_own(tmp_path, model, x):
    path = save_mask_head(model, 20, tmp_path / "mask_20.safetensors")
    torch.manual_seed(9)
    other = DAP(MICRO.replace(mask_thresholds=(10,))).eval()
    other.load_state_dict(model.state_dict(), strict=False)  # same backbone, no 20 m head
    load_mask_head(other, 20, path)
    assert other.config.mask_thresholds == (10, 20)
    with torch.no_grad():
        assert torch.equal(other(x, (20,)).masks[20], model(x, (20,)).masks[20])


def test_a_mask_head_file_must_fit(tmp_path, model):
    path = save_mask_head(model, 10, tmp_path / "mask_10.safetensors")
    with pytest.raises(ValueError, match="holds the 10 m mask head, not 50 m"):
        load_mask_head(model, 50, path)
    wider = DAP(MICRO.replace(head_features=32))
    with pytest.raises(ValueError, match="does not fit this model"):
        load_mask_head(wider, 10, path)
    beyond = DAP(MICRO.replace(mask_head_meaning="beyond"))
    with pytest.raises(ValueError, match="trained as a 'within' head"):
        load_mask_head(beyond, 10, path)
    with pytest.raises(ValueError, match="not a DAP mask-head file"):
        load_mask_head(model, 10, save_model(model, tmp_path / "full") / "model.safetensors")


def test_add_mask_head_refuses_duplicates(model):
    with pytest.raises(ValueError, match="already has a range-mask head for 10 m"):
        model.add_mask_head(10)


# ------------------------------------------------------------- preprocess
def test_default_preprocess_resizes_and_normalizes():
    rgb = np.full((2, 100, 200, 3), (124, 116, 104), np.uint8)  # ~ the ImageNet mean
    x = preprocess(rgb, MICRO)
    assert x.shape == (2, 3, 64, 128) and x.dtype == torch.float32
    expected = (np.array([124, 116, 104]) / 255 - np.array(MICRO.mean)) / np.array(MICRO.std)
    assert np.allclose(x[0, :, 10, 10].numpy(), expected, atol=1e-6)
    raw = preprocess(rgb[0], MICRO.replace(normalize=False))
    assert raw.shape == (1, 3, 64, 128)
    assert np.allclose(raw[0, :, 5, 5].numpy(), np.array([124, 116, 104]) / 255, atol=1e-6)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (np.zeros((64, 128, 3), np.float32), "uint8"),
        (np.zeros((64, 128), np.uint8), r"\[H, W, 3\]"),
        (np.zeros((64, 128, 4), np.uint8), r"\[H, W, 3\]"),
        ([[0, 0, 0]], "numpy"),
    ],
)
def test_preprocess_refuses_bad_images(bad, message):
    with pytest.raises(ValueError, match=message):
        preprocess(bad, MICRO)
    with pytest.raises(ValueError, match="unknown preprocess mode"):
        preprocess(np.zeros((64, 128, 3), np.uint8), MICRO, mode="fast")
