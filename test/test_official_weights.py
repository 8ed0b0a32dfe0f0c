"""`dap weights official`: download (monkeypatched: no network in CI), verify, convert, cache."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch
from float32_bounds import assert_within_rounding, grid_tokens, output_reduction
from model_helpers import TINY_LAYERS, tiny_state

from dap_core.cli import main as dap_main
from dap_core.model import hub, load_model, official

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def tiny_pth(tmp_path, official_fixtures):
    path = tmp_path / "download" / "model.pth"
    path.parent.mkdir()
    torch.save(tiny_state(official_fixtures), path)
    return path


@pytest.fixture
def released_as(monkeypatch, tiny_pth):
    """Make the tiny checkpoint pass for the release: its size and hash become the expected."""
    data = tiny_pth.read_bytes()
    monkeypatch.setattr(official, "OFFICIAL_SIZE_BYTES", len(data))
    monkeypatch.setattr(official, "OFFICIAL_SHA256", hashlib.sha256(data).hexdigest())
    calls = []

    def fake_download(cache_dir, revision="main"):
        calls.append((cache_dir, revision))
        return tiny_pth

    monkeypatch.setattr(hub, "download_checkpoint", fake_download)
    return calls


def test_release_constants():
    assert official.OFFICIAL_HUB_REPO == "Insta360-Research/DAP-weights"
    assert official.OFFICIAL_FILENAME == "model.pth"
    assert official.OFFICIAL_SIZE_BYTES == 1_460_746_347
    assert len(official.OFFICIAL_SHA256) == 64
    int(official.OFFICIAL_SHA256, 16)


def test_fetch_converts_once_and_then_uses_the_cache(tmp_path, released_as, official_fixtures):
    out = hub.fetch_official_weights(tmp_path / "cache", layer_indices=TINY_LAYERS)
    assert out == tmp_path / "cache" / hub.OFFICIAL_DIR_NAME
    assert len(released_as) == 1
    model = load_model(out)
    x = torch.from_numpy(np.load(official_fixtures / "input.npy"))
    expected = np.load(official_fixtures / "expected_pred_depth.npy")
    with torch.no_grad():
        depth = model.forward_official(x)["pred_depth"].numpy()
    # The fixture came from other kernels (and two threads): float32 rounding bound, not 1e-6.
    reduction = output_reduction(model.config, grid_tokens(model.config, *x.shape[-2:]))
    assert_within_rounding(depth, expected, reduction, "converted model vs the official fixture")
    assert hub.fetch_official_weights(tmp_path / "cache") == out
    assert len(released_as) == 1  # cached: no second download
    hub.fetch_official_weights(tmp_path / "cache", force=True, layer_indices=TINY_LAYERS)
    assert len(released_as) == 2


def test_wrong_size_is_refused(tmp_path, released_as, monkeypatch):
    monkeypatch.setattr(official, "OFFICIAL_SIZE_BYTES", 1_460_746_347)
    with pytest.raises(ValueError, match="the released checkpoint has 1460746347"):
        hub.fetch_official_weights(tmp_path, layer_indices=TINY_LAYERS)
    assert not (tmp_path / hub.OFFICIAL_DIR_NAME).exists()


def test_wrong_hash_is_refused(tmp_path, released_as, monkeypatch):
    monkeypatch.setattr(official, "OFFICIAL_SHA256", "0" * 64)
    with pytest.raises(ValueError, match=r"SHA-256 .* differs from the release"):
        hub.fetch_official_weights(tmp_path, layer_indices=TINY_LAYERS)


def test_download_failure_gives_one_clear_line(tmp_path, monkeypatch, capsys):
    def offline(**kwargs):
        raise OSError("network is unreachable")

    import huggingface_hub

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", offline)
    assert dap_main(["weights", "official", "--cache-dir", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "could not download https://huggingface.co/Insta360-Research/DAP-weights" in err
    assert "network is unreachable" in err and "dap convert official" in err


def test_weights_command_prints_the_cached_directory(tmp_path, released_as, capsys):
    hub.fetch_official_weights(tmp_path, layer_indices=TINY_LAYERS)
    capsys.readouterr()
    assert dap_main(["weights", "official", "--cache-dir", str(tmp_path)]) == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / hub.OFFICIAL_DIR_NAME)


def test_default_cache_dir_honours_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("DAP_ROS_CACHE", str(tmp_path / "c"))
    assert hub.default_cache_dir() == tmp_path / "c"
    monkeypatch.delenv("DAP_ROS_CACHE")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "x"))
    assert hub.default_cache_dir() == tmp_path / "x" / "dap_ros"
