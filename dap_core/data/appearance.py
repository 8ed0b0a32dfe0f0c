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

import copy
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


def hash01(i: np.ndarray, j: np.ndarray, salt=0) -> np.ndarray:
    """Deterministic pseudo-random value in [0, 1) per integer cell (i, j) (float inputs are
    cell indices, e.g. from np.floor); salt: an int or one int per cell. uint32 arithmetic
    wraps by design."""
    h = i.astype(np.int32).view(np.uint32) * np.uint32(374761393)
    h += np.asarray(j).astype(np.int32).view(np.uint32) * np.uint32(668265263)
    if np.ndim(salt) == 0:
        h += np.uint32((int(salt) * 1442695041) & 0xFFFFFFFF)
    else:
        h += np.asarray(salt).astype(np.uint32) * np.uint32(1442695041)
    h ^= h >> np.uint32(13)
    h *= np.uint32(1274126177)
    h ^= h >> np.uint32(16)
    h &= np.uint32(0xFFFFFF)
    out = h.astype(np.float32)
    out *= np.float32(1.0 / (1 << 24))
    return out


def fmod(x: np.ndarray, period) -> np.ndarray:
    """x modulo `period` (a number or one per element) in [0, period): floor-based, several
    times faster than np.mod."""
    if np.ndim(period) == 0:
        return x - np.floor(x * np.float32(1.0 / period)) * np.float32(period)
    return x - np.floor(x / period) * period


class NoiseBank:
    """Smooth value noise from a few random periodic tiles; deterministic for a generator.

    Each tile is blurred white noise, so bilinear lookups (OpenCV `remap`) are smooth. The
    tiles sit side by side in one atlas, each followed by a two-texel wrapped margin, and
    coordinates are wrapped into the tile period before the lookup: remap then never meets
    its border (its BORDER_WRAP path is ~10x slower), and one remap serves pixels that use
    different tiles.
    """

    SIZE = 64  # texels per tile side
    TEXELS_PER_FEATURE = 4.0
    _MARGIN = 2  # wrapped texels right of and below each tile (bilinear reads x0 + 1)
    _CHUNK = 32000  # remap maps must stay below SHRT_MAX columns

    def __init__(self, rng: np.random.Generator, n_tiles: int = 4):
        raw = rng.random((n_tiles, self.SIZE, self.SIZE)).astype(np.float32)
        # Periodic blur (wrap-padded) keeps each tile seamless; the tiles are blurred
        # together as the channels of one image.
        pad = 8
        stack = cv2.copyMakeBorder(np.ascontiguousarray(raw.transpose(1, 2, 0)), pad, pad,
                                   pad, pad, cv2.BORDER_WRAP)  # fmt: skip
        smooth = cv2.GaussianBlur(stack, (0, 0), 1.2)[pad:-pad, pad:-pad]  # [S, S, n]
        smooth = smooth.reshape(-1, n_tiles) if n_tiles > 1 else smooth.reshape(-1, 1)
        lo, hi = smooth.min(0), smooth.max(0)
        smooth = (smooth - lo) / np.maximum(hi - lo, np.float32(1e-6))
        tiles = smooth.T.reshape(n_tiles, self.SIZE, self.SIZE)
        m = self._MARGIN
        tiles = np.concatenate([tiles, tiles[:, :m]], axis=1)  # wrapped margins
        tiles = np.concatenate([tiles, tiles[:, :, :m]], axis=2)  # [n, S + m, S + m]
        self.n_tiles = n_tiles
        self.atlas = np.ascontiguousarray(
            np.concatenate(list(tiles), axis=1), dtype=np.float32
        )  # [S + m, n (S + m)]
        self.atlas.setflags(write=False)
        self.offset = (np.float32(0.0), np.float32(0.0))  # texels added to every lookup

    def shifted(self, rng: np.random.Generator) -> NoiseBank:
        """The same tiles read at a random offset: another noise field, without building
        (and blurring) new tiles."""
        other = copy.copy(self)
        other.offset = tuple(np.float32(v) for v in rng.uniform(0, self.SIZE, 2))
        return other

    def noise(self, s: np.ndarray, t: np.ndarray, scale, k=0) -> np.ndarray:
        """Value noise [N] float32 in [0, 1] with feature size `scale` (same units as s, t);
        k picks the tile (an int, or one int per point)."""
        inv = np.float32(self.TEXELS_PER_FEATURE) / np.asarray(scale, dtype=np.float32)
        period, inv_period = np.float32(self.SIZE), np.float32(1.0 / self.SIZE)
        x = np.multiply(s, inv, dtype=np.float32)
        y = np.multiply(t, inv, dtype=np.float32)
        n = x.shape[0]
        if n == 0:
            return x
        x += self.offset[0]
        y += self.offset[1]
        # Wrap into [0, SIZE] (the tiles repeat): remap's fixed-point coordinates stay small.
        x -= np.floor(x * inv_period) * period
        y -= np.floor(y * inv_period) * period
        stride = self.SIZE + self._MARGIN
        if np.ndim(k) == 0:
            x += np.float32((int(k) % self.n_tiles) * stride)
        else:
            x += (np.asarray(k) % self.n_tiles).astype(np.float32) * np.float32(stride)
        if n <= self._CHUNK:
            return cv2.remap(self.atlas, x.reshape(1, -1), y.reshape(1, -1), cv2.INTER_LINEAR,
                             borderMode=cv2.BORDER_REPLICATE)[0]  # fmt: skip
        out = np.empty(n, dtype=np.float32)
        for i in range(0, n, self._CHUNK):
            j = min(n, i + self._CHUNK)
            out[i:j] = cv2.remap(self.atlas, x[i:j].reshape(1, -1), y[i:j].reshape(1, -1),
                                 cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)[0]  # fmt: skip
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
    # Restyled colours of this render (colour tuple -> [3]); dies with the render, so no
    # cache entries pile up for the garbage collector across renders.
    colors: dict = field(default_factory=dict, compare=False, repr=False)

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
    """A material colour [3] float32 as this domain renders it: desaturated and tinted in
    real_like (read-only, cached for the render)."""
    key = tuple(color)
    out = style.colors.get(key)
    if out is not None:
        return out
    r, g, b = (float(c) for c in color)
    if style.domain == "sim":
        out = np.array((r, g, b), dtype=np.float32)
    else:
        grey = (r + g + b) / 3
        k = style.saturation
        rgb = [(grey + (c - grey) * k) * w for c, w in zip((r, g, b), style.tint, strict=True)]
        out = np.clip(np.array(rgb, dtype=np.float32), 0.0, 1.0)
    out.setflags(write=False)
    style.colors[key] = out
    return out


def _lines(x: np.ndarray, period, width: float) -> np.ndarray:
    """1 on thin lines every `period` (line width `width`), else 0; same units as x."""
    f = fmod(x, period)
    return ((f < width * 0.5) | (f > period - width * 0.5)).astype(np.float32)


def _compose(c1: np.ndarray, f1: np.ndarray, c2: np.ndarray, f2, out=None) -> np.ndarray:
    """Per-pixel albedo [3, N] = f1 · c1 + f2 · c2 (colours [3] or [3, N]), clipped to
    [0, 1] (into `out` if given).

    Planar rows: a colour broadcast over a row runs at full speed, over [N, 3] rows of
    three it is several times slower."""
    if out is None:
        out = np.empty((3, f1.shape[0]), dtype=np.float32)
    for ch in range(3):
        row = np.multiply(f1, c1[ch], out=out[ch])
        if f2 is not None:
            row += f2 * c2[ch]
    np.maximum(out, 0.0, out=out)  # np.clip's wrapper costs more than two ufuncs
    return np.minimum(out, 1.0, out=out)


@dataclass(frozen=True)
class MaterialParams:
    """Parameters of materials that share one pattern, for one albedo evaluation: each field
    is one value for all pixels (scalar, or [3] for colours) or one per pixel ([N], [3, N])."""

    c1: np.ndarray
    c2: np.ndarray
    scale: np.ndarray
    variation: np.ndarray
    salt: np.ndarray  # int: picks noise tiles and hash streams
    extra: tuple = ()

    @classmethod
    def of(
        cls,
        materials: list[Material],
        salts: list[int],
        style: Style,
        counts: list[int] | None = None,
    ) -> MaterialParams:
        """Parameters of `materials` (same pattern) covering counts[i] consecutive pixels
        each; with one material (counts None), one value for all pixels."""
        if counts is None or len(materials) == 1:
            m = materials[0]
            return cls(
                restyle_color(m.color, style),
                restyle_color(m.color2, style),
                np.float32(m.scale),
                np.float32(m.variation),
                int(salts[0]),
                tuple(np.float32(x) for x in m.extra),
            )
        reps = np.asarray(counts)

        def per_pixel(values, dtype=np.float32):
            return np.repeat(np.asarray(values, dtype=dtype), reps, axis=-1)

        c1 = per_pixel(np.stack([restyle_color(m.color, style) for m in materials], 1))
        c2 = per_pixel(np.stack([restyle_color(m.color2, style) for m in materials], 1))
        extra = ()
        if materials[0].extra:
            extra = tuple(per_pixel(col) for col in zip(*(m.extra for m in materials), strict=True))
        return cls(
            c1,
            c2,
            per_pixel([m.scale for m in materials]),
            per_pixel([m.variation for m in materials]),
            per_pixel(salts, np.int32),
            extra,
        )


def albedo(
    mat: Material,
    s: np.ndarray,
    t: np.ndarray,
    noise: NoiseBank,
    style: Style,
    salt: int,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Linear-RGB albedo [3, N] float32 (planar) of `mat` at surface coordinates (s, t) [N]
    in metres; salt (the material's index) picks its noise tiles and hash streams.

    out: optional float32 [3, N] array (or view) to write into (saves a copy).
    """
    prm = MaterialParams.of([mat], [salt], style)
    return pattern_albedo(mat.pattern, s, t, prm, noise, style, out)


def pattern_albedo(
    p: str,
    s: np.ndarray,
    t: np.ndarray,
    prm: MaterialParams,
    noise: NoiseBank,
    style: Style,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Albedo [3, N] of pattern `p` at (s, t) [N] metres for materials `prm` (one or one per
    pixel): all surfaces that share a pattern are evaluated in one call.

    Every pattern is a per-pixel blend f1 · color + f2 · color2 of the material's two colours.
    """
    s = s.astype(np.float32, copy=False)
    t = t.astype(np.float32, copy=False)
    k = np.float32(style.pattern_contrast)
    var, scale, salt = prm.variation, prm.scale, prm.salt
    f2 = None
    if p in ("plain", "paint", "concrete", "fabric"):
        w = noise.noise(s, t, 0.6 if p != "concrete" else 0.3, k=salt)
        f1 = 1 + var * (2 * w - 1)
        if p == "fabric":
            f1 *= 1 + 0.08 * k * (_lines(s, 0.01, 0.004) - 0.5)
    elif p in ("tiles", "bricks"):
        h = scale
        if p == "tiles":
            w_cell, off = h, np.float32(0)
        else:
            w_cell = h * np.float32(3.4)
            off = fmod(np.floor(t / h), 2) * (np.float32(0.5) * w_cell)
        so = s + off
        i, j = np.floor(so / w_cell), np.floor(t / h)
        grout = np.maximum(_lines(so, w_cell, 0.012), _lines(t, h, 0.012))
        grout *= k
        f1 = (1 + 2 * var * (hash01(i, j, salt) - 0.5)) * (1 - grout)
        f2 = grout
    elif p == "planks":
        width = scale
        length = width * np.float32(6)
        row = np.floor(t / width)
        shift = hash01(row, row * 0, salt + 1) * length
        ss = s + shift
        col = np.floor(ss / length)
        grain = noise.noise(s * 0.05, t * 2.0, 0.02, k=salt + 1)
        seam = np.maximum(_lines(t, width, 0.006), _lines(ss, length, 0.006))
        f1 = (1 + 2 * var * (hash01(col, row, salt) - 0.5) + 0.15 * k * (grain - 0.5)) * (
            1 - 0.6 * k * seam
        )
    elif p == "stripes":
        f2 = (fmod(s, 2 * scale) < scale).astype(np.float32) * k
        f1 = 1 - f2
    elif p == "facade":
        f1, f2 = _facade(prm, s, t)
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
        tiled = scale > 0  # acoustic ceiling tiles
        if np.any(tiled):
            period = scale if np.all(tiled) else np.where(tiled, scale, np.float32(1))
            grid = np.maximum(_lines(s, period, 0.015), _lines(t, period, 0.015))
            if not np.all(tiled):
                grid *= tiled
            f1 *= 1 - 0.25 * k * grid
    else:  # pragma: no cover - Material validates the pattern
        raise ValueError(p)
    weather = _weather(s, t, noise, style, salt)
    if weather is not None:
        f1 = f1 * weather
        f2 = None if f2 is None else f2 * weather
    return _compose(prm.c1, f1, prm.c2, f2, out=out)


def _facade(prm: MaterialParams, s: np.ndarray, t: np.ndarray):
    """Building wall with a metric window grid: storeys every `scale` metres; extra =
    (window spacing, width, height, sill) metres."""
    floor_h, salt = prm.scale, prm.salt
    spacing, win_w, win_h, sill = prm.extra
    fs = fmod(s, spacing)
    ft = fmod(t, floor_h)
    storey = np.floor(t / floor_h)
    window = (np.abs(fs - spacing / 2) < win_w / 2) & (ft > sill) & (ft < sill + win_h)
    window = (window & (storey >= 0)).astype(np.float32)
    lit = hash01(np.floor(s / spacing), storey, salt)
    wall = 1 + prm.variation * (hash01(storey, storey * 0, salt + 3) - 0.5)
    ledge = 1 - 0.25 * ((ft < 0.12) & (storey > 0))
    return wall * (1 - window) * ledge, window * (0.6 + 0.8 * lit) * ledge


def _weather(s, t, noise: NoiseBank, style: Style, salt) -> np.ndarray | None:
    """Grime factor [N]: low-frequency albedo variation, one texture statistic that sets
    real_like apart from sim (the other: grain, added by the camera's sensor noise)."""
    if style.grime <= 0:
        return None
    if np.ndim(salt) == 0:
        offset = np.float32(3.1 * salt)
    else:
        offset = salt.astype(np.float32) * np.float32(3.1)
    g = noise.noise(s + offset, t, 1.2, k=salt)
    g *= np.float32(-style.grime)
    g += np.float32(1.0)
    return g


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


ASPHALT, PAVING, GRASS = 0, 1, 2  # ground parts
GROUND_SALTS = (7, 6, 5)  # noise / hash salt of each part's material


def ground_materials(layout: GroundLayout) -> tuple[Material, Material, Material]:
    """The materials of the ground parts (ASPHALT, PAVING, GRASS)."""
    return (
        Material("concrete", layout.asphalt, variation=0.25),
        Material("tiles", layout.paving, (0.2, 0.2, 0.2), scale=layout.tile, variation=0.12),
        Material("grass", layout.grass, layout.grass2),
    )


def ground_parts(layout: GroundLayout, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Ground part (ASPHALT, PAVING or GRASS) [...] int8 at world (x, y) [...] metres."""
    if layout.kind == "street":
        ay = np.abs(y)
        walk = (ay >= layout.road_half).view(np.int8)
        grass = (ay >= layout.road_half + layout.walk).view(np.int8)
        return walk + grass  # ASPHALT on the road, PAVING on the sidewalks, GRASS beyond
    if layout.kind == "plaza":
        paved = (x * x + y * y) < np.float32(layout.paved_radius**2)
        return np.where(paved, np.int8(PAVING), np.int8(GRASS))
    if layout.kind == "grid":
        half_block = np.float32(layout.block / 2)
        dx = np.abs(fmod(x + half_block, layout.block) - half_block)
        dy = np.abs(fmod(y + half_block, layout.block) - half_block)
        road = (dx < layout.road_half) | (dy < layout.road_half)
        return np.where(road, np.int8(ASPHALT), np.int8(GRASS))
    raise ValueError(f"unknown ground layout {layout.kind!r}")


def paint_road_markings(
    layout: GroundLayout, x: np.ndarray, y: np.ndarray, style: Style, alb: np.ndarray
) -> None:
    """Paint a street's dashed centre line and edge lines over the albedo `alb` [3, N] of
    asphalt points (x, y) [N]."""
    if layout.kind != "street":
        return
    period = np.float32(layout.dash + layout.gap)
    ay = np.abs(y)
    centre = (ay < 0.07) & (fmod(x, period) < layout.dash)
    edge = np.abs(ay - np.float32(layout.road_half - 0.35)) < 0.07
    lines = np.flatnonzero(centre | edge)
    if lines.size:
        alb[:, lines] = restyle_color((0.75, 0.75, 0.72), style)[:, None]


@dataclass(frozen=True)
class Sky:
    """Sky colours (linear RGB) and the sun direction (unit, world frame, z up)."""

    zenith: tuple[float, float, float]
    horizon: tuple[float, float, float]
    sun: tuple[float, float, float]
    sun_color: tuple[float, float, float] = (1.0, 0.95, 0.85)
    clouds: float = 0.0  # cloud cover in [0, 1]


def sky_radiance(sky: Sky, d: np.ndarray, noise: NoiseBank, style: Style) -> np.ndarray:
    """Linear radiance [3, N] (planar) of the sky along world directions d [3, N]."""
    dx, dy, dz = (a.astype(np.float32, copy=False) for a in d)
    w = np.sqrt(np.clip(dz, 0.0, 1.0))
    zen = restyle_color(sky.zenith, style)
    hor = restyle_color(sky.horizon, style)
    sx, sy, sz = (np.float32(v) for v in sky.sun)
    cos_sun = dx * sx + dy * sy + dz * sz
    glow = np.exp((cos_sun - 1) * np.float32(40.0)) * np.float32(0.6)
    glow += (cos_sun > 0.9995) * np.float32(4.0)
    sun_color = np.asarray(sky.sun_color, dtype=np.float32)
    out = np.empty((3, dz.shape[0]), dtype=np.float32)
    for ch in range(3):
        out[ch] = hor[ch] + (zen[ch] - hor[ch]) * w
        out[ch] += glow * sun_color[ch]
    if sky.clouds > 0:
        # Clouds painted on a plane 1 km up: they shrink towards the horizon like real ones.
        h = np.float32(1000.0) / np.maximum(dz, np.float32(0.03))
        c = noise.fbm(dx * h, dy * h, 800.0, octaves=3)
        cover = np.clip((c - np.float32(1 - sky.clouds)) * 3, 0, 1) * np.clip(dz * 8, 0, 1)
        out *= 1 - cover
        out += np.float32(0.9) * cover
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
    lighting: Lighting,
    style: Style,
    occlusion: np.ndarray | None = None,
) -> np.ndarray:
    """Outgoing linear radiance [3, N] of surface points p [3, N] (world, metres) with unit
    normals n [3, N] and albedo alb [3, N]; written into `alb`, which is returned."""
    kx, ky, kz = (np.float32(v) for v in lighting.key_dir)
    lambert = n[0] * kx
    lambert += n[1] * ky
    lambert += n[2] * kz
    np.maximum(lambert, 0, out=lambert)  # [N]
    key_col = np.asarray(lighting.key_color, dtype=np.float32)
    amb = np.float32(lighting.ambient)
    lambert *= 1 - amb
    if style.domain == "sim":
        for ch in range(3):
            alb[ch] *= amb + lambert * key_col[ch]
        return alb
    # real_like: hemispherical skylight, key light, point lights with 1/(d² + 1) falloff.
    sky_col = np.asarray(lighting.sky_color, dtype=np.float32)
    sky = (0.55 + 0.45 * n[2]) * amb
    extra = None
    if lighting.points:
        # With v = l - p: n·v = n·l - n·p and |v|² = |p|² - 2 p·l + |l|²; n·l and p·l of
        # every light come from two small matrix products, n·p and |p|² are shared.
        lights = np.asarray(lighting.points, dtype=np.float32)  # [L, 3]
        n_dot_l = lights @ n  # [L, N]
        p_dot_l = lights @ p
        n_dot_p = n[0] * p[0] + n[1] * p[1] + n[2] * p[2]
        p_dot_p = p[0] * p[0] + p[1] * p[1] + p[2] * p[2]
        extra = np.zeros(n.shape[1], dtype=np.float32)
        for nl, pl, l2 in zip(n_dot_l, p_dot_l, (lights * lights).sum(1), strict=True):
            d2 = pl
            d2 *= np.float32(-2.0)
            d2 += p_dot_p
            d2 += l2
            np.maximum(d2, 0, out=d2)
            cos = nl
            cos -= n_dot_p
            np.maximum(cos, 0, out=cos)
            # cos / (sqrt(d2) · (d2 + 1)): one division
            w = np.sqrt(d2 + np.float32(1e-6))
            d2 += np.float32(1.0)
            w *= d2
            cos /= w
            extra += cos
        extra *= np.float32(lighting.point_power)
    for ch in range(3):
        light = sky * sky_col[ch]
        light += lambert * key_col[ch]
        if extra is not None:
            light += extra
        if occlusion is not None:
            light *= occlusion
        alb[ch] *= light
    return alb


_SRGB_LUT_SIZE = 4096
_SRGB_LUT = np.round(
    255 * np.linspace(0, 1, _SRGB_LUT_SIZE, dtype=np.float64) ** (1 / GAMMA)
).astype(np.uint8)


def _encode_srgb(x: np.ndarray) -> np.ndarray:
    """Linear [0, 1] [..., W] float32 -> display uint8 through a lookup table (12-bit linear
    precision)."""
    flat = x.reshape(-1, x.shape[-1])
    y = flat * np.float32(_SRGB_LUT_SIZE - 1)
    return _encode_scaled(y, _SRGB_LUT).reshape(x.shape)


SHOULDER_MAX = 4.0  # linear values above this all encode to white
SHOULDER_LUT_SIZE = 16384


def _shoulder_lut(knee: float) -> np.ndarray:
    """uint8 [SHOULDER_LUT_SIZE] over linear [0, SHOULDER_MAX]: linear up to `knee`, then an
    exponential roll-off towards 1, then the display gamma (float32 with OpenCV's exp and
    pow: a few times cheaper than numpy's float64, same table)."""
    v = np.linspace(0.0, SHOULDER_MAX, SHOULDER_LUT_SIZE, dtype=np.float32)
    k = np.float32(knee)
    rolled = cv2.exp((k - v) * np.float32(1 / (1 - knee))).reshape(-1)
    rolled = k + (1 - k) * (1 - rolled)
    x = np.where(v > k, rolled, v)
    np.clip(x, 0, 1, out=x)
    y = cv2.pow(x, 1 / GAMMA).reshape(-1)
    y *= np.float32(255)
    y += np.float32(0.5)
    return y.astype(np.uint8)


@functools.lru_cache(maxsize=4)
def _zero_map(shape: tuple[int, ...]) -> np.ndarray:
    zeros = np.zeros(shape, dtype=np.float32)
    zeros.setflags(write=False)
    return zeros


def _encode_scaled(y: np.ndarray, lut: np.ndarray) -> np.ndarray:
    """uint8 lut[round(y)] of lookup indices y [H, W] float32 (x · (len(lut) - 1) / top for
    linear values x in [0, top], computed by the caller), clamped to the table: a nearest-
    neighbour cv2.remap into the table, about half the cost of clip + cast + np.take."""
    return cv2.remap(lut.reshape(1, -1), y, _zero_map(y.shape), cv2.INTER_NEAREST,
                     borderMode=cv2.BORDER_REPLICATE)  # fmt: skip


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
    """Gaussian blur of [H, W, C] that wraps across the ERP seam (columns) and reflects at
    the poles; the kernel spans ±3 sigma."""
    pad = math.ceil(3 * sigma)
    padded = cv2.copyMakeBorder(img, 0, 0, pad, pad, cv2.BORDER_WRAP)
    size = 2 * pad + 1
    out = cv2.GaussianBlur(padded, (size, size), sigma, borderType=cv2.BORDER_REFLECT)
    return out[:, pad:-pad]


_IMREAD_RGB = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes to RGB itself


def _jpeg_round_trip(rgb: np.ndarray, quality: int) -> np.ndarray:
    """uint8 RGB [H, W, 3] after JPEG compression at `quality` (OpenCV's libjpeg)."""
    bgr = cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR)  # contiguous: far cheaper to encode than a view
    ok, buf = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:  # pragma: no cover - OpenCV always encodes a valid uint8 image
        raise RuntimeError("JPEG encoding failed")
    if _IMREAD_RGB is not None:
        return cv2.imdecode(buf, _IMREAD_RGB)
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


def camera_pipeline(
    radiance: np.ndarray, lon: np.ndarray, style: Style, rng: np.random.Generator
) -> np.ndarray:
    """Linear radiance [3, H, W] (planar RGB) -> uint8 RGB [H, W, 3] as the domain's camera
    records it. May overwrite `radiance`.

    lon: longitude of each column [W] (camera frame), used for the dual-fisheye effects.
    """
    if style.domain == "sim":
        return cv2.merge(list(_encode_srgb(radiance)))
    # Auto-exposure on the mean log luminance (as a camera meters), then an exposure error of
    # up to ±0.8 EV and a white-balance error: one gain per channel.
    r, g, b = (plane[::4, ::4] for plane in radiance)
    sub = np.float32(0.2126) * r + np.float32(0.7152) * g + np.float32(0.0722) * b
    key = float(np.exp(np.mean(np.log(np.maximum(sub, 1e-4)))))
    target = AUTO_EXPOSURE_KEY * 2.0 ** rng.uniform(-0.8, 0.8)
    gain = (target / max(key, 1e-4)) * rng.uniform(0.85, 1.15, 3)
    # Dual fisheye (lenses along ±x): vignetting towards the stitch at lon = ±90°, and a small
    # exposure step between the two lenses' halves.
    cos_axis = np.abs(np.cos(lon))  # [W], 1 on a lens axis
    vignette = 1 - rng.uniform(0.1, 0.3) * (1 - cos_axis) ** 2
    step = 1 + rng.uniform(-0.08, 0.08) * (np.cos(lon) < 0)
    columns = (vignette * step).astype(np.float32)
    for plane, k in zip(radiance, gain.astype(np.float32), strict=True):
        plane *= columns * k  # [H, W] *= [W]: one pass
    img = cv2.merge(list(radiance))  # [H, W, 3] from here on
    # Optics blur before the sensor (radiance >= 0, so the blurred image is too).
    img = _blur_wrapped(img, float(rng.uniform(0.5, 1.3)))
    # Shot and read noise (linear units of full scale), then the display encoding: the
    # noisy value x = img + sigma · n is formed directly in lookup-index units,
    # y = x · scale with sigma · scale = sqrt(img · shot · scale² + (read · scale)²),
    # in four OpenCV passes (each one pass over the image; numpy would need two).
    shot, read = float(rng.uniform(3e-4, 3e-3)), float(rng.uniform(1e-3, 5e-3))
    scale = (SHOULDER_LUT_SIZE - 1) / SHOULDER_MAX
    flat = img.reshape(img.shape[0], -1)  # one channel: OpenCV scalars fill channel 0 only
    sigma = cv2.addWeighted(flat, shot * scale * scale, flat, 0.0, (read * scale) ** 2)
    cv2.sqrt(sigma, dst=sigma)
    sigma *= _sensor_noise(sigma.shape, rng)
    y = cv2.addWeighted(flat, scale, sigma, 1.0, 0.0)
    knee = float(rng.uniform(0.55, 0.8))
    out = _encode_scaled(y, _shoulder_lut(knee)).reshape(img.shape)
    return _jpeg_round_trip(out, int(rng.integers(35, 85)))


SKY_RANGE_M = 1e6  # the range haze gives the sky


def haze_hides_sky(lighting: Lighting, style: Style) -> bool:
    """True when `apply_haze` replaces the sky by the haze colour exactly (its haze fraction
    rounds to 1 in float32): the sky's own radiance need not be computed."""
    if style.domain == "sim" or lighting.haze_m <= 0:
        return False
    return float(np.exp(np.float32(-SKY_RANGE_M / lighting.haze_m))) == 0.0


def apply_haze(
    radiance: np.ndarray, range_m: np.ndarray, lighting: Lighting, style: Style
) -> np.ndarray:
    """Blend radiance [3, H, W] (in place) towards the haze colour with distance (real_like
    outdoors); sky counts as far. range_m [H, W] metres."""
    if style.domain == "sim" or lighting.haze_m <= 0:
        return radiance
    r = np.minimum(range_m, np.float32(SKY_RANGE_M))
    r *= np.float32(-1.0 / lighting.haze_m)
    f = 1 - cv2.exp(r)  # [H, W] haze fraction
    haze = restyle_color(lighting.haze_color, style)
    for plane, h in zip(radiance, haze, strict=True):
        plane -= (plane - h) * f
    return radiance
