"""Analytic FLOP count of a DAP forward (FLOPs = 2 x multiply-accumulates).

Counts every convolution, linear layer and attention matmul; leaves out normalisations,
activations, RoPE, resampling and adds (about 0.1 % of the total). Matches the table in
../shared/notes/performance.md §2 (ViT-L at 512x1024: backbone 1657.5, one head 443.1 GFLOP).
"""

from __future__ import annotations

from dataclasses import dataclass

from dap_core.model.config import DAPConfig


@dataclass(frozen=True)
class FlopCount:
    backbone: float  # FLOPs
    per_head: float  # one DPT head (depth and every mask head cost the same)
    n_heads: int  # depth head + mask heads that run

    @property
    def total(self) -> float:
        return self.backbone + self.n_heads * self.per_head


def _conv(c_in: int, c_out: int, kernel: int, pixels: int) -> float:
    return 2.0 * c_in * c_out * kernel * kernel * pixels


def backbone_flops(config: DAPConfig, height: int, width: int) -> float:
    p, d = config.patch_size, config.embed_dim
    hw = (height // p) * (width // p)
    n = 1 + config.n_storage_tokens + hw
    hidden = int(d * config.ffn_ratio)
    per_block = 2.0 * n * d * (3 * d + d + 2 * hidden) + 4.0 * n * n * d
    blocks_run = max(config.layer_indices) + 1
    return _conv(3, d, p, hw) + blocks_run * per_block


def head_flops(config: DAPConfig, height: int, width: int) -> float:
    p, d, f = config.patch_size, config.embed_dim, config.head_features
    h, w = height // p, width // p
    c0, c1, c2, c3 = config.head_out_channels
    hw, half = h * w, ((h + 1) // 2) * ((w + 1) // 2)
    res = (16 * hw, 4 * hw, hw, half)  # pixels of pyramid levels 1..4
    flops = sum(_conv(d, c, 1, hw) for c in config.head_out_channels)
    flops += _conv(c0, c0, 4, hw) + _conv(c1, c1, 2, hw) + _conv(c3, c3, 3, half)
    flops += sum(_conv(c, f, 3, r) for c, r in zip((c0, c1, c2, c3), res, strict=True))
    rcu = 2 * _conv(f, f, 3, 1)  # one residual unit per pixel
    flops += rcu * res[3] + _conv(f, f, 1, res[2])  # refinenet4 (one unit)
    flops += 2 * rcu * res[2] + _conv(f, f, 1, res[1])  # refinenet3
    flops += 2 * rcu * res[1] + _conv(f, f, 1, res[0])  # refinenet2
    flops += 2 * rcu * res[0] + _conv(f, f, 1, 4 * res[0])  # refinenet1 (x2 upsample)
    flops += _conv(f, f // 2, 3, 4 * res[0])  # output_conv1
    out_pixels = 4 * res[0] if config.head_low_res_output else hw * p * p
    flops += _conv(f // 2, config.head_hidden, 3, out_pixels) + _conv(
        config.head_hidden, 1, 1, out_pixels
    )
    return flops


def count_flops(
    config: DAPConfig,
    height: int | None = None,
    width: int | None = None,
    n_mask_heads: int | None = None,
) -> FlopCount:
    """FLOPs of one forward at (height, width) (default: config.input_size) with the depth head
    and `n_mask_heads` mask heads (default: all of the config's); a shared head is one head
    (its extra output channels are a 1x1 convolution's worth, not counted)."""
    height, width = config.input_size if height is None else (height, width)
    n_masks = len(config.mask_thresholds) if n_mask_heads is None else n_mask_heads
    return FlopCount(
        backbone=backbone_flops(config, height, width),
        per_head=head_flops(config, height, width),
        n_heads=1 if config.shared_head else 1 + n_masks,
    )
