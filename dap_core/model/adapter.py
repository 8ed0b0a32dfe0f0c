"""Token-to-grid adapters between the ViT and the DPT heads.

"official" reproduces the released DINOv3Adapter bit for bit (spec §2): an extra LayerNorm,
the first *patch* token dropped, and the remaining h*w - 1 tokens resampled back to h*w. That
shifts features by up to one patch in raster order; the released weights were trained with it,
so it is kept as is. "clean" reshapes the patch tokens straight into the grid.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class CleanAdapter(nn.Module):
    """Patch tokens [B, h*w, C] -> grid [B, C, h, w], no parameters."""

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        B, _, C = tokens.shape
        return tokens.transpose(1, 2).reshape(B, C, h, w).contiguous()


class OfficialAdapter(nn.Module):
    """The released adapter: LayerNorm, drop patch 0, resample N = h*w - 1 tokens to h*w."""

    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, eps=eps)

    def forward(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        B, _, C = tokens.shape
        kept = self.norm(tokens)[:, 1:, :]  # [B, N, C]
        n = kept.shape[1]
        side = int(n**0.5)
        # The op sequence (transpose/reshape/interpolate, then contiguous) matters for
        # bit-exactness: interpolate picks its kernel from the memory layout (spec §2).
        if side * side == n:  # e.g. 80x160 and 464x928 inputs
            grid = kept.transpose(1, 2).reshape(B, C, side, side)
            grid = F.interpolate(grid, size=(h, w), mode="bilinear", align_corners=False)
        else:
            grid = kept.transpose(1, 2).reshape(B, C, n, 1)
            grid = F.interpolate(grid, size=(h * w, 1), mode="bilinear", align_corners=False)
            grid = grid.reshape(B, C, h, w)  # = squeeze(-1).reshape; no ONNX `If` on export
        return grid.contiguous()
