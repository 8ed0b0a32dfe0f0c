"""Stage 2's depth-quality discriminator: a PatchGAN on range maps (+ RGB).

Trained with synthetic ground truth as "real" and the stage-1 labeler's predictions as "fake"
(paper §3.2); its mean patch probability then scores how plausible a pseudo label looks. An
RGB-conditioned critic gets mismatched fakes (the prediction of another labeled panorama with
this image, see `stages._stage2`), so it learns whether a range map fits its image rather than
how predictions look; that is what ranked the tiny run's pseudo labels (training/README.md).
The paper does not give its architecture; this is the pix2pix PatchGAN
(4x4 convolutions, stride 2, LeakyReLU 0.2, instance norm from the second layer), with the
input choices below.

Input encoding (where the paper is silent, chosen here): range is fed as
log(1 + r) / log(1 + D_max) (sky / beyond D_max at 1.0), so near-field structure is not
flattened by the 100 m scale, rescaled to the spread of the ImageNet-normalized RGB. Pixels without
ground truth take the labeler's value in both inputs, so holes carry no real/fake signal.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

LEAKY_SLOPE = 0.2
# "label": the critic sees pseudo labels as written (sky = +inf from the 100 m mask) and GT with
# its sky. "neutral": it sees the depth head's raw range, and GT's sky (and holes) are filled
# with that same raw range, so sky carries no real/fake signal. See the module docstring.
SKY_MODES = ("neutral", "label")


RANGE_INPUT_SCALE = 4.0  # log-range in [0, 1] -> [-2, 2], the spread of ImageNet-normalized RGB


def encode_range(range_m: torch.Tensor, max_range_m: float) -> torch.Tensor:
    """[B, 1, H, W] metres (+inf sky) -> log-scaled values in [-2, 2] (sky / D_max = 2).

    Same spread as the normalized RGB channels, so neither input drowns the other at init.
    """
    r = torch.nan_to_num(range_m, nan=0.0, posinf=max_range_m).clamp(0.0, max_range_m)
    return (torch.log1p(r) / math.log1p(max_range_m) - 0.5) * RANGE_INPUT_SCALE


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
        self,
        *,
        channels: int = 32,
        layers: int = 3,
        use_rgb: bool = True,
        max_range_m: float,
        sky: str = "neutral",
        pool: int = 1,
    ) -> None:
        super().__init__()
        self.pool = int(pool)
        if sky not in SKY_MODES:
            raise ValueError(f"sky must be one of {SKY_MODES}, got {sky!r}")
        self.sky = sky
        self.use_rgb = use_rgb
        self.max_range_m = float(max_range_m)
        self.net = PatchDiscriminator(1 + (3 if use_rgb else 0), channels, layers)

    def forward(self, range_m: torch.Tensor, rgb_normalized: torch.Tensor | None) -> torch.Tensor:
        x = encode_range(range_m, self.max_range_m)
        if self.use_rgb:
            if rgb_normalized is None:
                raise ValueError("this discriminator is conditioned on RGB; pass the image")
            x = torch.cat([x, rgb_normalized.to(x.dtype)], dim=1)
        if self.pool > 1:
            # Ground truth is pixel-sharp and every prediction is not: without this low-pass
            # the critic separates them by sharpness alone and then ranks confident but wrong
            # labels (sharp spurious structure) above accurate, smooth ones.
            x = F.avg_pool2d(x, self.pool)
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


def fill_invalid(
    gt_m: torch.Tensor, valid: torch.Tensor, pred_m: torch.Tensor, fill_sky: bool = False
) -> torch.Tensor:
    """GT with unknown pixels (and sky, if fill_sky) replaced by the prediction."""
    known = valid & ~torch.isnan(gt_m)
    if fill_sky:
        known &= torch.isfinite(gt_m)
    return torch.where(known, gt_m, pred_m)


def critic_input(critic: DepthCritic, label_m: torch.Tensor, raw_m: torch.Tensor) -> torch.Tensor:
    """The range map the critic judges: the raw prediction ("neutral" sky) or the gated label."""
    return raw_m if critic.sky == "neutral" else label_m
