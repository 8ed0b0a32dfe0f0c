"""DINOv3-style Vision Transformer: the DAP backbone.

Patch 16 conv embedding, one class token + `n_storage_tokens` register tokens, no absolute
position table; 2-D RoPE (base 100, "separate" coordinate normalisation, half rotation) on the
patch tokens of q and k; LayerScale; qkv bias with the k third masked; exact-GELU MLP.
Module and parameter names equal the official `DinoVisionTransformer`'s, so the released
checkpoint maps by prefix alone (spec §1). Tokens are [cls, storage..., patches row-major].
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from dap_core.model.config import DAPConfig

# Official DINOv3 initialisation constants (used only for models we train from scratch).
_TOKEN_INIT_STD = 0.02
_LINEAR_INIT_STD = 0.02


class PatchEmbed(nn.Module):
    """Non-overlapping patch conv: [B, 3, H, W] -> tokens [B, h*w, C] (row-major) and (h, w)."""

    def __init__(self, patch_size: int, embed_dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x = self.proj(x)  # [B, C, h, w]; trailing pixels beyond a multiple of 16 are ignored
        h, w = x.shape[-2:]
        return x.flatten(2).transpose(1, 2), (h, w)  # [B, h*w, C]


class RopePositionEmbedding(nn.Module):
    """2-D rotary embedding of the patch grid; sin/cos are cached per grid size.

    `periods` is a persistent buffer because the released checkpoint may carry rounded values
    (spec §1.2): it must be loaded, not recomputed. The cache is cleared whenever a state dict
    is loaded into this module, so a fixed-size export sees constant sin/cos tables.
    """

    def __init__(self, head_dim: int, base: float, n_prefix_tokens: int) -> None:
        super().__init__()
        self.n_prefix_tokens = n_prefix_tokens
        quarter = head_dim // 4
        exponents = 2 * torch.arange(quarter, dtype=torch.float32) / (head_dim // 2)
        self.register_buffer("periods", base**exponents, persistent=True)  # [head_dim / 4]
        self._cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def reset_periods(self, base: float) -> None:
        """Recompute the formula periods (after building on the meta device, for instance)."""
        quarter = self.periods.shape[0]
        exponents = 2 * torch.arange(quarter, dtype=torch.float32) / (2 * quarter)
        self.periods = (base**exponents).to(self.periods.device)
        self._cache.clear()

    def _load_from_state_dict(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        self._cache.clear()
        super()._load_from_state_dict(*args, **kwargs)

    def _apply(self, fn, recurse=True):  # type: ignore[no-untyped-def]
        self._cache.clear()  # .to(), .cuda(), .half() move or recast the periods
        periods = self.periods
        result = super()._apply(fn, recurse)
        if self.periods.dtype != periods.dtype:
            # Angles stay fp32 in a bf16/fp16 model (as in DINOv3): keep the exact periods.
            self.periods = periods.to(self.periods.device)
        return result

    def forward(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(sin, cos) [n_prefix + h*w, head_dim]; prefix rows are (0, 1) = no rotation."""
        h, w = int(h), int(w)  # traced shapes are tensors; a fixed-size export wants constants
        key = (h, w, self.periods.device, self.periods.dtype)
        cached = self._cache.get(key)
        if cached is None:
            # Built outside inference mode so a table first made under torch.inference_mode()
            # can still be saved for backward in a later training step.
            with torch.inference_mode(False), torch.no_grad():
                cached = self._tables(h, w)
            self._cache[key] = cached
        return cached

    def _tables(self, h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        # Same op order as the official code so that results are bit-identical (spec §1.2).
        dd = {"device": self.periods.device, "dtype": torch.float32}
        coords_h = torch.arange(0.5, h, **dd) / h
        coords_w = torch.arange(0.5, w, **dd) / w
        coords = torch.stack(torch.meshgrid(coords_h, coords_w, indexing="ij"), dim=-1)
        coords = 2.0 * coords.flatten(0, 1) - 1.0  # [h*w, 2] (row, col) in (-1, 1)
        angles = 2 * math.pi * coords[:, :, None] / self.periods[None, None, :]
        angles = angles.flatten(1, 2)  # [h*w, head_dim / 2] = [row | col]
        angles = torch.cat([angles, angles], dim=-1)  # = official tile(2); cat exports cleanly
        sin, cos = torch.sin(angles), torch.cos(angles)
        n_prefix, dim = self.n_prefix_tokens, angles.shape[-1]
        sin = torch.cat([sin.new_zeros(n_prefix, dim), sin])
        cos = torch.cat([cos.new_ones(n_prefix, dim), cos])
        return sin, cos


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """NeoX-style pairing: dim j rotates with j + d/2 (not interleaved)."""
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([-x2, x1], dim=-1)


def _apply_rope(x: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor) -> torch.Tensor:
    """Rotate in the tables' dtype (fp32), as DINOv3 does, and return in x's dtype."""
    xr = x.to(sin.dtype)  # no copy for an fp32 model
    return (xr * cos + rotate_half(xr) * sin).to(x.dtype)


def _inference_rope_applies(qkv: torch.Tensor, sin: torch.Tensor) -> bool:
    """The fused RoPE writes into preallocated halves (out=), which autograd, tracing and
    export do not support: only plain FP32 inference takes it."""
    return (
        not torch.is_grad_enabled()
        and qkv.dtype == torch.float32
        and sin.dtype == torch.float32
        and not torch.jit.is_tracing()
        and not torch.compiler.is_compiling()
        and not torch.compiler.is_exporting()
    )


def _rope_qk_inference(
    qkv: torch.Tensor, sin: torch.Tensor, cos: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """RoPE of q and k straight from the qkv buffer [B, N, 3, heads, d], bit-identical to
    `_apply_rope` (and to the official `x * cos + rotate_half(x) * sin`), about 2x faster.

    rotate_half is [-x2 | x1], so the two halves of the result are x1*cos - x2*sin and
    x2*cos + x1*sin: negation is exact, so `a + (-b)*c` and `a - b*c` round alike, and every
    product and sum is still rounded once, in the same order. No `neg`, no `cat`: the halves
    are written into one contiguous [2, B, heads, N, d] tensor (q and k in one pass, reading
    qkv in its own token-major layout). Returns contiguous q, k [B, heads, N, d].
    """
    B, N, _, heads, d = qkv.shape
    half = d // 2
    out = torch.empty((2, B, heads, N, d), dtype=qkv.dtype, device=qkv.device)
    view = out.permute(1, 3, 0, 2, 4)  # [B, N, 2, heads, d], the layout of qkv[:, :, :2]
    qk = qkv[:, :, :2]
    x1, x2 = qk[..., :half], qk[..., half:]
    o1, o2 = view[..., :half], view[..., half:]
    c1, c2 = cos[:, None, None, :half], cos[:, None, None, half:]
    s1, s2 = sin[:, None, None, :half], sin[:, None, None, half:]
    tmp = torch.mul(x2, s1)
    torch.mul(x1, c1, out=o1)
    o1.sub_(tmp)
    torch.mul(x1, s2, out=tmp)
    torch.mul(x2, c2, out=o2)
    o2.add_(tmp)
    return out[0], out[1]


class LinearKMaskedBias(nn.Linear):
    """qkv projection whose bias is multiplied by `bias_mask` (1 for q and v, 0 for k)."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__(in_features, out_features, bias=True)
        third = out_features // 3
        mask = torch.ones(out_features)
        mask[third : 2 * third] = 0.0
        self.register_buffer("bias_mask", mask, persistent=True)  # [3 * C]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight, self.bias * self.bias_mask)


class Attention(nn.Module):
    def __init__(self, dim: int, num_heads: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.qkv = LinearKMaskedBias(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        B, N, C = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, C // self.num_heads)
        sin, cos = rope  # [N, d] fp32; prefix rows leave cls/storage tokens unrotated
        if _inference_rope_applies(qkv, sin):
            q, k = _rope_qk_inference(qkv, sin, cos)
            v = qkv[:, :, 2].transpose(1, 2)  # the same view as unbind(qkv, 2)[2]
        else:
            q, k, v = (t.transpose(1, 2) for t in torch.unbind(qkv, 2))  # [B, heads, N, d]
            q, k = _apply_rope(q, sin, cos), _apply_rope(k, sin, cos)
        x = F.scaled_dot_product_attention(q, k, v)
        return self.proj(x.transpose(1, 2).reshape(B, N, C))


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact (erf) GELU, as released
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    def __init__(self, dim: int, init: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Block(nn.Module):
    def __init__(self, config: DAPConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.norm1 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.attn = Attention(dim, config.num_heads)
        self.ls1 = LayerScale(dim, config.layerscale_init)
        self.norm2 = nn.LayerNorm(dim, eps=config.norm_eps)
        self.mlp = Mlp(dim, int(dim * config.ffn_ratio))
        self.ls2 = LayerScale(dim, config.layerscale_init)

    def forward(self, x: torch.Tensor, rope: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))


class DinoViT(nn.Module):
    """The backbone; `intermediate_layers(x)` gives normed patch tokens of the chosen blocks."""

    def __init__(self, config: DAPConfig) -> None:
        super().__init__()
        dim = config.embed_dim
        self.config = config
        self.n_prefix_tokens = 1 + config.n_storage_tokens
        self.patch_embed = PatchEmbed(config.patch_size, dim)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.storage_tokens = nn.Parameter(torch.zeros(1, config.n_storage_tokens, dim))
        # Unused at inference except as `cls + 0 * mask_token`; kept for checkpoint fidelity.
        self.mask_token = nn.Parameter(torch.zeros(1, dim))
        self.rope_embed = RopePositionEmbedding(
            config.head_dim, config.rope_base, self.n_prefix_tokens
        )
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.depth))
        self.norm = nn.LayerNorm(dim, eps=config.norm_eps)
        if not any(p.is_meta for p in self.parameters()):
            self.init_weights()

    @torch.no_grad()
    def init_weights(self) -> None:
        """DINOv3's initialisation for training from scratch (released weights overwrite it)."""
        nn.init.normal_(self.cls_token, std=_TOKEN_INIT_STD)
        nn.init.normal_(self.storage_tokens, std=_TOKEN_INIT_STD)
        nn.init.zeros_(self.mask_token)
        patch_area = self.patch_embed.proj.weight[0].numel()
        bound = math.sqrt(1.0 / patch_area)
        nn.init.uniform_(self.patch_embed.proj.weight, -bound, bound)
        nn.init.uniform_(self.patch_embed.proj.bias, -bound, bound)
        for module in self.blocks.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=_LINEAR_INIT_STD)
                nn.init.zeros_(module.bias)

    def prepare_tokens(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        patches, grid = self.patch_embed(x)  # [B, h*w, C]
        B = patches.shape[0]
        cls = self.cls_token + 0 * self.mask_token  # official quirk; exact no-op for finite values
        prefix = [cls.expand(B, -1, -1), self.storage_tokens.expand(B, -1, -1)]
        return torch.cat([*prefix, patches], dim=1), grid  # [B, 1 + S + h*w, C]

    def block_outputs(
        self, x: torch.Tensor, layer_indices: tuple[int, ...]
    ) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Raw outputs [B, 1 + S + h*w, C] (all tokens, before the final norm) of the given
        0-based blocks, and the patch grid (h, w). Blocks after the last one asked are skipped."""
        tokens, (h, w) = self.prepare_tokens(x)
        rope = self.rope_embed(h, w)
        outputs = []
        for i, block in enumerate(self.blocks[: max(layer_indices) + 1]):
            tokens = block(tokens, rope)
            if i in layer_indices:
                outputs.append(tokens)
        return outputs, (h, w)

    def intermediate_layers(
        self, x: torch.Tensor, layer_indices: tuple[int, ...] | None = None
    ) -> tuple[list[torch.Tensor], tuple[int, int]]:
        """Patch tokens [B, h*w, C] after the final LayerNorm (applied over all tokens, then the
        class and storage tokens dropped) for each chosen block, and the grid (h, w)."""
        indices = self.config.layer_indices if layer_indices is None else tuple(layer_indices)
        raw, grid = self.block_outputs(x, indices)
        return [self.norm(t)[:, self.n_prefix_tokens :] for t in raw], grid
