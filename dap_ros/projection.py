"""From a predicted range map to what the node publishes: REP 117 range image, cloud, scan.

Pure numpy + OpenCV (no ROS), so each step is unit-tested alone and timed in
bench/bench_node_host.py. Frame: REP 103 panorama frame (x forward, y left, z up). The ray of
pixel (v, u) is (cos φ_v cos λ_u, cos φ_v sin λ_u, sin φ_v) (`dap_core.geometry.pixel_rays`);
it factors into a row part and a column part, so a point costs a few multiplies by cached
row and column vectors instead of reading three full-size ray planes every frame.
Units: metres. Special values follow REP 117: +inf = no return (sky, beyond the selected
range mask or `max_range`), −inf = closer than `min_range`, NaN = invalid.

Every builder takes `out=` (write into a caller's buffer, e.g. a message kept between frames)
and a `Workspace` of scratch arrays, so that a frame allocates nothing at full resolution.
Masked writes use np.copyto(where=), about 4x faster than np.putmask on the same mask.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from dap_core.geometry import pixel_lonlat, rays_to_pixel
from dap_core.prediction import MASK_DECISION, Prediction
from dap_ros.mount import LEVEL, Mount, level_rays

__all__ = [
    "CLOUD_POINT_STEP",
    "HorizonTaps",
    "RayGrid",
    "ScanLayout",
    "Workspace",
    "build_cloud",
    "build_scan",
    "horizon_range",
    "horizon_taps",
    "range_image",
    "ray_grid",
    "scan_layout",
    "within_mask",
]

CLOUD_POINT_STEP = 16  # bytes per point: x, y, z float32 and packed 0x00RRGGBB rgb
# RViz's RGB8 reads 0x00RRGGBB; an 0xFF alpha byte would also turn the float field into a NaN.
_RGB_BITS = np.uint32(0x00FFFFFF)
_RECORD = np.dtype((np.void, CLOUD_POINT_STEP))
# Rows per block of the cloud: its scratch planes (a few x 256 KB at 1024 columns) stay in the
# L2 cache between the multiplies and the interleave, which halves the memory traffic.
_BLOCK_FLOATS = 1 << 16


class Workspace:
    """Scratch arrays kept between frames, by name; reallocated only when the shape changes.

    One per thread: the node's worker owns one, so a frame allocates nothing at full size.
    """

    def __init__(self) -> None:
        self._arrays: dict[str, np.ndarray] = {}

    def get(self, name: str, shape: tuple[int, ...], dtype=np.float32) -> np.ndarray:
        array = self._arrays.get(name)
        if array is None or array.shape != shape or array.dtype != dtype:
            array = self._arrays[name] = np.empty(shape, dtype)
        return array


@dataclass(frozen=True)
class RayGrid:
    """Ray factors of an ERP grid sampled every `stride` pixels (pixel centres of the full image).

    cos_lat, sin_lat: float32 [h, 1] per row; cos_lon, sin_lon: float32 [1, w] per column.
    The ray of (v, u) is (cos_lat[v] cos_lon[u], cos_lat[v] sin_lon[u], sin_lat[v]).
    """

    height: int
    width: int
    stride: int
    cos_lat: np.ndarray
    sin_lat: np.ndarray
    cos_lon: np.ndarray
    sin_lon: np.ndarray

    def rays(self) -> np.ndarray:
        """float32 [h, w, 3] unit rays (for checks; the builders use the factors)."""
        shape = (self.cos_lat.shape[0], self.cos_lon.shape[1])
        return np.stack(
            [
                self.cos_lat * self.cos_lon,
                self.cos_lat * self.sin_lon,
                np.broadcast_to(self.sin_lat, shape),
            ],
            axis=-1,
        )


@functools.lru_cache(maxsize=8)
def ray_grid(height: int, width: int, stride: int = 1) -> RayGrid:
    """Cached ray factors of an H x W panorama at `stride` (from `dap_core.geometry`)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    lon, lat = (t.double().numpy() for t in pixel_lonlat(height, width))
    lon, lat = lon[::stride], lat[::stride]
    factors = [
        np.cos(lat).astype(np.float32)[:, None],
        np.sin(lat).astype(np.float32)[:, None],
        np.cos(lon).astype(np.float32)[None, :],
        np.sin(lon).astype(np.float32)[None, :],
    ]
    for array in factors:
        array.setflags(write=False)  # shared by every frame: nobody may scribble on it
    return RayGrid(height, width, stride, *factors)


def within_mask(prediction: Prediction, threshold_m: int, out: np.ndarray | None = None):
    """Pixels the model places within `threshold_m` metres: bool [H, W].

    Same rule as `Prediction.within` (the head's probability >= MASK_DECISION when that head
    ran, else the range itself), written into `out` when given.
    """
    probability = prediction.masks.get(threshold_m)
    if probability is not None:
        return np.greater_equal(probability, MASK_DECISION, out=out)
    return np.less_equal(prediction.range_m, threshold_m, out=out)


def range_image(
    range_m: np.ndarray,
    within: np.ndarray | None,
    min_range: float = 0.0,
    max_range: float = math.inf,
    *,
    out: np.ndarray | None = None,
    workspace: Workspace | None = None,
) -> np.ndarray:
    """The published range image, REP 117 coded, in one pass of masks.

    range_m: float32 [H, W] metres (model output); within: bool [H, W] pixels inside the
    selected range mask (None: no mask). Returns float32 [H, W] (`out` when given):
    NaN where `range_m` is NaN or negative (not a measurement); else +inf outside the mask or
    beyond `max_range` (no return); else −inf closer than `min_range`; else `range_m`.
    """
    ws = workspace or Workspace()
    range_m = np.asarray(range_m, dtype=np.float32)
    if out is None:
        out = range_m.copy()
    else:
        np.copyto(out, range_m)
    no_return = None
    if within is not None:
        no_return = np.logical_not(within, out=ws.get("no_return", range_m.shape, bool))
    if max_range < math.inf:
        beyond = np.greater(range_m, max_range, out=ws.get("beyond", range_m.shape, bool))
        no_return = beyond if no_return is None else np.logical_or(no_return, beyond, out=beyond)
    if no_return is not None:
        np.copyto(out, np.float32(np.inf), where=no_return)
    if min_range > 0.0:
        too_close = np.less(out, min_range, out=ws.get("too_close", range_m.shape, bool))
        np.copyto(out, np.float32(-np.inf), where=too_close)
    if not range_m.min(initial=0.0) >= 0.0:  # one cheap pass: NaN or negative values present
        np.copyto(out, np.float32(np.nan), where=~(range_m >= 0.0))
    return out


def _colour_bits(rgb: np.ndarray, stride: int, ws: Workspace) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> packed 0x00RRGGBB of every stride-th pixel, [h, w] float32 bits."""
    bgra = ws.get("bgra", (*rgb.shape[:2], 4), np.uint8)
    # Converting the whole image and then striding the 4-byte words is ~5x faster than
    # gathering strided 3-byte pixels first. Little-endian B,G,R,A words read 0xAARRGGBB.
    cv2.cvtColor(np.ascontiguousarray(rgb), cv2.COLOR_RGB2BGRA, dst=bgra)
    words = bgra.view(np.uint32)[::stride, ::stride, 0]
    packed = ws.get("rgb_bits", words.shape, np.uint32)
    np.bitwise_and(words, _RGB_BITS, out=packed)
    return packed.view(np.float32)


def build_cloud(
    range_img: np.ndarray,
    rgb: np.ndarray | None,
    stride: int,
    min_height: float,
    max_height: float,
    organized: bool,
    *,
    clearing_range: float = 0.0,
    out: np.ndarray | None = None,
    workspace: Workspace | None = None,
    mount: Mount = LEVEL,
    in_level_frame: bool = False,
) -> np.ndarray:
    """Points of a REP 117 range image as PointCloud2 records.

    mount: the camera's pose in the levelled frame; the height band is z of that frame.
    in_level_frame: points are given in the levelled frame (rotated and shifted by the
    mount) instead of the panorama frame.

    range_img: float32 [H, W] from `range_image` (non-finite = no point); rgb: uint8 [H, W, 3]
    or None (rgb field 0); points are kept where z (metres, panorama frame) lies in
    [min_height, max_height].
    clearing_range > 0: a no-return pixel (+inf) becomes a point at that range on its ray
    instead of no point. Nav2's obstacle and voxel layers clear free space only by tracing rays
    to cloud points (they ignore +inf and NaN in clouds: `inf_is_valid` is for scans), so
    without these points open space seen by the camera is never cleared. −inf (too close) and
    NaN (invalid) stay no point: nothing may be cleared there.
    Returns float32 [h, w, 4] (x, y, z, rgb bits) for an organized cloud, with NaN x/y/z where
    there is no point (h = ceil(H/stride)), written into `out` (contiguous float32 [h, w, 4])
    when given; or [1, n, 4] holding only the n kept points when not organized.
    """
    ws = workspace or Workspace()
    height, width = range_img.shape
    rays = ray_grid(height, width, stride)
    r = range_img[::stride, ::stride]  # [h, w]
    h, w = r.shape
    if out is None or not organized:
        out = ws.get("cloud", (h, w, 4))
    elif out.shape != (h, w, 4) or out.dtype != np.float32 or not out.flags.c_contiguous:
        raise ValueError(f"out must be contiguous float32 {(h, w, 4)}, got {out.dtype} {out.shape}")
    # r - r is 0 for a finite range and NaN for ±inf / NaN: r + (r - r) turns "no point" into
    # NaN without a branch per pixel (NaN points are what PointCloud2 consumers skip).
    kept_r = ws.get("kept_r", (h, w))
    with np.errstate(invalid="ignore"):
        np.subtract(r, r, out=kept_r)
    np.add(kept_r, r, out=kept_r)
    if clearing_range > 0.0:
        no_return = np.equal(r, np.float32(np.inf), out=ws.get("no_return_pts", (h, w), bool))
        np.copyto(kept_r, np.float32(clearing_range), where=no_return)
    lrays = None if mount == LEVEL else level_rays(height, width, stride, mount)
    if min_height > -math.inf or max_height < math.inf:
        # |z - height| <= r, so the band cuts nothing when it holds height ± (farthest point):
        # the usual case (default band ±100 m, ranges up to 100 m) costs one reduction.
        farthest = float(np.fmax.reduce(kept_r, axis=None))  # NaN (no point) ignored
        low, high = min_height - mount.height, max_height - mount.height
        if not (low <= -farthest and farthest <= high):
            z_factor = rays.sin_lat if lrays is None else lrays.z  # z above the camera / r
            z = np.multiply(kept_r, z_factor, out=ws.get("z_full", (h, w)))
            with np.errstate(invalid="ignore"):
                outside = np.less(z, low, out=ws.get("below", (h, w), bool))
                outside |= np.greater(z, high, out=ws.get("above", (h, w), bool))
            np.copyto(kept_r, np.float32(np.nan), where=outside)
    colour = None
    if rgb is not None:
        if rgb.shape != (height, width, 3) or rgb.dtype != np.uint8:
            raise ValueError(f"rgb must be uint8 {(height, width, 3)}, got {rgb.dtype} {rgb.shape}")
        colour = _colour_bits(rgb, stride, ws)
    block = max(1, _BLOCK_FLOATS // max(w, 1))
    planes = [ws.get(name, (block, w)) for name in ("horizontal", "x", "y", "z")]
    if colour is None:
        colour = ws.get("no_colour", (h, w))
        colour.fill(0.0)
    for top in range(0, h, block):
        rows = slice(top, min(top + block, h))
        n = rows.stop - rows.start
        horizontal, x, y, z = (plane[:n] for plane in planes)
        k = kept_r[rows]
        if in_level_frame and lrays is not None:
            for plane, factor, offset in zip(
                (x, y, z), (lrays.x, lrays.y, lrays.z), mount.translation, strict=True
            ):
                np.multiply(k, factor[rows], out=plane)
                plane += np.float32(offset)
        else:
            np.multiply(k, rays.cos_lat[rows], out=horizontal)
            np.multiply(horizontal, rays.cos_lon, out=x)
            np.multiply(horizontal, rays.sin_lon, out=y)
            np.multiply(k, rays.sin_lat[rows], out=z)
        # cv2.merge interleaves four planes about 5x faster than numpy's strided writes.
        cv2.merge([x, y, z, colour[rows]], dst=out[rows])
    if organized:
        return out
    # Gathering whole 16-byte records by index is several times faster than boolean indexing.
    keep = np.flatnonzero(np.isfinite(kept_r))
    records = out.reshape(-1, 4).view(_RECORD).ravel()
    return records.take(keep).view(np.float32).reshape(1, -1, 4)  # [1, n, 4]


@dataclass(frozen=True)
class ScanLayout:
    """Beams of the 360° scan: beam b spans azimuths [−π + 2πb/B, −π + 2π(b+1)/B).

    angle_min / angle_increment follow sensor_msgs/LaserScan (counter-clockwise from −π, the
    beam centre); column_starts: first image column (counted right to left) of each beam.
    """

    beams: int
    angle_min: float
    angle_increment: float
    column_starts: np.ndarray

    @property
    def angle_max(self) -> float:
        return self.angle_min + (self.beams - 1) * self.angle_increment


@functools.lru_cache(maxsize=8)
def scan_layout(width: int, beams: int) -> ScanLayout:
    """Which panorama columns feed which beam, for `beams` <= `width` equal azimuth sectors."""
    if not 1 <= beams <= width:
        raise ValueError(f"scan beams must be in [1, image width {width}], got {beams}")
    # Column u' (counted from the right edge) looks at azimuth −π + π(2u' + 1)/W, so it belongs to
    # beam floor(B (u' + ½) / W); the first column of beam b is ceil(b W / B − ½). Every beam gets
    # at least one column because its sector is at least one column wide.
    b = np.arange(beams, dtype=np.int64)
    starts = -((beams - 2 * b * width) // (2 * beams))  # ceil((2 b W − B) / 2B)
    starts.setflags(write=False)
    increment = 2.0 * math.pi / beams
    return ScanLayout(beams, -math.pi + increment / 2.0, increment, starts)


def build_scan(
    range_m: np.ndarray,
    beams: int,
    min_height: float,
    max_height: float,
    range_min: float,
    range_max: float,
    within: np.ndarray | None = None,
    *,
    mount: Mount = LEVEL,
) -> tuple[np.ndarray, ScanLayout]:
    """A 360° LaserScan in the levelled frame: what a planar lidar at the camera would see.

    range_m: float32 [H, W] metres straight from the model (or a REP 117 range image: +inf
    and NaN are no point); within: bool [H, W] range mask (None: every pixel), pixels outside
    are no point. mount: the camera's pose in the levelled frame (`dap_ros.mount`); heights
    are z of that frame, and beams turn about its z axis through its origin.

    Each beam reports the smallest horizontal distance of
    - the horizon: the range along the levelled frame's horizontal plane through the camera
      (elevation 0), sampled between the pixels that straddle it (`horizon_range`), whenever
      the band holds the camera's height. This is the lidar's own plane: without it a far
      wall, whose nearest rows lie above and below a narrow band (at 512x256 the rows next
      to the horizon are ±0.35° off it, so beyond ~33 m for a ±0.2 m band), would read +inf;
    - and the points with z in [min_height, max_height] (nearer obstacles above and below
      the plane), like pointcloud_to_laserscan.
    REP 117: +inf when no point (or only points beyond `range_max`), −inf when the nearest
    point is closer than `range_min`; negative or NaN ranges are no point. Returns
    (float32 [beams], layout).

    +inf, not "range_max + something", is the no-return value because it is what consumers act
    on: Nav2's obstacle layer with `inf_is_valid: true` turns +inf beams into range_max and
    clears free space along them, and pointcloud_to_laserscan (use_inf) writes the same value;
    laser_geometry drops finite readings above range_max, which would then clear nothing.
    """
    width = range_m.shape[1]
    layout = scan_layout(width, beams)
    horizon = None
    if min_height <= mount.height <= max_height:
        horizon = horizon_range(range_m, within, mount)  # [W] along levelled azimuths
    if mount.upright:
        ranges = _upright_scan(range_m, within, layout, min_height, max_height, mount, horizon)
    else:
        ranges = _mounted_scan(range_m, within, layout, min_height, max_height, mount, horizon)
    ranges[ranges > range_max] = np.inf
    ranges[ranges < range_min] = -np.inf
    return ranges, layout


def _rows_reaching_band(
    range_m: np.ndarray, sin_lat: np.ndarray, min_height: float, max_height: float
) -> np.ndarray:
    """Indices of rows that may hold a point with z in [min_height, max_height].

    Along a row above the horizon z = r sin(lat) grows with r, so the row's nearest point has
    its lowest z: when even that is above max_height, no point is in the band (mirrored below
    the horizon). Exact, and it skips most rows: only those near the horizon remain.
    """
    nearest = np.fmin.reduce(range_m, axis=1)  # NaN ignored; all-NaN rows give NaN (kept)
    z_nearest = nearest * sin_lat
    above = (sin_lat > 0) & (z_nearest > max_height)
    below = (sin_lat < 0) & (z_nearest < min_height)
    return np.flatnonzero(~(above | below))


def _upright_scan(range_m, within, layout, min_height, max_height, mount, horizon) -> np.ndarray:
    """Level camera on the frame's z axis: columns are azimuths, z = r sin(lat) + height."""
    height, width = range_m.shape
    rays = ray_grid(height, width, 1)
    low, high = min_height - mount.height, max_height - mount.height  # in the camera's z
    rows = _rows_reaching_band(range_m, rays.sin_lat[:, 0], low, high)
    r = range_m[rows]  # [h', W]: usually a few rows around the horizon
    with np.errstate(invalid="ignore"):
        z = r * rays.sin_lat[rows]  # a point's height above the camera is r sin(lat)
        valid = (z >= low) & (z <= high) & (r >= 0.0)  # False for NaN and ±inf
    if within is not None:
        valid &= within[rows]
    horizontal = np.where(valid, r * rays.cos_lat[rows], np.float32(np.inf))
    nearest = horizontal.min(axis=0, initial=np.inf)
    if horizon is not None:
        np.minimum(nearest, horizon, out=nearest)  # the horizon samples are columns here
    return np.minimum.reduceat(nearest[::-1], layout.column_starts).astype(np.float32)


def _mounted_scan(range_m, within, layout, min_height, max_height, mount, horizon) -> np.ndarray:
    """Tilted or offset camera: every pixel's point in the levelled frame, binned by azimuth."""
    height, width = range_m.shape
    rays = level_rays(height, width, 1, mount)
    tx, ty, tz = mount.translation
    with np.errstate(invalid="ignore"):
        z = range_m * rays.z + np.float32(tz)
        valid = (z >= min_height) & (z <= max_height) & (range_m >= 0.0)
        valid &= np.isfinite(range_m)
    if within is not None:
        valid &= within
    index = np.flatnonzero(valid)
    r = range_m.ravel()[index]
    xs = [r * rays.x.ravel()[index] + np.float32(tx)]
    ys = [r * rays.y.ravel()[index] + np.float32(ty)]
    if horizon is not None:
        seen = np.isfinite(horizon)
        lon = _column_lon(width)[seen]
        xs.append(horizon[seen] * np.cos(lon) + tx)
        ys.append(horizon[seen] * np.sin(lon) + ty)
    x = np.concatenate(xs).astype(np.float64)
    y = np.concatenate(ys).astype(np.float64)
    beam = np.floor((np.arctan2(y, x) + math.pi) / (2.0 * math.pi) * layout.beams).astype(np.int64)
    beam %= layout.beams  # atan2 = π exactly belongs to the first beam (−π)
    ranges = np.full(layout.beams, np.inf)
    np.minimum.at(ranges, beam, np.hypot(x, y))
    return ranges.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _column_lon(width: int) -> np.ndarray:
    lon = pixel_lonlat(2, width, dtype=torch.float64)[0].numpy()
    lon.setflags(write=False)
    return lon


@dataclass(frozen=True)
class HorizonTaps:
    """Where the levelled frame's horizon crosses an ERP image: one sample per azimuth.

    Sample k looks along levelled azimuth lon(k) (the ERP column longitudes), elevation 0.
    index: int64 [W, 4] flat pixel indices of its bilinear neighbours; weight: float32 [W, 4]
    (0 for a neighbour that does not contribute).
    """

    index: np.ndarray
    weight: np.ndarray


_TAP_SNAP = 1e-6  # fractional pixel offsets this close to 0 or 1 are exact (float rounding)


@functools.lru_cache(maxsize=8)
def horizon_taps(height: int, width: int, mount: Mount = LEVEL) -> HorizonTaps:
    """Bilinear taps of the horizon samples of an H x W camera ERP under `mount` (cached)."""
    lon = _column_lon(width)
    level = np.stack([np.cos(lon), np.sin(lon), np.zeros_like(lon)], axis=-1)  # [W, 3]
    camera = level @ mount.matrix  # R^T applied to each row: levelled -> camera frame
    uv = rays_to_pixel(camera, height, width)  # [W, 2], centres at k + 0.5
    x, y = uv[:, 0] - 0.5, uv[:, 1] - 0.5
    x0, y0 = np.floor(x), np.floor(y)
    fx, fy = x - x0, y - y0
    for frac, base in ((fx, x0), (fy, y0)):
        base[frac > 1.0 - _TAP_SNAP] += 1.0
        frac[(frac < _TAP_SNAP) | (frac > 1.0 - _TAP_SNAP)] = 0.0
    u0 = x0.astype(np.int64) % width
    u1 = (u0 + 1) % width  # columns wrap around the seam
    v0 = np.clip(y0.astype(np.int64), 0, height - 1)  # rows clamp at the poles
    v1 = np.clip(v0 + 1, 0, height - 1)
    index = np.stack([v0 * width + u0, v0 * width + u1, v1 * width + u0, v1 * width + u1], -1)
    weight = np.stack([(1 - fx) * (1 - fy), fx * (1 - fy), (1 - fx) * fy, fx * fy], -1)
    taps = HorizonTaps(index, weight.astype(np.float32))
    for array in (taps.index, taps.weight):
        array.setflags(write=False)
    return taps


def horizon_range(
    range_m: np.ndarray, within: np.ndarray | None = None, mount: Mount = LEVEL
) -> np.ndarray:
    """Range along the levelled horizon, one sample per ERP column azimuth: float32 [W].

    A sample interpolates its neighbour pixels (the two rows that straddle elevation 0 for a
    level camera) when all of them are returns; when some are not (sky, NaN, outside the
    range mask) it takes the nearest return among them, because a return next to the horizon
    is evidence of an obstacle there and a scan must not clear it; with none, +inf.
    """
    height, width = range_m.shape
    taps = horizon_taps(height, width, mount)
    values = range_m.ravel()[taps.index]  # [W, 4]
    with np.errstate(invalid="ignore"):
        returns = np.isfinite(values) & (values >= 0.0)
    if within is not None:
        returns &= within.ravel()[taps.index]
    used = taps.weight > 0.0
    values = np.where(returns, values, np.float32(np.inf))
    nearest = np.where(used, values, np.float32(np.inf)).min(axis=1)
    complete = (returns | ~used).all(axis=1)
    blended = (np.where(used, values, 0.0) * taps.weight).sum(axis=1, dtype=np.float32)
    return np.where(complete, blended, nearest).astype(np.float32)
