"""Random consumer-camera degradations of a clean rendered panorama (sim-to-real augmentation).

A labeler trained only on clean synthetic renders leans on cues a real 360° camera does not
keep: exact colours, exposure, sharp edges, a bright sky. `CameraEffects` degrades the RGB of a
training sample the way such a camera does, each effect with random strength: uneven lighting
(a smooth random gain field and a top-to-bottom gradient, so brightness stops being a depth
cue), exposure and white-balance error, a tone curve, desaturation, lens fall-off along one
horizontal axis, optical blur (wrapping at the seam), sensor noise, JPEG compression,
distance haze that uses the sample's ground-truth range (sky counts as infinitely far), and
lamp relighting of enclosed scenes: a few point lights hung just below the surfaces above the
camera, lighting every pixel by inverse-square falloff from its true 3D point, so ceilings show
bright halos around lamps and go dark away from them (as indoor photos do; evenly lit renders
teach that a dark or glowing top of the image is sky). Only `rgb` changes; geometry is
untouched. Every random choice comes from the given `torch.Generator`. Samples that already
come from a camera (domain "real", or "pseudo" for pseudo-labeled photos) pass through
unchanged: only renders are degraded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from dap_core.geometry import pixel_lonlat, range_to_points


def uniform(gen: torch.Generator | None, lo: float, hi: float) -> float:
    """One float drawn uniformly from [lo, hi) with `gen` (the global generator when None)."""
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _chance(gen: torch.Generator | None, p: float) -> bool:
    return float(torch.rand((), generator=gen)) < p


def gaussian_blur_wrapped(rgb: torch.Tensor, sigma: float) -> torch.Tensor:
    """Separable Gaussian blur of [3, H, W]: wraps across the ±180° seam, clamps at the poles."""
    if sigma <= 0:
        return rgb
    radius = max(1, math.ceil(3 * sigma))
    x = torch.arange(-radius, radius + 1, dtype=rgb.dtype)
    kernel = torch.exp(-0.5 * (x / sigma) ** 2)
    kernel = kernel / kernel.sum()
    img = rgb[:, None]  # [3, 1, H, W]: one channel per "batch" item
    img = F.pad(img, (radius, radius, 0, 0), mode="circular")
    img = F.conv2d(img, kernel.view(1, 1, 1, -1))
    img = F.pad(img, (0, 0, radius, radius), mode="replicate")
    img = F.conv2d(img, kernel.view(1, 1, -1, 1))
    return img[:, 0]


def jpeg_round_trip(rgb: torch.Tensor, quality: int) -> torch.Tensor:
    """Encode [3, H, W] in [0, 1] as JPEG at `quality` and decode it again."""
    img = (rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    ok, buf = cv2.imencode(
        ".jpg", np.ascontiguousarray(img[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:  # pragma: no cover - OpenCV encodes any uint8 image
        raise RuntimeError("JPEG encoding failed")
    out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return torch.from_numpy(np.ascontiguousarray(out)).permute(2, 0, 1).float().div_(255.0)


@dataclass(frozen=True)
class CameraEffects:
    """Degrade `sample["rgb"]` (float [3, H, W] in [0, 1]) like a consumer 360° camera.

    p: probability of applying the chain at all; each effect then has its own probability
    and a strength drawn uniformly from its range. haze uses `sample["range_m"]` when present.
    Samples whose "domain" is in `camera_domains` are returned as they are.
    """

    p: float = 0.8
    exposure_ev: float = 0.8  # exposure error in stops, ±
    white_balance: float = 0.15  # per-channel gain error, ±
    gamma: tuple[float, float] = (0.8, 1.25)
    saturation: tuple[float, float] = (0.5, 1.0)
    falloff: tuple[float, float] = (0.0, 0.3)  # darkening 90° off a random lens axis
    blur_sigma: tuple[float, float] = (0.3, 1.3)  # pixels
    noise_std: tuple[float, float] = (0.0, 0.03)
    jpeg_quality: tuple[int, int] = (35, 90)
    haze_p: float = 0.5
    haze_m: tuple[float, float] = (30.0, 4000.0)  # haze length, log-uniform
    shading_ev: float = 0.0  # uneven lighting: smooth gain field and vertical gradient, ± stops
    lamps_p: float = 0.0  # probability of lamp relighting an enclosed scene (needs range_m)
    lamps: tuple[int, int] = (1, 4)  # number of lamps, inclusive
    max_sky_fraction: float = 0.01  # a scene with more non-finite range is not enclosed
    effect_p: float = 0.7
    camera_domains: tuple[str, ...] = ("real", "pseudo")

    def __call__(self, sample: dict, generator: torch.Generator | None = None) -> dict:
        if sample.get("domain") in self.camera_domains or not _chance(generator, self.p):
            return sample
        g = generator
        rgb = sample["rgb"].float().clone()
        height, width = rgb.shape[-2:]
        range_m = sample["range_m"].reshape(height, width) if "range_m" in sample else None
        if self.lamps_p > 0 and range_m is not None and _chance(g, self.lamps_p):
            rgb = rgb * self._lamp_gain(range_m, g)
        if range_m is not None and _chance(g, self.haze_p):
            rgb = self._haze(rgb, range_m, g)
        if self.shading_ev > 0 and _chance(g, self.effect_p):
            rgb = rgb * self._shading(height, width, g)
        gains = torch.tensor(
            [2.0 ** uniform(g, -self.exposure_ev, self.exposure_ev)] * 3
        ) * torch.tensor(
            [uniform(g, 1 - self.white_balance, 1 + self.white_balance) for _ in "rgb"]
        )
        rgb = rgb * gains.view(3, 1, 1)
        if _chance(g, self.effect_p):
            axis = uniform(g, -math.pi, math.pi)
            lon, _ = pixel_lonlat(height, width)
            off_axis = 1 - torch.cos(lon - axis).abs()
            rgb = rgb * (1 - uniform(g, *self.falloff) * off_axis**2)
        rgb = rgb.clamp(0, 1) ** uniform(g, *self.gamma)
        if _chance(g, self.effect_p):
            grey = rgb.mean(0, keepdim=True)
            rgb = grey + (rgb - grey) * uniform(g, *self.saturation)
        if _chance(g, self.effect_p):
            rgb = gaussian_blur_wrapped(rgb, uniform(g, *self.blur_sigma))
        if _chance(g, self.effect_p):
            std = uniform(g, *self.noise_std)
            rgb = rgb + std * torch.randn(rgb.shape, generator=g) * rgb.clamp_min(0.05).sqrt()
        rgb = rgb.clamp(0, 1)
        if _chance(g, self.effect_p):
            lo, hi = self.jpeg_quality
            rgb = jpeg_round_trip(rgb, round(uniform(g, lo, hi)))
        out = dict(sample)
        out["rgb"] = rgb.to(sample["rgb"].dtype)
        return out

    def _shading(self, height: int, width: int, g: torch.Generator | None) -> torch.Tensor:
        """Gain [1, H, W] = 2^(smooth field + vertical gradient), within ±shading_ev: the field
        is a sum of low longitude harmonics (periodic, so seamless at ±180°) whose amplitude
        varies with latitude; the gradient brightens the top or the bottom."""
        half = self.shading_ev / 2
        lon, lat = pixel_lonlat(height, width)
        sin_lat = torch.sin(lat)  # +1 top, -1 bottom
        field = torch.zeros(height, width)
        for k in (1, 2):
            wave = torch.cos(k * lon + uniform(g, -math.pi, math.pi))
            tilt = uniform(g, -1.0, 1.0)
            field += (uniform(g, -half, half) / 2) * (1 + tilt * sin_lat)[:, None] * wave
        field += uniform(g, -half, half) * sin_lat[:, None]
        return torch.exp2(field.clamp(-self.shading_ev, self.shading_ev))[None]

    def _lamp_gain(self, range_m: torch.Tensor, g: torch.Generator | None) -> torch.Tensor:
        """Gain [1, H, W] of relighting by point lamps, auto-exposed (the 70th-percentile pixel
        keeps its level); all ones for an open scene (sky over max_sky_fraction of pixels).

        Each lamp hangs at 75-95 % of the way from the camera to the surface seen in a random
        direction 45-88° above the horizon; a pixel's irradiance is Σ w / (d² + s) for its
        distance d (m) to each lamp, plus an ambient share. Scene-linear, so it comes before the
        exposure and tone curve."""
        height, width = range_m.shape
        r = range_m.double()
        finite = torch.isfinite(r) & (r > 0)
        ones = torch.ones(1, height, width, dtype=range_m.dtype)
        if float((~finite).float().mean()) > self.max_sky_fraction:
            return ones
        points = range_to_points(torch.where(finite, r, torch.zeros_like(r)))
        _, lat = pixel_lonlat(height, width, dtype=torch.float64)
        rows = torch.nonzero((lat > math.radians(45)) & (lat < math.radians(88))).flatten()
        irradiance = torch.zeros(height, width, dtype=torch.float64)
        n_lamps = int(torch.randint(self.lamps[0], self.lamps[1] + 1, (), generator=g))
        for _ in range(n_lamps):
            row = int(rows[int(torch.randint(len(rows), (), generator=g))])
            col = int(torch.randint(width, (), generator=g))
            lamp = points[row, col] * uniform(g, 0.75, 0.95)
            d2 = ((points - lamp) ** 2).sum(-1)
            irradiance += uniform(g, 0.5, 1.5) / (d2 + uniform(g, 0.3, 1.5))
        lit = irradiance[finite]
        if lit.numel() == 0 or not bool(lit.max() > 0):
            return ones
        light = irradiance + uniform(g, 0.3, 1.2) * lit.median()
        gain = light / torch.quantile(light[finite], 0.7)
        gain = torch.where(finite, gain, torch.ones_like(gain)).clamp(max=4.0)
        return gain.to(range_m.dtype)[None]

    def _haze(
        self, rgb: torch.Tensor, range_m: torch.Tensor, g: torch.Generator | None
    ) -> torch.Tensor:
        """Blend towards a pale haze colour by 1 - exp(-range / L); sky (inf) becomes haze."""
        lo, hi = (math.log(v) for v in self.haze_m)
        length = math.exp(uniform(g, lo, hi))
        r = torch.nan_to_num(range_m.float(), nan=0.0, posinf=1e9).clamp_min(0)
        fraction = 1 - torch.exp(-r / length)
        level = uniform(g, 0.6, 0.9)
        colour = torch.tensor([level * uniform(g, 0.95, 1.05) for _ in "rgb"]).clamp(0, 1)
        return rgb + (colour.view(3, 1, 1) - rgb) * fraction
