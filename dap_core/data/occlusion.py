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
SHADOW_LEVELS = ((150.0, 0.3),)  # (half extent, cell) of each shadow map around the camera, m


def _outline(prim: Primitive, n: int = 16) -> np.ndarray:
    """Points [k, 3] whose convex hull, seen from above or along the sun, covers `prim`."""
    if isinstance(prim, Box):
        c, s = math.cos(prim.yaw), math.sin(prim.yaw)
        hx, hy, hz = prim.half
        pts = []
        for a in (-1, 1):
            for b in (-1, 1):
                for z in (-1, 1):
                    pts.append(
                        (
                            prim.center[0] + c * a * hx - s * b * hy,
                            prim.center[1] + s * a * hx + c * b * hy,
                            prim.center[2] + z * hz,
                        )
                    )
        return np.array(pts)
    ang = np.linspace(0, 2 * math.pi, n, endpoint=False)
    if isinstance(prim, Cylinder):
        ring = np.stack([prim.x + prim.radius * np.cos(ang), prim.y + prim.radius * np.sin(ang)], 1)
        return np.concatenate(
            [np.c_[ring, np.full(n, prim.z0)], np.c_[ring, np.full(n, prim.z1)]], axis=0
        )
    assert isinstance(prim, Sphere)
    # Bounding points on three great circles: enough for the hull along any direction.
    c = np.asarray(prim.center)
    r = prim.radius / math.cos(math.pi / n)  # circumscribe the polygon
    circles = [
        np.stack([np.cos(ang), np.sin(ang), np.zeros(n)], 1),
        np.stack([np.cos(ang), np.zeros(n), np.sin(ang)], 1),
        np.stack([np.zeros(n), np.cos(ang), np.sin(ang)], 1),
    ]
    return c + r * np.concatenate(circles, axis=0)


def _fill_hull(grid: np.ndarray, xy: np.ndarray, origin: np.ndarray, cell: float) -> None:
    pix = np.round((xy - origin) / cell).astype(np.int32)
    hull = cv2.convexHull(pix)
    cv2.fillConvexPoly(grid, hull, 255)


class ContactMap:
    """Soft darkening of the floor under and around furniture (a blurred footprint map)."""

    def __init__(self, room: Room, prims: list[Primitive]):
        self.origin = np.array([room.x0, room.y0])
        self.cell = CONTACT_CELL_M
        w = math.ceil((room.x1 - room.x0) / self.cell) + 1
        h = math.ceil((room.y1 - room.y0) / self.cell) + 1
        grid = np.zeros((h, w), dtype=np.uint8)
        for prim in prims:
            if prim.z_range[0] < 0.05 and prim.footprint_radius() < 3.0:
                _fill_hull(grid, _outline(prim)[:, :2], self.origin, self.cell)
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
    onto z = 0 and filled into top-down maps centred on the camera (SHADOW_LEVELS, finest
    first; ground beyond the last map is lit)."""

    def __init__(self, prims: list[Primitive], sun: tuple[float, float, float], centre):
        s = np.asarray(sun, dtype=np.float64)
        self.levels = []
        if s[2] <= 0.02:
            return
        shadows = []
        for prim in prims:
            pts = _outline(prim)
            shadows.append(pts[:, :2] - (pts[:, 2:3] / s[2]) * s[None, :2])  # onto the ground
        for half, cell in SHADOW_LEVELS:
            origin = np.asarray(centre[:2], dtype=np.float64) - half
            size = math.ceil(2 * half / cell)
            grid = np.zeros((size, size), dtype=np.uint8)
            for xy in shadows:
                lo, hi = xy.min(0), xy.max(0)
                if (hi < origin).any() or (lo > origin + 2 * half).any():
                    continue
                _fill_hull(grid, xy, origin, cell)
            self.levels.append((origin, cell, grid))

    def lookup(self, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Fraction of sunlight [N] arriving at ground points (x, y)."""
        lit = np.ones(x.shape, dtype=np.float32)
        todo = np.ones(x.shape, dtype=bool)
        for origin, cell, grid in self.levels:
            n = grid.shape[0]
            ix = np.floor((x - origin[0]) / cell).astype(np.intp)
            iy = np.floor((y - origin[1]) / cell).astype(np.intp)
            inside = todo & (ix >= 0) & (ix < n) & (iy >= 0) & (iy < n)
            shade = grid[iy[inside], ix[inside]] > 0
            lit[np.flatnonzero(inside)[shade]] = SHADOW_LIGHT
            todo &= ~inside
        return lit


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
