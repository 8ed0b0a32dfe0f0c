"""DPT head: four backbone feature grids -> one sigmoid map at 16x the grid size.

Structure and parameter names follow Depth-Anything-V2's `DPTHead` as the released DAP uses it
(spec §3): per-level 1x1 projection and resize (x4, x2, x1, /2), 3x3 "rn" convs to a common
width, a top-down chain of fusion blocks (`path_4` ... `path_1`, bilinear with
align_corners=True), then output convs ending in a sigmoid (at 16x; with `low_res_output` at
8x, only the logits resized). DAP has one of these for depth and one per range mask.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class ResidualConvUnit(nn.Module):
    """x + conv2(relu(conv1(relu(x)))), 3x3 convs with bias."""

    def __init__(self, features: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(features, features, kernel_size=3, padding=1)
        self.conv2 = nn.Conv2d(features, features, kernel_size=3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.conv2(F.relu(self.conv1(F.relu(x))))
        return out + x


class FeatureFusionBlock(nn.Module):
    """Adds the skip (after its own RCU), refines, upsamples, then a 1x1 conv."""

    def __init__(self, features: int) -> None:
        super().__init__()
        # refinenet4 never uses resConfUnit1, but the released checkpoint carries it.
        self.resConfUnit1 = ResidualConvUnit(features)
        self.resConfUnit2 = ResidualConvUnit(features)
        self.out_conv = nn.Conv2d(features, features, kernel_size=1)

    def forward(
        self,
        x: torch.Tensor,
        skip: torch.Tensor | None = None,
        size: tuple[int, int] | None = None,
    ) -> torch.Tensor:
        if skip is not None:
            x = x + self.resConfUnit1(skip)
        x = self.resConfUnit2(x)
        if size is None:
            x = F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True)
        else:
            x = F.interpolate(x, size=size, mode="bilinear", align_corners=True)
        return self.out_conv(x)


class _Scratch(nn.Module):
    """Container named as in the official code so checkpoint keys map one to one."""

    def __init__(
        self, in_channels: tuple[int, ...], features: int, hidden: int, outputs: int = 1
    ) -> None:
        super().__init__()
        for i, channels in enumerate(in_channels, start=1):
            conv = nn.Conv2d(channels, features, kernel_size=3, padding=1, bias=False)
            self.add_module(f"layer{i}_rn", conv)
        for i in range(1, 5):
            self.add_module(f"refinenet{i}", FeatureFusionBlock(features))
        self.output_conv1 = nn.Conv2d(features, features // 2, kernel_size=3, padding=1)
        self.output_conv2 = nn.Sequential(
            nn.Conv2d(features // 2, hidden, kernel_size=3, padding=1),
            nn.ReLU(),
            nn.Conv2d(hidden, outputs, kernel_size=1),
            nn.Sigmoid(),
        )


class DPTHead(nn.Module):
    """Feature grids [B, C_embed, h, w] x 4 -> probability maps [B, outputs, patch*h, patch*w]."""

    def __init__(
        self,
        in_channels: int,
        features: int,
        out_channels: tuple[int, ...],
        hidden: int = 32,
        patch_size: int = 16,
        outputs: int = 1,
        low_res_output: bool = False,
    ) -> None:
        super().__init__()
        self.patch_size = patch_size
        self.low_res_output = low_res_output
        self.projects = nn.ModuleList(
            nn.Conv2d(in_channels, c, kernel_size=1) for c in out_channels
        )
        c0, c1, _, c3 = out_channels
        self.resize_layers = nn.ModuleList(
            [
                nn.ConvTranspose2d(c0, c0, kernel_size=4, stride=4),
                nn.ConvTranspose2d(c1, c1, kernel_size=2, stride=2),
                nn.Identity(),
                nn.Conv2d(c3, c3, kernel_size=3, stride=2, padding=1),
            ]
        )
        self.scratch = _Scratch(tuple(out_channels), features, hidden, outputs)

    def forward(self, grids: list[torch.Tensor]) -> torch.Tensor:
        h, w = grids[0].shape[-2:]
        s = self.scratch
        layers = [
            resize(project(g))
            for g, project, resize in zip(grids, self.projects, self.resize_layers, strict=True)
        ]  # 4h x 4w, 2h x 2w, h x w, ceil(h/2) x ceil(w/2)
        layer_1_rn = s.layer1_rn(layers[0])
        layer_2_rn = s.layer2_rn(layers[1])
        layer_3_rn = s.layer3_rn(layers[2])
        layer_4_rn = s.layer4_rn(layers[3])

        path_4 = s.refinenet4(layer_4_rn, size=layer_3_rn.shape[2:])
        path_3 = s.refinenet3(path_4, layer_3_rn, size=layer_2_rn.shape[2:])
        path_2 = s.refinenet2(path_3, layer_2_rn, size=layer_1_rn.shape[2:])
        path_1 = s.refinenet1(path_2, layer_1_rn)  # 8h x 8w

        out = s.output_conv1(path_1)
        size = (h * self.patch_size, w * self.patch_size)
        if self.low_res_output:  # the last convs at 8h x 8w; only the logits are resized
            *convs, sigmoid = s.output_conv2
            for layer in convs:
                out = layer(out)
            out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
            return sigmoid(out)
        out = F.interpolate(out, size=size, mode="bilinear", align_corners=True)
        return s.output_conv2(out)  # [B, outputs, 16h, 16w] in (0, 1)
