"""Cheap light occlusion for the real_like domain: room corners, furniture contact, sun shadows.

Contact and sun shadows are rasterised once per render into top-down maps of the floor /
ground (OpenCV polygon fills), then looked up per pixel, so their cost does not grow with
objects x pixels. Every factor is in (0, 1]: the fraction of ambient / key light that arrives.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from dap_core.data.raycast import Box, Cylinder, Primitive, Room, Sphere

CORNER_DEPTH = 0.35  # darkest corner occlusion (fraction of light lost)
CORNER_WIDTH_M = 0.3
CONTACT_DEPTH = 0.5
CONTACT_BLUR_M = 0.18
CONTACT_CELL_M = 0.04
SHADOW_LIGHT = 0.3  # fraction of the sun's light that still arrives in a shadow
SHADOW_HALF_M = 150.0  # the sun-shadow map covers the ground this far around the camera, m
SHADOW_CELL_M = 0.3
_RING = 16  # vertices of the polygons around cylinders and spheres


def _outlines(prims: list[Primitive]) -> list[np.ndarray]:
    """Point sets [G, k, 3], one group per kind of primitive: the convex hull of each set,
    seen from above or along the sun, covers its primitive (vectorised over each kind)."""
    groups = []
    boxes = [p for p in prims if isinstance(p, Box)]
    if boxes:
        centre = np.array([b.center for b in boxes])  # [B, 3]
        half = np.array([b.half for b in boxes])
        yaw = np.array([b.yaw for b in boxes])
        c, s = np.cos(yaw)[:, None], np.sin(yaw)[:, None]
        a = np.array([-1, -1, -1, -1, 1, 1, 1, 1], dtype=np.float64)  # the 8 corners
        b = np.array([-1, -1, 1, 1, -1, -1, 1, 1], dtype=np.float64)
        z = np.array([-1, 1, -1, 1, -1, 1, -1, 1], dtype=np.float64)
        ax, by = a * half[:, :1], b * half[:, 1:2]  # [B, 8]
        x = centre[:, :1] + c * ax - s * by
        y = centre[:, 1:2] + s * ax + c * by
        groups.append(np.stack([x, y, centre[:, 2:3] + z * half[:, 2:3]], axis=-1))
    ang = np.linspace(0, 2 * math.pi, _RING, endpoint=False)
    cos, sin = np.cos(ang), np.sin(ang)
    cyl = np.array([(p.x, p.y, p.radius, p.z0, p.z1) for p in prims if isinstance(p, Cylinder)])
    if cyl.size:
        ring_x = cyl[:, :1] + cyl[:, 2:3] * cos  # [C, n]
        ring_y = cyl[:, 1:2] + cyl[:, 2:3] * sin
        zs = np.repeat(cyl[:, 3:5], _RING, axis=1)  # [C, 2n]: bottom ring, then top ring
        groups.append(np.stack([np.tile(ring_x, 2), np.tile(ring_y, 2), zs], axis=-1))
    sph = np.array([(*p.center, p.radius) for p in prims if isinstance(p, Sphere)])
    if sph.size:
        # Bounding points on three great circles: enough for the hull along any direction.
        zero = np.zeros(_RING)
        unit = np.concatenate(
            [np.stack([cos, sin, zero], 1), np.stack([cos, zero, sin], 1),
             np.stack([zero, cos, sin], 1)]
        )  # [3n, 3]  # fmt: skip
        r = sph[:, 3] / math.cos(math.pi / _RING)  # circumscribe the polygon
        groups.append(sph[:, None, :3] + r[:, None, None] * unit[None])  # [S, 3n, 3]
    return groups


def _fill_hulls(grid: np.ndarray, xy: np.ndarray, origin, cell: float) -> None:
    """Fill the convex hull of each point set xy[i] [k, 2] (metres) into `grid` (255)."""
    pix = np.round((xy - np.asarray(origin)) / cell).astype(np.int32)  # [G, k, 2]
    for part in pix:
        cv2.fillConvexPoly(grid, cv2.convexHull(part), 255)


class ContactMap:
    """Soft darkening of the floor under and around furniture (a blurred footprint map)."""

    def __init__(self, room: Room, prims: list[Primitive]):
        self.origin = np.array([room.x0, room.y0])
        self.cell = CONTACT_CELL_M
        w = math.ceil((room.x1 - room.x0) / self.cell) + 1
        h = math.ceil((room.y1 - room.y0) / self.cell) + 1
        grid = np.zeros((h, w), dtype=np.uint8)
        standing = [p for p in prims if p.z_range[0] < 0.05 and p.footprint_radius() < 3.0]
        for pts in _outlines(standing):
            _fill_hulls(grid, pts[..., :2], self.origin, self.cell)
        blurred = cv2.GaussianBlur(
            grid.astype(np.float32) / 255, (0, 0), CONTACT_BLUR_M / self.cell
        )
        self.factor = (1 - CONTACT_DEPTH * blurred).astype(np.float32)

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        h, w = self.factor.shape
        ix = np.clip(((x - self.origin[0]) / self.cell).astype(np.intp), 0, w - 1)
        iy = np.clip(((y - self.origin[1]) / self.cell).astype(np.intp), 0, h - 1)
        return np.take(self.factor, iy * w + ix)


class SunShadowMap:
    """Which ground points the sun cannot see: every object's shadow, projected along the sun
    onto z = 0 and filled into a top-down map of SHADOW_HALF_M around the camera (ground
    beyond it is lit)."""

    def __init__(self, prims: list[Primitive], sun: tuple[float, float, float], centre):
        s = np.asarray(sun, dtype=np.float64)
        self.grid = None
        if s[2] <= 0.02:
            return
        half, cell = SHADOW_HALF_M, SHADOW_CELL_M
        self.origin = np.asarray(centre[:2], dtype=np.float64) - half
        self.cell = cell
        size = math.ceil(2 * half / cell)
        self.grid = np.zeros((size, size), dtype=np.uint8)
        for pts in _outlines(prims):
            xy = pts[..., :2] - (pts[..., 2:3] / s[2]) * s[:2]  # [G, k, 2] onto the ground
            lo, hi = xy.min(1), xy.max(1)  # [G, 2] shadow bounds
            inside = (hi >= self.origin).all(1) & (lo <= self.origin + 2 * half).all(1)
            _fill_hulls(self.grid, xy[inside], self.origin, cell)
        # Lookups clip to the border: keep it lit, as the ground beyond the map is.
        self.grid[[0, -1], :] = 0
        self.grid[:, [0, -1]] = 0

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fraction of sunlight [N] arriving at ground points (x, y)."""
        if self.grid is None:
            return np.ones(x.shape, dtype=np.float32)
        n = self.grid.shape[0]
        inv = np.float32(1.0 / self.cell)
        ix = np.floor((x - np.float32(self.origin[0])) * inv)
        iy = np.floor((y - np.float32(self.origin[1])) * inv)
        np.clip(ix, 0, n - 1, out=ix)
        np.clip(iy, 0, n - 1, out=iy)
        idx = iy.astype(np.int32) * n + ix.astype(np.int32)
        shade = np.take(self.grid.reshape(-1), idx)
        return np.where(shade > 0, np.float32(SHADOW_LIGHT), np.float32(1.0))


def room_corner_factor(room: Room, face: int, x, y, z) -> np.ndarray:
    """Occlusion [N] of points (x, y, z) [N] on one room face: darker near the edges it
    meets."""
    if face < 2:  # walls x = const meet the y-walls, floor and ceiling
        d = np.minimum(np.minimum(y - room.y0, room.y1 - y), np.minimum(z, room.height - z))
    elif face < 4:
        d = np.minimum(np.minimum(x - room.x0, room.x1 - x), np.minimum(z, room.height - z))
    else:
        d = np.minimum(np.minimum(x - room.x0, room.x1 - x), np.minimum(y - room.y0, room.y1 - y))
    return _one_minus_exp_decay(d, CORNER_DEPTH, CORNER_WIDTH_M)


def object_contact_factor(z: np.ndarray) -> np.ndarray:
    """Occlusion [N] of object surfaces near the floor (light blocked by the floor itself)."""
    return _one_minus_exp_decay(z, 0.3, 0.25)


def _one_minus_exp_decay(d: np.ndarray, depth: float, width: float) -> np.ndarray:
    """1 - depth · exp(-max(d, 0) / width) [N] float32 (cv2.exp: ~5x cheaper than np.exp)."""
    if d.size == 0:
        return np.ones(0, dtype=np.float32)
    e = cv2.exp(np.maximum(d, 0) * np.float32(-1.0 / width)).reshape(-1)
    e *= np.float32(-depth)
    e += np.float32(1.0)
    return e
