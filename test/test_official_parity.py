"""Our DAP reproduces the official code's outputs on the tiny official-architecture fixture.

The fixtures were made by the unmodified official DAP code (torch 2.13 CPU, 2 threads); see
../shared/fixtures/official_dap/README.md. Tolerance: 1e-6 max abs error (spec §11).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dap_core.model import DAPConfig
from dap_core.model.official import load_official, official_postprocess
from dap_core.model.preprocess import preprocess

ATOL = 1e-6
TINY_LAYERS = (0, 2, 3, 4)  # the fixture's intermediate_layer_idx
CASES = ["", "_96x192", "_80x160", "_b2_48x96", "_70x141"]
INPUT_SEEDS = {"": (101, 1, 64, 128), "_b2_48x96": (104, 2, 48, 96)}


@pytest.fixture(scope="module")
def two_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)  # the thread count the fixtures were made with
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def tiny(official_fixtures, two_threads):
    return load_official(official_fixtures / "tiny_weights.safetensors", layer_indices=TINY_LAYERS)


def _load(fixtures, name):
    return torch.from_numpy(np.load(fixtures / name))


@pytest.mark.parametrize("case", CASES)
def test_official_outputs_match_fixture(tiny, official_fixtures, case):
    x = _load(official_fixtures, f"input{case}.npy")
    with torch.no_grad():
        out = tiny.forward_official(x)
    for key, name in (("pred_depth", "expected_pred_depth"), ("pred_mask", "expected_pred_mask")):
        expected = _load(official_fixtures, f"{name}{case}.npy")
        assert out[key].shape == expected.shape
        err = (out[key] - expected).abs().max().item()
        assert err <= ATOL, f"{key}{case}: max abs error {err}"


def test_output_size_is_floored_to_multiples_of_16(tiny, official_fixtures):
    x = _load(official_fixtures, "input_70x141.npy")
    with torch.no_grad():
        out = tiny(x)
        resized = tiny(x, resize_to_input=True)
    assert out.depth.shape == (1, 1, 64, 128)
    assert resized.depth.shape == (1, 1, 70, 141)
    assert resized.masks[100].shape == (1, 1, 70, 141)
    # align_corners=True keeps the four corner pixels.
    for r, c in ((0, 0), (-1, -1), (0, -1), (-1, 0)):
        assert resized.depth[0, 0, r, c] == pytest.approx(out.depth[0, 0, r, c].item(), abs=1e-7)


def test_stage_intermediates_match(tiny, official_fixtures):
    stages = np.load(official_fixtures / "intermediates_64x128.npz")
    x = _load(official_fixtures, "input.npy")
    vit = tiny.backbone
    with torch.no_grad():
        raw, (h, w) = vit.block_outputs(x, TINY_LAYERS)
        assert (h, w) == (4, 8)
        for j, tokens in enumerate(raw):
            normed = vit.norm(tokens)
            got = {
                "backbone_prenorm_all_tokens": tokens,
                "backbone_patch_tokens": normed[:, vit.n_prefix_tokens :],
                "backbone_cls_token": normed[:, 0],
                "adapter_grid": tiny.adapter(normed[:, vit.n_prefix_tokens :], h, w),
            }
            for name, tensor in got.items():
                expected = torch.from_numpy(stages[f"{name}_{j}"])
                assert tensor.shape == expected.shape, name
                assert (tensor - expected).abs().max().item() <= ATOL, f"{name}_{j}"


def test_our_outputs_are_depth_and_within_100m_mask(tiny, official_fixtures):
    x = _load(official_fixtures, "input.npy")
    with torch.no_grad():
        raw = tiny.forward_official(x)
        out = tiny(x)
    assert torch.equal(out.depth, raw["pred_depth"])
    assert list(out.masks) == [100]
    # The official head means "beyond 100 m"; ours means "within".
    assert torch.equal(out.masks[100], 1.0 - raw["pred_mask"])


def test_official_postprocess_matches_infer_script(tiny, official_fixtures):
    x = _load(official_fixtures, "input.npy")
    with torch.no_grad():
        raw = tiny.forward_official(x)
    depth = official_postprocess(raw["pred_depth"], raw["pred_mask"])
    expected = _load(official_fixtures, "expected_infer_depth.npy")
    assert (depth - expected).abs().max().item() <= ATOL
    assert (depth == 1.0).float().mean().item() == pytest.approx(0.81005859375)


@pytest.mark.parametrize("case", list(INPUT_SEEDS))
def test_preprocess_reproduces_fixture_inputs(official_fixtures, case):
    seed, batch, height, width = INPUT_SEEDS[case]
    rgb = np.random.Generator(np.random.PCG64(seed)).integers(
        0, 256, (batch, height, width, 3), np.uint8
    )
    config = DAPConfig.preset("tiny", input_size=(height, width))
    x = preprocess(rgb, config)
    assert torch.equal(x, _load(official_fixtures, f"input{case}.npy"))


def test_official_infer_preprocess_is_raw_scale_at_native_size():
    rgb = np.zeros((70, 141, 3), np.uint8)
    rgb[0, 0] = (255, 51, 0)
    x = preprocess(rgb, DAPConfig.preset("tiny"), mode="official_infer")
    assert x.shape == (1, 3, 70, 141) and x.dtype == torch.float32
    assert x[0, :, 0, 0].tolist() == [1.0, pytest.approx(0.2), 0.0]
    assert x[0, :, 1, 1].tolist() == [0.0, 0.0, 0.0]
