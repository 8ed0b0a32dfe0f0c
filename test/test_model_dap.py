"""DAP model behaviour: config, heads on demand, adapters, RoPE, parameter groups, training."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F
from model_helpers import micro_config

from dap_core.model import DAP, DAPConfig, DAPOutput
from dap_core.model.adapter import CleanAdapter
from dap_core.model.config import PRESETS
from dap_core.model.flops import count_flops
from dap_core.model.vit import RopePositionEmbedding, rotate_half

MICRO = micro_config()
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def micro():
    torch.manual_seed(0)
    return DAP(MICRO).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(2, 3, 64, 128, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------ config
@pytest.mark.parametrize("name", sorted(PRESETS))
def test_presets_round_trip_through_json(name):
    config = DAPConfig.preset(name)
    assert DAPConfig.from_dict(json.loads(config.to_json())) == config
    assert config.head_dim == 64  # DINOv3 head width in every preset


def test_preset_overrides_and_unknown_names():
    assert DAPConfig.preset("vits", adapter="official").adapter == "official"
    with pytest.raises(ValueError, match="unknown DAP preset 'vitz'"):
        DAPConfig.preset("vitz")
    with pytest.raises(ValueError, match="unknown field"):
        DAPConfig.from_dict({"embed_dims": 3})


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"adapter": "fancy"}, "adapter must be one of"),
        ({"layer_indices": (0, 1, 2, 24)}, "out of range"),
        ({"layer_indices": (0, 2, 1, 3)}, "strictly increasing"),
        ({"input_size": (500, 1000)}, "multiples of 16"),
        ({"num_heads": 5}, "not divisible"),
        ({"mask_thresholds": (10, 10)}, "duplicates"),
        ({"mask_head_meaning": "maybe"}, "mask_head_meaning"),
    ],
)
def test_invalid_configs_are_refused(change, message):
    with pytest.raises(ValueError, match=message):
        DAPConfig.preset("vitl", **change)


def test_vitl_flops_match_the_published_count():
    # ../shared/notes/performance.md §2.1: backbone 1657.5, one head 443.1, total 2543.7 GFLOP.
    flops = count_flops(DAPConfig.preset("vitl"), 512, 1024, n_mask_heads=1)
    assert flops.backbone / 1e9 == pytest.approx(1657.5, abs=0.05)
    assert flops.per_head / 1e9 == pytest.approx(443.1, abs=0.05)
    assert flops.total / 1e9 == pytest.approx(2543.7, abs=0.05)


def test_flop_count_agrees_with_torch_flop_counter(micro):
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.randn(1, 3, 80, 160)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        micro(x, mask_thresholds=(10, 50))
    counted = counter.get_total_flops()
    # torch's counter skips the CPU attention kernel: add QK^T and PV by hand.
    tokens = 1 + MICRO.n_storage_tokens + 5 * 10
    attention = MICRO.depth * 4 * tokens**2 * MICRO.embed_dim
    assert count_flops(MICRO, 80, 160, n_mask_heads=2).total == counted + attention


# ----------------------------------------------------------------- forward
def test_forward_shapes_and_ranges(micro, x):
    with torch.no_grad():
        out = micro(x)
    assert isinstance(out, DAPOutput)
    assert out.depth.shape == (2, 1, 64, 128)
    assert sorted(out.masks) == [10, 20, 50, 100]
    for t in [out.depth, *out.masks.values()]:
        assert t.shape == (2, 1, 64, 128)
        assert ((t > 0) & (t < 1)).all()


def _count_head_calls(model):
    calls = {}
    hooks = [
        head.register_forward_hook(lambda *_, n=name: calls.__setitem__(n, calls.get(n, 0) + 1))
        for name, head in model.heads.items()
    ]
    return calls, hooks


def test_only_the_requested_mask_heads_run(micro, x):
    calls, hooks = _count_head_calls(micro)
    try:
        with torch.no_grad():
            out = micro(x, mask_thresholds=(50,))
            assert calls == {"depth": 1, "mask_50": 1}
            assert list(out.masks) == [50]
            calls.clear()
            assert micro(x, mask_thresholds=()).masks == {}
            assert calls == {"depth": 1}
    finally:
        for hook in hooks:
            hook.remove()


def test_unknown_threshold_is_refused(micro, x):
    with pytest.raises(ValueError, match=r"no range-mask head for \[30\] m"):
        micro(x, mask_thresholds=(30,))


def test_forward_tensors_is_a_tuple_in_request_order(micro, x):
    with torch.no_grad():
        depth, m100, m10 = micro.forward_tensors(x, (100, 10))
        out = micro(x)
    assert torch.equal(depth, out.depth)
    assert torch.equal(m100, out.masks[100]) and torch.equal(m10, out.masks[10])


def test_beyond_heads_are_reported_as_within(x):
    torch.manual_seed(3)
    within = DAP(MICRO.replace(mask_thresholds=(20,))).eval()
    beyond = DAP(MICRO.replace(mask_thresholds=(20,), mask_head_meaning="beyond")).eval()
    beyond.load_state_dict(within.state_dict())
    with torch.no_grad():
        a, b = within(x).masks[20], beyond(x).masks[20]
    assert torch.equal(b, 1.0 - a)


def test_forward_official_needs_official_mode(micro, x):
    with pytest.raises(ValueError, match="official mode"):
        micro.forward_official(x)


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        (torch.zeros(3, 64, 128), r"\[B, 3, H, W\]"),
        (torch.zeros(1, 4, 64, 128), r"\[B, 3, H, W\]"),
        (torch.zeros(1, 3, 64, 128, dtype=torch.uint8), "must be float"),
        (torch.zeros(1, 3, 8, 128), "smaller than one 16px patch"),
    ],
)
def test_bad_inputs_get_clear_errors(micro, bad, message):
    with pytest.raises(ValueError, match=message):
        micro(bad)


def test_clean_adapter_puts_token_r_times_w_plus_c_at_row_r_col_c():
    tokens = torch.randn(2, 12, 5)
    grid = CleanAdapter()(tokens, 3, 4)
    assert grid.shape == (2, 5, 3, 4)
    for r in range(3):
        for c in range(4):
            assert torch.equal(grid[:, :, r, c], tokens[:, r * 4 + c])


# -------------------------------------------------------------------- RoPE
def _rotate(v, sin, cos):
    return v * cos + rotate_half(v) * sin


def test_rope_scores_depend_only_on_the_relative_offset():
    h, w, head_dim = 6, 12, 32
    rope = RopePositionEmbedding(head_dim, 100.0, n_prefix_tokens=5)
    sin, cos = rope(h, w)
    assert sin.shape == (5 + h * w, head_dim)
    gen = torch.Generator().manual_seed(0)
    q, k = torch.randn(head_dim, generator=gen), torch.randn(head_dim, generator=gen)

    def score(p, s):  # q at patch p, k at patch s: (row, col)
        i, j = 5 + p[0] * w + p[1], 5 + s[0] * w + s[1]
        return (_rotate(q, sin[i], cos[i]) * _rotate(k, sin[j], cos[j])).sum()

    offset_a = score((1, 2), (3, 7))
    offset_b = score((2, 4), (4, 9))  # same offset (2, 5), elsewhere on the grid
    other = score((2, 4), (4, 8))
    assert offset_a == pytest.approx(offset_b.item(), abs=1e-5)
    assert abs(offset_a - other) > 1e-3


def test_rope_leaves_class_and_storage_tokens_unrotated():
    sin, cos = RopePositionEmbedding(64, 100.0, n_prefix_tokens=5)(4, 8)
    assert torch.equal(sin[:5], torch.zeros(5, 64)) and torch.equal(cos[:5], torch.ones(5, 64))
    # Patch 0 sits at normalised (row, col) = (-7/8, -15/16) for a 4x8 grid.
    assert sin[5, 0].item() == pytest.approx(math.sin(2 * math.pi * (-0.75)), abs=1e-6)


def test_rope_cache_follows_loaded_periods(micro):
    rope = micro.backbone.rope_embed
    sin_before = rope(4, 8)[0].clone()
    state = {"periods": rope.periods * 2}
    original = rope.periods.clone()
    try:
        rope.load_state_dict(state)
        assert not torch.equal(rope(4, 8)[0], sin_before)
    finally:
        rope.load_state_dict({"periods": original})
    assert torch.equal(rope(4, 8)[0], sin_before)


def test_table_made_in_inference_mode_works_for_training(x):
    model = DAP(MICRO.replace(mask_thresholds=(10,)))
    with torch.inference_mode():
        model(x)  # fills the RoPE cache with tables made outside inference mode
    out = model(x)
    (out.depth.mean() + out.masks[10].mean()).backward()
    assert model.backbone.blocks[0].attn.qkv.weight.grad is not None


# ------------------------------------------------- heads and param groups
def test_backbone_and_decoder_parameters_partition_the_model(micro):
    backbone = {id(p) for p in micro.backbone.parameters()}
    decoder = {id(p) for p in micro.decoder_parameters()}
    assert backbone.isdisjoint(decoder)
    assert backbone | decoder == {id(p) for p in micro.parameters()}


def test_a_mask_head_trains_on_its_own(x):
    torch.manual_seed(0)
    model = DAP(MICRO)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    params = model.freeze_all_but_mask_head(50)
    assert {id(p) for p in params} == {id(p) for p in model.mask_head(50).parameters()}
    optimizer = torch.optim.SGD(params, lr=0.5)
    target = (torch.rand(2, 1, 64, 128) > 0.5).float()
    out = model(x, mask_thresholds=(50,))
    torch.nn.functional.binary_cross_entropy(out.masks[50], target).backward()
    optimizer.step()
    changed = {k for k, v in model.state_dict().items() if not torch.equal(v, before[k])}
    assert changed and all(k.startswith("heads.mask_50.") for k in changed)
    assert all(p.grad is None for p in model.backbone.parameters())


def test_bfloat16_model_keeps_fp32_rope_and_stays_close(x):
    torch.manual_seed(4)
    model = DAP(MICRO.replace(mask_thresholds=(10,))).eval()
    with torch.no_grad():
        reference = model(x)
        periods = model.backbone.rope_embed.periods.clone()
        model.to(torch.bfloat16)
        assert model.backbone.rope_embed.periods.dtype == torch.float32
        assert torch.equal(model.backbone.rope_embed.periods, periods)
        out = model(x.to(torch.bfloat16))
    assert out.depth.dtype == torch.bfloat16
    assert (out.depth.float() - reference.depth).abs().max() < 0.02
    assert (out.masks[10].float() - reference.masks[10]).abs().max() < 0.02


def test_inference_rope_is_bit_identical_to_the_reference_rope():
    from dap_core.model.vit import (
        RopePositionEmbedding,
        _apply_rope,
        _inference_rope_applies,
        _rope_qk_inference,
    )

    rope = RopePositionEmbedding(head_dim=64, base=100.0, n_prefix_tokens=5)
    sin, cos = rope(7, 14)
    n = sin.shape[0]
    qkv = torch.randn(2, n, 3, 4, 64, generator=torch.Generator().manual_seed(3)) * 50
    q, k, _ = (t.transpose(1, 2) for t in torch.unbind(qkv, 2))
    fq, fk = _rope_qk_inference(qkv, sin, cos)
    assert torch.equal(fq, _apply_rope(q, sin, cos)) and torch.equal(fk, _apply_rope(k, sin, cos))
    assert fq.is_contiguous() and fk.is_contiguous()
    assert torch.equal(fq[:, :, :5], q[:, :, :5])  # class and storage tokens pass unrotated
    with torch.no_grad():
        assert _inference_rope_applies(qkv, sin)
        assert not _inference_rope_applies(qkv.bfloat16(), sin)
    assert not _inference_rope_applies(qkv, sin)  # training keeps the autograd-friendly path


# ------------------------------------------------------------- low-res output
def test_low_res_output_runs_the_output_convs_at_half_size_and_resizes_the_logits(x):
    """head_low_res_output: output_conv2's 3x3 and 1x1 run at 8h x 8w (the fusion's size)
    and only their logits are resized to 16h x 16w, by hand here from the head's own parts."""
    torch.manual_seed(0)
    model = DAP(micro_config(head_low_res_output=True, shared_head=True)).eval()
    head = model.heads["depth"]
    with torch.no_grad():
        grids = model.features(x)
        got = head(grids)
        h, w = grids[0].shape[-2:]
        s = head.scratch
        levels = [r(p(g)) for g, p, r in zip(grids, head.projects, head.resize_layers, strict=True)]
        rn = [getattr(s, f"layer{i}_rn")(level) for i, level in enumerate(levels, start=1)]
        path = s.refinenet4(rn[3], size=rn[2].shape[2:])
        path = s.refinenet3(path, rn[2], size=rn[1].shape[2:])
        path = s.refinenet2(path, rn[1], size=rn[0].shape[2:])
        path = s.refinenet1(path, rn[0])
        conv, relu, last = list(s.output_conv2)[:3]  # then the sigmoid
        logits = last(relu(conv(s.output_conv1(path))))
        assert logits.shape[-2:] == (8 * h, 8 * w)
        size = (16 * h, 16 * w)
        wanted = torch.sigmoid(F.interpolate(logits, size, mode="bilinear", align_corners=True))
    assert got.shape == (2, 5, 16 * h, 16 * w)
    assert torch.equal(got, wanted)  # the same ops in the same order: bit for bit
    full = DAP(micro_config(shared_head=True)).eval()
    full.load_state_dict(model.state_dict())  # the same tensors: only where they run differs
    with torch.no_grad():
        assert not torch.equal(full.heads["depth"](grids), got)


def test_low_res_output_counts_its_output_convs_at_a_quarter_of_the_pixels():
    low, full = micro_config(head_low_res_output=True), micro_config()
    h, w = (s // low.patch_size for s in low.input_size)
    f, hidden = low.head_features, low.head_hidden
    # conv3x3 (f/2 -> hidden) and conv1x1 (hidden -> 1), 2 FLOPs a multiply-add (biases not
    # counted), on 16h x 16w pixels at full size and 8h x 8w low: 3/4 of those convolutions.
    per_pixel = 2 * 9 * (f // 2) * hidden + 2 * hidden
    saved = per_pixel * (256 * h * w - 64 * h * w)
    assert count_flops(full).per_head - count_flops(low).per_head == saved
    assert DAPConfig.from_json(low.to_json()) == low
    assert DAPConfig.from_json(full.to_json()).head_low_res_output is False


def test_low_res_output_is_refused_with_the_official_adapter_and_must_be_a_bool():
    with pytest.raises(ValueError, match="not the released layout"):
        micro_config(head_low_res_output=True, adapter="official")
    with pytest.raises(ValueError, match="head_low_res_output must be true or false"):
        micro_config(head_low_res_output="yes")


# ------------------------------------------------------------- shared head
def test_shared_head_computes_depth_and_every_mask_in_one_head(x):
    torch.manual_seed(0)
    model = DAP(micro_config(shared_head=True)).eval()
    assert list(model.heads) == ["depth"]
    calls, hooks = _count_head_calls(model)
    try:
        with torch.no_grad():
            out = model(x, mask_thresholds=(50, 10))
            raw = model.heads["depth"](model.features(x))
    finally:
        for hook in hooks:
            hook.remove()
    assert calls == {"depth": 2}  # one call per forward, whatever the masks asked
    assert raw.shape == (2, 5, 64, 128)  # depth + the config's four masks, in config order
    assert torch.equal(out.depth, raw[:, :1])
    assert torch.equal(out.masks[10], raw[:, 1:2]) and torch.equal(out.masks[50], raw[:, 3:4])
    assert list(out.masks) == [50, 10]
    depth, m100 = model.forward_tensors(x, (100,))
    assert torch.equal(depth, raw[:, :1]) and torch.equal(m100, raw[:, 4:5])


def test_shared_head_halves_the_counted_head_work_and_round_trips_through_json():
    shared, separate = micro_config(shared_head=True), micro_config(mask_thresholds=(100,))
    assert count_flops(shared).n_heads == 1 and count_flops(separate).n_heads == 2
    assert DAPConfig.from_json(shared.to_json()) == shared
    assert DAPConfig.from_json(separate.to_json()).shared_head is False


def test_shared_head_has_no_separate_mask_heads_to_add_or_train():
    model = DAP(micro_config(shared_head=True))
    for call in (lambda: model.add_mask_head(30), lambda: model.freeze_all_but_mask_head(10)):
        with pytest.raises(ValueError, match="one shared head"):
            call()
    with pytest.raises(ValueError, match="not the released layout"):
        micro_config(shared_head=True, adapter="official")
