"""Stage 2's depth-quality discriminator: a PatchGAN on range maps (+ RGB).

Trained with synthetic ground truth as "real" and the stage-1 labeler's predictions on the
same images as "fake" (paper §3.2); its mean patch probability then scores how plausible a
pseudo label looks. The paper does not give its architecture; this is the pix2pix PatchGAN
(4x4 convolutions, stride 2, LeakyReLU 0.2, instance norm from the second layer), with the
input choices below.

Input encoding (where the paper is silent, chosen here): range is fed as
log(1 + r) / log(1 + D_max) with sky / beyond D_max at 1.0, so near-field structure is not
flattened by the 100 m scale; RGB, when used, is ImageNet-normalized. Pixels without
ground truth take the labeler's value in both inputs, so holes carry no real/fake signal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2


def encode_range(range_m: torch.Tensor, max_range_m: float) -> torch.Tensor:
    """[B, 1, H, W] metres (+inf sky) -> log-scaled values in [0, 1]."""
    r = torch.nan_to_num(range_m, nan=0.0, posinf=max_range_m).clamp(0.0, max_range_m)
    return torch.log1p(r) / math.log1p(max_range_m)


class PatchDiscriminator(nn.Module):
    """PatchGAN: [B, C, H, W] -> patch logits [B, 1, h, w] (positive = looks like real GT)."""

    def __init__(self, in_channels: int, channels: int = 32, layers: int = 3) -> None:
        super().__init__()
        blocks: list[nn.Module] = [
            nn.Conv2d(in_channels, channels, 4, stride=2, padding=1),
            nn.LeakyReLU(LEAKY_SLOPE),
        ]
        width = channels
        for i in range(1, layers):
            out = channels * min(2**i, 8)
            blocks += [
                nn.Conv2d(width, out, 4, stride=2, padding=1),
                nn.InstanceNorm2d(out, affine=True),
                nn.LeakyReLU(LEAKY_SLOPE),
            ]
            width = out
        blocks += [nn.Conv2d(width, 1, 3, stride=1, padding=1)]
        self.net = nn.Sequential(*blocks)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # Circular padding in longitude would be more faithful, but the patches are local and
        # the seam is a tiny fraction of them; zero padding keeps the module standard.
        return self.net(x)


class DepthCritic(nn.Module):
    """The discriminator with its input encoding: (range, rgb) -> patch logits."""

    def __init__(
        self, *, channels: int = 32, layers: int = 3, use_rgb: bool = True, max_range_m: float
    ) -> None:
        super().__init__()
        self.use_rgb = use_rgb
        self.max_range_m = float(max_range_m)
        self.net = PatchDiscriminator(1 + (3 if use_rgb else 0), channels, layers)

    def forward(self, range_m: torch.Tensor, rgb_normalized: torch.Tensor | None) -> torch.Tensor:
        x = encode_range(range_m, self.max_range_m)
        if self.use_rgb:
            if rgb_normalized is None:
                raise ValueError("this discriminator is conditioned on RGB; pass the image")
            x = torch.cat([x, rgb_normalized.to(x.dtype)], dim=1)
        return self.net(x)

    @torch.no_grad()
    def score(self, range_m: torch.Tensor, rgb_normalized: torch.Tensor | None) -> torch.Tensor:
        """[B] realism score in (0, 1): mean patch probability of "real ground truth"."""
        return torch.sigmoid(self(range_m, rgb_normalized).float()).mean(dim=(1, 2, 3))


def critic_loss(
    critic: nn.Module,
    real_m: torch.Tensor,
    fake_m: torch.Tensor,
    rgb_normalized: torch.Tensor | None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Binary cross-entropy: GT patches -> 1, labeler patches -> 0. Logs accuracy per side."""
    logits_real = critic(real_m, rgb_normalized).float()
    logits_fake = critic(fake_m, rgb_normalized).float()
    loss = F.binary_cross_entropy_with_logits(
        logits_real, torch.ones_like(logits_real)
    ) + F.binary_cross_entropy_with_logits(logits_fake, torch.zeros_like(logits_fake))
    with torch.no_grad():
        logs = {
            "d_loss": float(loss),
            "d_acc_real": float((logits_real > 0).float().mean()),
            "d_acc_fake": float((logits_fake < 0).float().mean()),
        }
    return loss, logs


def fill_invalid(gt_m: torch.Tensor, valid: torch.Tensor, pred_m: torch.Tensor) -> torch.Tensor:
    """GT with unknown pixels replaced by the prediction (sky +inf is known, kept)."""
    known = valid & ~torch.isnan(gt_m)
    return torch.where(known, gt_m, pred_m)
