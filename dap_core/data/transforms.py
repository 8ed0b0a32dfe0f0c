"""Augmentations applied consistently to a panorama sample dict.

A sample holds `rgb` float [3, H, W] in [0, 1] and per-pixel maps with the same trailing
(H, W): `range_m` [1, H, W], `valid` [1, H, W], optionally `normals` [3, H, W] (camera frame)
and any other map. Geometric transforms move every such map together and keep their
geometric meaning (see `dap_core.geometry.yaw_shift` / `flip_horizontal`):
- yaw roll by k columns: the camera yaws by +2πk/W; range is unchanged, normals rotate by
  -2πk/W about +z;
- horizontal flip: the reflection y -> -y; normals get n_y -> -n_y.
Colour jitter touches only `rgb`. Every random choice comes from a `torch.Generator`, so a
seeded generator reproduces an augmentation exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from dap_core import geometry
from dap_core.data.camera_effects import CameraEffects
from dap_core.data.camera_effects import uniform as _uniform

# YIQ, in which a hue change is a rotation of the (I, Q) chroma plane.
_RGB_TO_YIQ = torch.tensor(
    [[0.299, 0.587, 0.114], [0.595716, -0.274453, -0.321263], [0.211456, -0.522591, 0.311135]]
)
_YIQ_TO_RGB = torch.linalg.inv(_RGB_TO_YIQ)


def _pixel_maps(sample: dict) -> list[str]:
    """Keys of the tensors that share the rgb image's trailing (H, W)."""
    if "rgb" not in sample:
        raise KeyError("sample has no 'rgb'")
    hw = tuple(sample["rgb"].shape[-2:])
    return [
        k
        for k, v in sample.items()
        if isinstance(v, torch.Tensor) and v.ndim >= 2 and tuple(v.shape[-2:]) == hw
    ]


def _rotate_normals_z(normals: torch.Tensor, angle: float) -> torch.Tensor:
    """Rotate channel-first normals [..., 3, H, W] by `angle` radians about +z."""
    c, s = math.cos(angle), math.sin(angle)
    nx, ny, nz = normals.unbind(-3)
    return torch.stack([c * nx - s * ny, s * nx + c * ny, nz], dim=-3)


def yaw_roll(sample: dict, shift_px: int) -> dict:
    """Roll every pixel map by `shift_px` columns: the camera yaws by +2π·shift_px/W."""
    out = dict(sample)
    width = sample["rgb"].shape[-1]
    for key in _pixel_maps(sample):
        out[key] = geometry.yaw_shift(sample[key], shift_px)
    if "normals" in out:
        out["normals"] = _rotate_normals_z(out["normals"], -2 * math.pi * shift_px / width)
    return out


def horizontal_flip(sample: dict) -> dict:
    """Mirror every pixel map left/right: the scene reflected through the x-z plane."""
    out = dict(sample)
    for key in _pixel_maps(sample):
        out[key] = geometry.flip_horizontal(sample[key])
    if "normals" in out:
        n = out["normals"]
        out["normals"] = torch.cat([n[..., :1, :, :], -n[..., 1:2, :, :], n[..., 2:, :, :]], -3)
    return out


def color_jitter(
    rgb: torch.Tensor,
    brightness: float = 1.0,
    contrast: float = 1.0,
    saturation: float = 1.0,
    hue: float = 0.0,
) -> torch.Tensor:
    """Adjust an RGB image [..., 3, H, W] in [0, 1]; factors of 1 and hue 0 leave it as is.

    brightness scales, contrast scales around the image mean luminance, saturation scales
    around each pixel's luminance, hue rotates the chroma by `hue` turns (YIQ space).
    """
    x = rgb * brightness
    luma_w = _RGB_TO_YIQ[0].to(x)[:, None, None]
    if contrast != 1.0:
        mean = (x * luma_w).sum(-3, keepdim=True).mean(dim=(-2, -1), keepdim=True)
        x = (x - mean) * contrast + mean
    if saturation != 1.0 or hue != 0.0:
        yiq = torch.einsum("ij,...jhw->...ihw", _RGB_TO_YIQ.to(x), x)
        c, s = math.cos(2 * math.pi * hue), math.sin(2 * math.pi * hue)
        i, q = yiq[..., 1, :, :], yiq[..., 2, :, :]
        i, q = (c * i - s * q) * saturation, (s * i + c * q) * saturation
        yiq = torch.stack([yiq[..., 0, :, :], i, q], dim=-3)
        x = torch.einsum("ij,...jhw->...ihw", _YIQ_TO_RGB.to(x), yiq)
    return x.clamp(0.0, 1.0)


@dataclass(frozen=True)
class PanoramaAugment:
    """Random yaw roll, horizontal flip and colour jitter, applied consistently to a sample.

    brightness, contrast, saturation: maximum relative change (0.2 -> factor in [0.8, 1.2]);
    hue: maximum rotation in turns. flip_p: probability of a flip. roll: uniform yaw roll.
    camera: optional consumer-camera degradation applied last (see `CameraEffects`).
    """

    roll: bool = True
    flip_p: float = 0.5
    brightness: float = 0.2
    contrast: float = 0.2
    saturation: float = 0.2
    hue: float = 0.05
    jitter_p: float = 0.8
    camera: CameraEffects | None = None

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        out = sample
        width = sample["rgb"].shape[-1]
        if self.roll:
            out = yaw_roll(out, int(torch.randint(width, (), generator=generator)))
        if float(torch.rand((), generator=generator)) < self.flip_p:
            out = horizontal_flip(out)
        if float(torch.rand((), generator=generator)) < self.jitter_p:
            out = dict(out)
            out["rgb"] = color_jitter(
                out["rgb"],
                brightness=_uniform(generator, 1 - self.brightness, 1 + self.brightness),
                contrast=_uniform(generator, 1 - self.contrast, 1 + self.contrast),
                saturation=_uniform(generator, 1 - self.saturation, 1 + self.saturation),
                hue=_uniform(generator, -self.hue, self.hue),
            )
        if self.camera is not None:
            out = self.camera(out, generator)
        return out
