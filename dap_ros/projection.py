"""From a predicted range map to what the node publishes: REP 117 range image, cloud, scan.

Pure numpy (no ROS), so each step is unit-tested alone and timed in bench/bench_node_host.py.
Frame: REP 103 panorama frame (x forward, y left, z up); every ray comes from
`dap_core.geometry.pixel_rays` and is cached per (H, W, stride), so per-frame work is a few
multiplies. Units: metres. Special values follow REP 117: +inf = no return (sky, beyond the
selected range mask or `max_range`), −inf = closer than `min_range`, NaN = invalid.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from dap_core.geometry import pixel_rays

__all__ = [
    "CLOUD_POINT_STEP",
    "RayGrid",
    "ScanLayout",
    "build_cloud",
    "build_scan",
    "limit_range",
    "range_image",
    "ray_grid",
    "scan_layout",
]

CLOUD_POINT_STEP = 16  # bytes per point: x, y, z float32 and packed 0x00RRGGBB rgb
# RViz's RGB8 reads 0x00RRGGBB; an 0xFF alpha byte would also turn the float field into a NaN.
_RGB_BITS = np.uint32(0x00FFFFFF)
_RECORD = np.dtype((np.void, CLOUD_POINT_STEP))


@dataclass(frozen=True)
class RayGrid:
    """Unit rays of an ERP grid sampled every `stride` pixels (pixel centres of the full image).

    x, y, z: float32 [h, w] components (separate contiguous planes: a multiply per plane is the
    fastest layout); cos_lat, sin_lat: float32 [h, 1] per row (horizontal / vertical part).
    """

    height: int
    width: int
    stride: int
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    cos_lat: np.ndarray
    sin_lat: np.ndarray


@functools.lru_cache(maxsize=8)
def ray_grid(height: int, width: int, stride: int = 1) -> RayGrid:
    """Cached rays of an H x W panorama at `stride` (from `dap_core.geometry.pixel_rays`)."""
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    rays = pixel_rays(height, width).numpy()[::stride, ::stride]  # [h, w, 3]
    planes = [np.ascontiguousarray(rays[..., k]) for k in range(3)]
    cos_lat = np.hypot(planes[0][:, :1], planes[1][:, :1]).astype(np.float32)  # [h, 1]
    sin_lat = np.ascontiguousarray(planes[2][:, :1])  # [h, 1]
    for array in (*planes, cos_lat, sin_lat):
        array.setflags(write=False)  # shared by every frame: nobody may scribble on it
    return RayGrid(height, width, stride, *planes, cos_lat, sin_lat)


def range_image(range_m: np.ndarray, within: np.ndarray | None) -> np.ndarray:
    """Range gated by a range mask, REP 117 style.

    range_m: float32 [H, W] metres (model output); within: bool [H, W] pixels inside the
    selected range mask, or None for no mask. Returns a new float32 [H, W]: +inf outside the
    mask, NaN where `range_m` is NaN or negative (not a measurement), `range_m` elsewhere.
    """
    range_m = np.asarray(range_m, dtype=np.float32)
    out = range_m.copy() if within is None else np.where(within, range_m, np.float32(np.inf))
    if not range_m.min(initial=0.0) >= 0.0:  # one cheap pass: NaN or negative values present
        np.putmask(out, ~(range_m >= 0.0), np.float32(np.nan))
    return out


def limit_range(gated: np.ndarray, min_range: float, max_range: float) -> np.ndarray:
    """REP 117 range limits: −inf closer than `min_range`, +inf beyond `max_range` (metres).

    gated: float32 [H, W] from `range_image`. Returns `gated` itself when neither limit cuts
    anything (min_range <= 0, max_range = inf), otherwise a new array.
    """
    if min_range <= 0.0 and max_range == math.inf:
        return gated
    out = np.where(gated > max_range, np.float32(np.inf), gated)
    if min_range > 0.0:
        np.putmask(out, out < min_range, np.float32(-np.inf))
    return out


def build_cloud(
    range_img: np.ndarray,
    rgb: np.ndarray | None,
    stride: int,
    min_height: float,
    max_height: float,
    organized: bool,
) -> np.ndarray:
    """Points of a REP 117 range image as PointCloud2 records.

    range_img: float32 [H, W] from `limit_range` (non-finite = no point); rgb: uint8 [H, W, 3]
    or None (rgb field 0); points are kept where z (metres, panorama frame) lies in
    [min_height, max_height]. Returns float32 [h, w, 4] (x, y, z, rgb bits) for an organized
    cloud, with NaN x/y/z where there is no point (h = ceil(H/stride)); or [1, n, 4] holding only
    the n kept points when not organized.
    """
    height, width = range_img.shape
    rays = ray_grid(height, width, stride)
    r = range_img[::stride, ::stride]  # [h, w]
    z = np.multiply(rays.z, r)  # inf * ray is ±inf or NaN: both fail the band test below
    keep = (z >= min_height) & (z <= max_height) & np.isfinite(r)
    r_kept = np.where(keep, r, np.float32(np.nan))
    if rgb is None:
        colour = np.zeros(r.shape, dtype=np.float32)
    else:
        bgra = cv2.cvtColor(np.ascontiguousarray(rgb[::stride, ::stride]), cv2.COLOR_RGB2BGRA)
        packed = bgra.view(np.uint32)[..., 0]  # little-endian bytes B,G,R,A -> 0xAARRGGBB
        packed &= _RGB_BITS
        colour = packed.view(np.float32)
    # cv2.merge interleaves four planes about 5x faster than numpy's strided writes.
    cloud = cv2.merge(
        [
            np.multiply(rays.x, r_kept),
            np.multiply(rays.y, r_kept),
            np.multiply(rays.z, r_kept),
            colour,
        ]
    )  # [h, w, 4]
    if organized:
        return cloud
    # Gathering whole 16-byte records by index is several times faster than boolean indexing.
    records = cloud.reshape(-1, 4).view(_RECORD).ravel()
    return records.take(np.flatnonzero(keep)).view(np.float32).reshape(1, -1, 4)  # [1, n, 4]


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
    gated_range: np.ndarray,
    beams: int,
    min_height: float,
    max_height: float,
    range_min: float,
    range_max: float,
) -> tuple[np.ndarray, ScanLayout]:
    """A 360° LaserScan from the points of a panorama inside a height band.

    gated_range: float32 [H, W] metres, +inf outside the range mask, NaN invalid (not yet cut at
    min/max range, so that too-close points are still seen). Each beam reports the smallest
    horizontal distance hypot(x, y) of its points with z in [min_height, max_height], like
    pointcloud_to_laserscan. REP 117: +inf when no point (or only points beyond `range_max`),
    −inf when the nearest point is closer than `range_min`. Returns (float32 [beams], layout).
    """
    height, width = gated_range.shape
    rays = ray_grid(height, width, 1)
    layout = scan_layout(width, beams)
    rows = _rows_reaching_band(gated_range, rays.sin_lat[:, 0], min_height, max_height)
    r = gated_range[rows]  # [h', W]: usually a few rows around the horizon
    z = r * rays.sin_lat[rows]  # a point's height is r sin(lat)
    in_band = (z >= min_height) & (z <= max_height)  # False for NaN and ±inf
    horizontal = np.where(in_band, r * rays.cos_lat[rows], np.float32(np.inf))
    nearest = horizontal.min(axis=0, initial=np.inf)[::-1]  # per column, right to left
    ranges = np.minimum.reduceat(nearest, layout.column_starts).astype(np.float32)
    ranges[ranges > range_max] = np.inf
    ranges[ranges < range_min] = -np.inf
    return ranges, layout
