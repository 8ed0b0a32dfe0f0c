"""The full-size released key set (vitl_state_dict.json) maps onto our ViT-L DAP exactly.

Kept cheap: the model is built on the meta device, and the synthetic checkpoint holds one
random value per tensor broadcast to its shape (torch.save stores only the single element).
"""

from __future__ import annotations

import json

import pytest
import torch

from dap_core.model import DAP
from dap_core.model.official import (
    convert_official_state_dict,
    load_official_report,
    official_config,
)
from dap_core.model.vit import RopePositionEmbedding

PERIODS = "core.pretrained.model.rope_embed.periods"


@pytest.fixture(scope="module")
def key_list(official_fixtures):
    return json.loads((official_fixtures / "vitl_state_dict.json").read_text())


@pytest.fixture(scope="module")
def meta_model():
    with torch.device("meta"):
        return DAP(official_config())


def test_fixture_key_counts(key_list):
    keys = key_list["keys"]
    assert len(keys) == 858
    assert sum(k["alias_of"] is None for k in keys) == 498
    assert sum(k["alias_of"] is not None for k in keys) == 360


def test_meta_vitl_covers_every_official_key_and_shape(key_list, meta_model):
    official = {k["key"]: torch.empty(k["shape"], device="meta") for k in key_list["keys"]}
    ours = convert_official_state_dict(official)  # aliases dropped after the check
    expected = {k: tuple(v.shape) for k, v in meta_model.state_dict().items()}
    assert len(ours) == 498
    assert set(ours) == set(expected)
    mismatched = [k for k, v in ours.items() if tuple(v.shape) != expected[k]]
    assert mismatched == []
    n_elements = sum(v.numel() for v in ours.values())
    assert n_elements == key_list["numel_unique"] == 365_123_986


def test_formula_periods_match_the_official_build(key_list, meta_model):
    config = meta_model.config
    rope = RopePositionEmbedding(config.head_dim, config.rope_base, n_prefix_tokens=5)
    built = key_list["buffers"][PERIODS]["value_fp32_as_built"]
    assert rope.periods.tolist() == built


def _synthetic_checkpoint(key_list, prefix):
    """Every official key; aliases share their original's tensor, as in the real file."""
    gen = torch.Generator().manual_seed(7)
    state = {}
    for entry in key_list["keys"]:
        key, shape = entry["key"], entry["shape"]
        if entry["alias_of"] is not None:
            state[prefix + key] = state[prefix + entry["alias_of"]]
        elif key == PERIODS:
            bf16 = key_list["buffers"][PERIODS]["value_if_rounded_to_bf16"]
            state[prefix + key] = torch.tensor(bf16)
        elif key.endswith("bias_mask"):
            third = shape[0] // 3
            state[prefix + key] = torch.cat(
                [torch.ones(third), torch.zeros(third), torch.ones(third)]
            )
        else:
            state[prefix + key] = torch.randn(1, generator=gen).expand(shape)
    return state


@pytest.mark.parametrize("prefix", ["", "module."])
def test_synthetic_full_size_checkpoint_loads_with_zero_missing_keys(tmp_path, key_list, prefix):
    state = _synthetic_checkpoint(key_list, prefix)
    path = tmp_path / "model.pth"
    torch.save(state, path)
    assert path.stat().st_size < 2_000_000  # broadcast tensors store one element each

    model, report = load_official_report(path)
    assert report.missing == [] and report.unexpected == []
    assert report.aliases_checked == 360
    assert len(report.buffers_from_checkpoint) == 1 + 24
    assert model.config.layer_indices == (4, 11, 17, 23)
    assert (model.config.embed_dim, model.config.depth, model.config.num_heads) == (1024, 24, 16)

    loaded = model.state_dict()
    assert len(loaded) == 498
    for key in ("blocks.7.mlp.fc2.weight", "blocks.23.ls2.gamma", "patch_embed.proj.bias"):
        value = state[prefix + "core.pretrained.model." + key].reshape(-1)[0]
        assert loaded["backbone." + key].reshape(-1)[0] == value
    head_key = "scratch.refinenet1.resConfUnit2.conv1.weight"
    assert (
        loaded["heads.mask_100." + head_key].reshape(-1)[0]
        == (state[prefix + "core.mask_head." + head_key].reshape(-1)[0])
    )
    # Checkpoint periods (bf16-rounded here) are used, not recomputed.
    bf16 = key_list["buffers"][PERIODS]["value_if_rounded_to_bf16"]
    assert model.backbone.rope_embed.periods.tolist() == bf16
