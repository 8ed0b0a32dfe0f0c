"""Appearance of synthetic panoramas: procedural textures, shading, sky and camera pipeline.

Two appearance domains share one geometry distribution:
- "sim": clean procedural textures, saturated palette, one directional light plus ambient,
  gamma 2.2, lossless.
- "real_like": other texture statistics (grime, lower pattern contrast, desaturated and
  tinted palette); hemispherical skylight, point lights with falloff, corner and contact
  occlusion indoors, sun shadows and distance haze outdoors; then a consumer 360-camera
  pipeline: exposure and white-balance error, dual-fisheye vignetting and stitching exposure
  step, optical blur, shot and read noise, highlight roll-off and JPEG compression.

All colours are linear RGB in [0, 1] until `camera_pipeline` turns them into uint8 sRGB-like
values. Texture coordinates are metres on the surface, so pattern sizes are metric cues.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field

import cv2
import numpy as np

DOMAINS = ("sim", "real_like")
GAMMA = 2.2
AUTO_EXPOSURE_KEY = 0.18  # linear mid-grey that metering aims at (real_like camera)


def check_domain(domain: str) -> None:
    if domain not in DOMAINS:
        raise ValueError(f"domain must be one of {DOMAINS}, got {domain!r}")


# ---------------------------------------------------------------------------------------------
# Noise
# ---------------------------------------------------------------------------------------------


def hash01(i: np.ndarray, j: np.ndarray, salt: int = 0) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell (i, j) (float inputs are
    cell indices, e.g. from np.floor). uint32 arithmetic wraps by design."""
    h = i.astype(np.int32).view(np.uint32) * np.uint32(374761393)
    h += np.asarray(j).astype(np.int32).view(np.uint32) * np.uint32(668265263)
    h += np.uint32((salt * 1442695041) & 0xFFFFFFFF)
    h ^= h >> np.uint32(13)
    h *= np.uint32(1274126177)
    h ^= h >> np.uint32(16)
    return (h & np.uint32(0xFFFFFF)).astype(np.float32) * np.float32(1.0 / (1 << 24))


def fmod(x: np.ndarray, period: float) -> np.ndarray:
    """x modulo `period` in [0, period): floor-based, several times faster than np.mod."""
    p = np.float32(period)
    return x - np.floor(x * np.float32(1.0 / period)) * p


class NoiseBank:
    """Smooth value noise from a few random periodic tiles; deterministic for a generator.

    Each tile is blurred white noise, so bilinear lookups (OpenCV `remap`, wrapping at the
    tile border) are smooth.
    """

    SIZE = 64  # texels per tile side
    TEXELS_PER_FEATURE = 4.0
    _CHUNK = 32000  # remap maps must stay below SHRT_MAX columns
    _MAX_COORD = 30000.0  # remap's fixed-point coordinates must stay below SHRT_MAX

    def __init__(self, rng: np.random.Generator, n_tiles: int = 4):
        raw = rng.random((n_tiles, self.SIZE, self.SIZE)).astype(np.float32)
        self.tiles = []
        for tile in raw:
            # Periodic blur (wrap-padded) keeps the tile seamless.
            pad = np.pad(tile, 8, mode="wrap")
            smooth = cv2.GaussianBlur(pad, (0, 0), 1.2)[8:-8, 8:-8]
            smooth = (smooth - smooth.min()) / max(float(np.ptp(smooth)), 1e-6)
            self.tiles.append(np.ascontiguousarray(smooth, dtype=np.float32))

    def noise(self, s: np.ndarray, t: np.ndarray, scale: float, k: int = 0) -> np.ndarray:
        """Value noise in [0, 1] with feature size `scale` (same units as s, t)."""
        inv = np.float32(self.TEXELS_PER_FEATURE / scale)
        x = s.astype(np.float32, copy=False) * inv
        y = t.astype(np.float32, copy=False) * inv
        n = x.shape[0]
        if n == 0:
            return x
        if max(float(np.abs(x).max()), float(np.abs(y).max())) > self._MAX_COORD:
            period = np.float32(self.SIZE)  # tiles repeat: wrap far coordinates first
            x -= np.floor(x / period) * period
            y -= np.floor(y / period) * period
        tile = self.tiles[k % len(self.tiles)]
        out = np.empty(n, dtype=np.float32)
        for i in range(0, n, self._CHUNK):
            j = min(n, i + self._CHUNK)
            out[i:j] = cv2.remap(
                tile,
                x[i:j].reshape(1, -1),
                y[i:j].reshape(1, -1),
                cv2.INTER_LINEAR,
                borderMode=cv2.BORDER_WRAP,
            )[0]
        return out

    def fbm(self, s: np.ndarray, t: np.ndarray, scale: float, octaves: int = 3) -> np.ndarray:
        """Fractal sum of `octaves` noise layers, normalised to [0, 1]."""
        total = self.noise(s, t, scale, k=0)
        amp, norm = 1.0, 1.0
        for o in range(1, octaves):
            amp *= 0.5
            total += np.float32(amp) * self.noise(s + 17.3 * o, t - 9.1 * o, scale / 2**o, k=o)
            norm += amp
        return total * np.float32(1 / norm)


# ---------------------------------------------------------------------------------------------
# Materials and domain styles
# ---------------------------------------------------------------------------------------------

PATTERNS = (
    "plain",
    "tiles",
    "planks",
    "stripes",
    "bricks",
    "facade",
    "grass",
    "foliage",
    "bark",
    "paint",
    "glass",
    "concrete",
    "ceiling",
    "fabric",
)


@dataclass(frozen=True)
class Material:
    """A surface: procedural pattern, two linear-RGB colours, a metric pattern size.

    extra holds pattern-specific sizes (facade: window spacing, width, height, sill).
    """

    pattern: str
    color: tuple[float, float, float]
    color2: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    variation: float = 0.1
    extra: tuple[float, ...] = ()
    specular: float = 0.0

    def __post_init__(self):
        if self.pattern not in PATTERNS:
            raise ValueError(f"unknown pattern {self.pattern!r}")


@dataclass(frozen=True)
class Style:
    """Per-render appearance statistics of one domain (drawn from the domain's distribution)."""

    domain: str
    grime: float = 0.0  # amplitude of low-frequency albedo variation
    saturation: float = 1.0
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)
    pattern_contrast: float = 1.0

    @classmethod
    def draw(cls, domain: str, rng: np.random.Generator) -> Style:
        check_domain(domain)
        if domain == "sim":
            return cls(domain)
        tint = 1.0 + rng.uniform(-0.08, 0.08, 3)
        return cls(
            domain,
            grime=float(rng.uniform(0.2, 0.45)),
            saturation=float(rng.uniform(0.55, 0.9)),
            tint=tuple(float(x) for x in tint),
            pattern_contrast=float(rng.uniform(0.55, 1.0)),
        )


def restyle_color(color, style: Style) -> np.ndarray:
    """A material colour as this domain renders it: desaturated and tinted in real_like."""
    r, g, b = (float(c) for c in color)
    if style.domain == "sim":
        return np.array((r, g, b), dtype=np.float32)
    grey = (r + g + b) / 3
    k = style.saturation
    out = [(grey + (c - grey) * k) * w for c, w in zip((r, g, b), style.tint, strict=True)]
    return np.clip(np.array(out, dtype=np.float32), 0.0, 1.0)


def _lines(x: np.ndarray, period: float, width: float) -> np.ndarray:
    """1 on thin lines every `period` (line width `width`), else 0; same units as x."""
    f = fmod(x, period)
    return ((f < width * 0.5) | (f > period - width * 0.5)).astype(np.float32)


def _compose(c1: np.ndarray, f1: np.ndarray, c2: np.ndarray, f2, out=None) -> np.ndarray:
    """Per-pixel albedo [N, 3] = f1 · c1 + f2 · c2, clipped to [0, 1] (into `out` if given)."""
    out = np.multiply(f1[:, None], c1[None], out=out)
    if f2 is not None:
        out += f2[:, None] * c2[None]
    return np.clip(out, 0.0, 1.0, out=out)


def albedo(
    mat: Material,
    s: np.ndarray,
    t: np.ndarray,
    noise: NoiseBank,
    style: Style,
    salt: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Linear-RGB albedo [N, 3] float32 of `mat` at surface coordinates (s, t) in metres.

    Every pattern is a per-pixel blend f1 · color + f2 · color2 of the material's two colours.
    out: optional float32 [N, 3] array to write into (saves a copy).
    """
    s = s.astype(np.float32, copy=False)
    t = t.astype(np.float32, copy=False)
    k = style.pattern_contrast
    var = np.float32(mat.variation)
    p = mat.pattern
    f2 = None
    if p in ("plain", "paint", "concrete", "fabric"):
        w = noise.noise(s, t, 0.6 if p != "concrete" else 0.3, k=salt)
        f1 = 1 + var * (2 * w - 1)
        if p == "fabric":
            f1 *= 1 + 0.08 * k * (_lines(s, 0.01, 0.004) - 0.5)
    elif p in ("tiles", "bricks"):
        if p == "tiles":
            h, w_cell, off = mat.scale, mat.scale, np.float32(0)
        else:
            h, w_cell = mat.scale, mat.scale * 3.4
            off = fmod(np.floor(t / np.float32(h)), 2) * np.float32(0.5 * w_cell)
        i, j = np.floor((s + off) / w_cell), np.floor(t / h)
        grout = np.maximum(_lines(s + off, w_cell, 0.012), _lines(t, h, 0.012)) * k
        f1 = (1 + 2 * var * (hash01(i, j, salt) - 0.5)) * (1 - grout)
        f2 = grout
    elif p == "planks":
        width = mat.scale
        length = width * 6
        row = np.floor(t / np.float32(width))
        shift = hash01(row, row * 0, salt + 1) * np.float32(length)
        col = np.floor((s + shift) / np.float32(length))
        grain = noise.noise(s * 0.05, t * 2.0, 0.02, k=salt + 1)
        seam = np.maximum(_lines(t, width, 0.006), _lines(s + shift, length, 0.006))
        f1 = (1 + 2 * var * (hash01(col, row, salt) - 0.5) + 0.15 * k * (grain - 0.5)) * (
            1 - 0.6 * k * seam
        )
    elif p == "stripes":
        f2 = (fmod(s, 2 * mat.scale) < mat.scale).astype(np.float32) * k
        f1 = 1 - f2
    elif p == "facade":
        f1, f2 = _facade(mat, s, t, salt)
    elif p in ("grass", "foliage"):
        w = noise.fbm(s, t, 0.4 if p == "grass" else 0.15, octaves=3)
        f2 = np.clip((w - 0.3) * 2.0, 0, 1)
        f1 = 1 - f2
        if p == "foliage":
            light = 0.6 + 0.8 * noise.noise(s, t, 0.05, k=salt)
            f1 *= light
            f2 *= light
    elif p == "bark":
        f2 = noise.noise(s * 8.0, t, 0.4, k=salt)
        f1 = 1 - f2
    elif p == "glass":
        f1 = 0.7 + 0.6 * noise.noise(s, t, 2.0, k=salt)
    elif p == "ceiling":
        f1 = 1 + var * (noise.noise(s, t, 0.5, k=salt) - 0.5)
        if mat.scale > 0:  # acoustic ceiling tiles
            grid = np.maximum(_lines(s, mat.scale, 0.015), _lines(t, mat.scale, 0.015))
            f1 *= 1 - 0.25 * k * grid
    else:  # pragma: no cover - Material validates the pattern
        raise ValueError(p)
    weather = _weather(s, t, noise, style, salt)
    if weather is not None:
        f1 = f1 * weather
        f2 = None if f2 is None else f2 * weather
    c1, c2 = restyle_color(mat.color, style), restyle_color(mat.color2, style)
    return _compose(c1, f1, c2, f2, out=out)


def _facade(mat: Material, s: np.ndarray, t: np.ndarray, salt: int):
    """Building wall with a metric window grid: storeys every mat.scale metres."""
    floor_h = np.float32(mat.scale)
    spacing, win_w, win_h, sill = (np.float32(x) for x in mat.extra)
    fs = fmod(s, spacing)
    ft = fmod(t, floor_h)
    storey = np.floor(t / floor_h)
    window = (np.abs(fs - spacing / 2) < win_w / 2) & (ft > sill) & (ft < sill + win_h)
    window = (window & (storey >= 0)).astype(np.float32)
    lit = hash01(np.floor(s / spacing), storey, salt)
    wall = 1 + np.float32(mat.variation) * (hash01(storey, storey * 0, salt + 3) - 0.5)
    ledge = 1 - 0.25 * ((ft < 0.12) & (storey > 0))
    return wall * (1 - window) * ledge, window * (0.6 + 0.8 * lit) * ledge


def _weather(s, t, noise: NoiseBank, style: Style, salt: int) -> np.ndarray | None:
    """Grime factor [N]: low-frequency albedo variation, one texture statistic that sets
    real_like apart from sim (the other: grain, added by the camera's sensor noise)."""
    if style.grime <= 0:
        return None
    g = noise.noise(s + np.float32(3.1 * salt), t, 1.2, k=salt)
    return 1 - np.float32(style.grime) * g


# ---------------------------------------------------------------------------------------------
# Ground and sky
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class GroundLayout:
    """Outdoor ground markings in world metres.

    kind "street": road along world x with |y| < road_half, sidewalks out to road_half + walk.
    kind "plaza": paved disc of radius `paved_radius` around the origin, grass beyond.
    kind "grid": roads of width 2·road_half every `block` metres along x and y, grass between.
    """

    kind: str
    road_half: float = 4.0
    walk: float = 2.5
    paved_radius: float = 30.0
    block: float = 60.0
    asphalt: tuple[float, float, float] = (0.05, 0.05, 0.055)
    paving: tuple[float, float, float] = (0.35, 0.33, 0.3)
    grass: tuple[float, float, float] = (0.08, 0.2, 0.04)
    grass2: tuple[float, float, float] = (0.2, 0.25, 0.06)
    tile: float = 0.5
    dash: float = 3.0
    gap: float = 6.0


def ground_albedo(
    layout: GroundLayout, x: np.ndarray, y: np.ndarray, noise: NoiseBank, style: Style
) -> np.ndarray:
    """Linear-RGB albedo [N, 3] of the ground at world (x, y)."""
    asphalt = Material("concrete", layout.asphalt, variation=0.25)
    paving = Material("tiles", layout.paving, (0.2, 0.2, 0.2), scale=layout.tile, variation=0.12)
    grass = Material("grass", layout.grass, layout.grass2)
    white = restyle_color((0.75, 0.75, 0.72), style)
    x = x.astype(np.float32, copy=False)
    y = y.astype(np.float32, copy=False)
    if layout.kind == "street":
        ay = np.abs(y)
        road = np.flatnonzero(ay < layout.road_half)
        walk = np.flatnonzero((ay >= layout.road_half) & (ay < layout.road_half + layout.walk))
        rest = np.flatnonzero(ay >= layout.road_half + layout.walk)
        out = np.empty((x.shape[0], 3), dtype=np.float32)
        if rest.size:
            out[rest] = albedo(grass, x[rest], y[rest], noise, style, 5)
        if walk.size:
            out[walk] = albedo(paving, x[walk], y[walk], noise, style, 6)
        if road.size:
            rx, ry = x[road], y[road]
            a = albedo(asphalt, rx, ry, noise, style, 7)
            period = np.float32(layout.dash + layout.gap)
            centre = (np.abs(ry) < 0.07) & (fmod(rx, period) < layout.dash)
            edge = np.abs(np.abs(ry) - np.float32(layout.road_half - 0.35)) < 0.07
            a[centre | edge] = white
            out[road] = a
        return out
    if layout.kind == "plaza":
        paved = (x * x + y * y) < np.float32(layout.paved_radius**2)
        parts = ((np.flatnonzero(paved), paving, 6), (np.flatnonzero(~paved), grass, 5))
    elif layout.kind == "grid":
        half_block = np.float32(layout.block / 2)
        dx = np.abs(fmod(x + half_block, layout.block) - half_block)
        dy = np.abs(fmod(y + half_block, layout.block) - half_block)
        road = (dx < layout.road_half) | (dy < layout.road_half)
        parts = ((np.flatnonzero(road), asphalt, 7), (np.flatnonzero(~road), grass, 5))
    else:
        raise ValueError(f"unknown ground layout {layout.kind!r}")
    out = np.empty((x.shape[0], 3), dtype=np.float32)
    for idx, mat, salt in parts:
        if idx.size:
            out[idx] = albedo(mat, x[idx], y[idx], noise, style, salt)
    return out


@dataclass(frozen=True)
class Sky:
    """Sky colours (linear RGB) and the sun direction (unit, world frame, z up)."""

    zenith: tuple[float, float, float]
    horizon: tuple[float, float, float]
    sun: tuple[float, float, float]
    sun_color: tuple[float, float, float] = (1.0, 0.95, 0.85)
    clouds: float = 0.0  # cloud cover in [0, 1]


def sky_radiance(sky: Sky, d: np.ndarray, noise: NoiseBank, style: Style) -> np.ndarray:
    """Linear radiance [N, 3] of the sky along world directions d [N, 3]."""
    d = d.astype(np.float32, copy=False)
    w = np.sqrt(np.clip(d[:, 2], 0.0, 1.0))[:, None]
    zen = restyle_color(sky.zenith, style)
    hor = restyle_color(sky.horizon, style)
    out = hor[None] + (zen - hor)[None] * w
    cos_sun = d @ np.asarray(sky.sun, dtype=np.float32)
    glow = np.exp((cos_sun - 1) * np.float32(40.0)) * np.float32(0.6)
    glow += (cos_sun > 0.9995) * np.float32(4.0)
    out += glow[:, None] * np.asarray(sky.sun_color, dtype=np.float32)[None]
    if sky.clouds > 0:
        # Clouds painted on a plane 1 km up: they shrink towards the horizon like real ones.
        h = np.float32(1000.0) / np.maximum(d[:, 2], np.float32(0.03))
        c = noise.fbm(d[:, 0] * h, d[:, 1] * h, 800.0, octaves=3)
        cover = np.clip((c - np.float32(1 - sky.clouds)) * 3, 0, 1) * np.clip(d[:, 2] * 8, 0, 1)
        out = out * (1 - cover[:, None]) + np.float32(0.9) * cover[:, None]
    return out


# ---------------------------------------------------------------------------------------------
# Lighting
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Lighting:
    """Lights of a scene: a key direction (sun or fill), point lights (indoors), ambient."""

    key_dir: tuple[float, float, float]
    key_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ambient: float = 0.5
    points: tuple[tuple[float, float, float], ...] = ()
    point_power: float = 4.0
    sky_color: tuple[float, float, float] = (0.6, 0.7, 0.9)
    haze_m: float = 0.0  # real_like outdoor haze length (metres); 0: none
    haze_color: tuple[float, float, float] = (0.7, 0.75, 0.8)
    extra: dict = field(default_factory=dict)


def shade(
    alb: np.ndarray,
    p: np.ndarray,
    n: np.ndarray,
    view: np.ndarray,
    lighting: Lighting,
    style: Style,
    occlusion: np.ndarray | None = None,
) -> np.ndarray:
    """Outgoing linear radiance [N, 3] of surface points p with normals n seen along view."""
    key = np.asarray(lighting.key_dir, dtype=np.float32)
    lambert = np.maximum(n @ key, 0)  # [N]
    key_col = np.asarray(lighting.key_color, dtype=np.float32)
    if style.domain == "sim":
        amb = np.float32(lighting.ambient)
        light = amb + ((1 - amb) * lambert)[:, None] * key_col[None]
        return alb * light
    # real_like: hemispherical skylight, key light, point lights with 1/(d² + 1) falloff.
    amb = np.float32(lighting.ambient)
    sky_col = np.asarray(lighting.sky_color, dtype=np.float32)
    light = ((0.55 + 0.45 * n[:, 2]) * amb)[:, None] * sky_col[None]
    light += ((1 - amb) * lambert)[:, None] * key_col[None]
    if lighting.points:
        # With v = l - p: n·v = n·l - n·p and |v|² = |p|² - 2 p·l + |l|²; the per-pixel dot
        # products are shared by all lights, so each light costs two mat-vecs.
        n_dot_p = np.einsum("ij,ij->i", n, p)
        p_dot_p = np.einsum("ij,ij->i", p, p)
        extra = np.zeros(n.shape[0], dtype=np.float32)
        for lp in lighting.points:
            lvec = np.asarray(lp, dtype=np.float32)
            d2 = np.maximum(p_dot_p - 2 * (p @ lvec) + np.float32(lvec @ lvec), 0)
            cos = np.maximum(n @ lvec - n_dot_p, 0) / np.sqrt(d2 + np.float32(1e-6))
            extra += cos / (d2 + np.float32(1.0))
        light += (np.float32(lighting.point_power) * extra)[:, None]
    if occlusion is not None:
        light *= occlusion[:, None]
    return alb * light


_SRGB_LUT_SIZE = 4096
_SRGB_LUT = np.round(
    255 * np.linspace(0, 1, _SRGB_LUT_SIZE, dtype=np.float64) ** (1 / GAMMA)
).astype(np.uint8)


def _encode_srgb(x: np.ndarray) -> np.ndarray:
    """Linear [0, 1] -> display uint8 through a lookup table (12-bit linear precision)."""
    idx = np.clip(x, 0.0, 1.0)
    idx *= np.float32(_SRGB_LUT_SIZE - 1)
    idx += np.float32(0.5)
    return np.take(_SRGB_LUT, idx.astype(np.intp))


SHOULDER_MAX = 4.0  # linear values above this all encode to white
SHOULDER_LUT_SIZE = 16384


def _encode_with_shoulder(x: np.ndarray, knee: float) -> np.ndarray:
    """Linear [0, SHOULDER_MAX] -> uint8 with a highlight shoulder, through one lookup table:
    linear up to `knee`, then an exponential roll-off towards 1, then the display gamma."""
    v = np.linspace(0.0, SHOULDER_MAX, SHOULDER_LUT_SIZE)
    rolled = knee + (1 - knee) * (1 - np.exp((knee - v) / (1 - knee)))
    lut = np.round(255 * np.clip(np.where(v > knee, rolled, v), 0, 1) ** (1 / GAMMA))
    idx = np.clip(x, 0.0, SHOULDER_MAX)
    idx *= np.float32((SHOULDER_LUT_SIZE - 1) / SHOULDER_MAX)
    idx += np.float32(0.5)
    return np.take(lut.astype(np.uint8), idx.astype(np.intp))


@functools.lru_cache(maxsize=1)
def _gaussian_pool() -> np.ndarray:
    """A fixed pool of standard normal samples; frames read it at random offsets, which is
    ~20x cheaper than drawing fresh normals and indistinguishable for sensor noise."""
    pool = np.random.default_rng(0x5E4504).standard_normal(1 << 22, dtype=np.float32)
    pool.setflags(write=False)
    return pool


def _sensor_noise(shape: tuple[int, ...], rng: np.random.Generator) -> np.ndarray:
    n = math.prod(shape)
    pool = _gaussian_pool()
    if n > pool.size // 2:
        return rng.standard_normal(shape, dtype=np.float32)
    start = int(rng.integers(0, pool.size - n))
    return pool[start : start + n].reshape(shape)


def _blur_wrapped(img: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur that wraps across the ERP seam (columns) and reflects at the poles."""
    pad = math.ceil(3 * sigma)
    padded = np.concatenate([img[:, -pad:], img, img[:, :pad]], axis=1)
    out = cv2.GaussianBlur(padded, (0, 0), sigma, borderType=cv2.BORDER_REFLECT)
    return out[:, pad:-pad]


def camera_pipeline(
    radiance: np.ndarray, lon: np.ndarray, style: Style, rng: np.random.Generator
) -> np.ndarray:
    """Linear radiance [H, W, 3] -> uint8 RGB [H, W, 3] as the domain's camera records it.

    lon: longitude of each column [W] (camera frame), used for the dual-fisheye effects.
    """
    if style.domain == "sim":
        return _encode_srgb(radiance)
    img = radiance.astype(np.float32)
    # Auto-exposure on the mean log luminance (as a camera meters), then an exposure error of
    # up to ±0.8 EV and a white-balance error: one gain per channel.
    sub = img[::4, ::4].reshape(-1, 3) @ np.array([0.2126, 0.7152, 0.0722], dtype=np.float32)
    key = float(np.exp(np.mean(np.log(np.maximum(sub, 1e-4)))))
    target = AUTO_EXPOSURE_KEY * 2.0 ** rng.uniform(-0.8, 0.8)
    gain = (target / max(key, 1e-4)) * rng.uniform(0.85, 1.15, 3)
    # Dual fisheye (lenses along ±x): vignetting towards the stitch at lon = ±90°, and a small
    # exposure step between the two lenses' halves.
    cos_axis = np.abs(np.cos(lon))  # [W], 1 on a lens axis
    vignette = 1 - rng.uniform(0.1, 0.3) * (1 - cos_axis) ** 2
    step = 1 + rng.uniform(-0.08, 0.08) * (np.cos(lon) < 0)
    img *= (vignette * step)[None, :, None].astype(np.float32) * gain.astype(np.float32)
    # Optics blur before the sensor.
    img = _blur_wrapped(img, float(rng.uniform(0.5, 1.3)))
    # Shot and read noise (in linear units of full scale).
    shot, read = np.float32(rng.uniform(3e-4, 3e-3)), np.float32(rng.uniform(1e-3, 5e-3))
    sigma = np.sqrt(np.maximum(img, 0) * shot + read * read)
    img += sigma * _sensor_noise(img.shape, rng)
    out = _encode_with_shoulder(img, float(rng.uniform(0.55, 0.8)))
    quality = int(rng.integers(35, 85))
    bgr = cv2.cvtColor(out, cv2.COLOR_RGB2BGR)  # contiguous: far cheaper to encode than a view
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def apply_haze(
    radiance: np.ndarray, range_m: np.ndarray, lighting: Lighting, style: Style
) -> np.ndarray:
    """Blend towards the haze colour with distance (real_like outdoors); sky counts as far."""
    if style.domain == "sim" or lighting.haze_m <= 0:
        return radiance
    r = np.minimum(range_m, np.float32(1e6))
    f = (1 - np.exp(-r / np.float32(lighting.haze_m)))[..., None]
    haze = restyle_color(lighting.haze_color, style)[None, None]
    return radiance * (1 - f) + haze * f
