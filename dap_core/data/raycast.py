"""Analytic, vectorised ray casting of the primitives that synthetic scenes are built from.

World frame: z up, metres. Intersectors take one ray origin `o` [3] and the unit ray
directions as three same-shape float32 arrays (dx, dy, dz) and return the hit distance t in
metres (+inf on a miss). Faces, normals and texture coordinates are recovered afterwards from
the visible hit points only (`surface`), which keeps the per-primitive inner loop short.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

T_MIN = 1e-3  # metres: hits closer than this are the surface the ray starts on
_INF = np.float32(np.inf)


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _slab(o: float, d: np.ndarray, lo: float, hi: float) -> tuple[np.ndarray, np.ndarray]:
    """Entry and exit distances of rays o + t·d through the slab lo <= x <= hi."""
    with np.errstate(divide="ignore", invalid="ignore"):
        inv = np.float32(1.0) / d
        t1 = (np.float32(lo - o)) * inv
        t2 = (np.float32(hi - o)) * inv
    return np.minimum(t1, t2), np.maximum(t1, t2)


@dataclass(frozen=True)
class Box:
    """A box of half extents `half` [3] centred on `center` [3], turned by `yaw` about +z.

    Faces: 2·axis + (1 if the outward normal points along +axis else 0), in the local frame;
    face 5 is the top.
    """

    center: tuple[float, float, float]
    half: tuple[float, float, float]
    yaw: float
    material: int
    top_material: int = -1  # roofs and table tops may differ from the sides; -1: same

    def bounding_radius(self) -> float:
        return float(np.linalg.norm(self.half))

    def footprint_radius(self) -> float:
        return math.hypot(self.half[0], self.half[1])

    @property
    def z_range(self) -> tuple[float, float]:
        return self.center[2] - self.half[2], self.center[2] + self.half[2]

    def xy_distance(self, x: float, y: float) -> float:
        """Horizontal distance from (x, y) to the footprint, metres (0 inside)."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        dx, dy = x - self.center[0], y - self.center[1]
        lx, ly = abs(c * dx + s * dy) - self.half[0], abs(-s * dx + c * dy) - self.half[1]
        return math.hypot(max(lx, 0.0), max(ly, 0.0))

    def _local_rays(self, o, dx, dy):
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        ox, oy = o[0] - self.center[0], o[1] - self.center[1]
        olx, oly = c * ox + s * oy, -s * ox + c * oy
        cf, sf = np.float32(c), np.float32(s)
        return (olx, oly), (cf * dx + sf * dy, cf * dy - sf * dx)

    def intersect(self, o: np.ndarray, dx, dy, dz) -> np.ndarray:
        (olx, oly), (dlx, dly) = self._local_rays(o, dx, dy)
        hx, hy, hz = self.half
        ax0, ax1 = _slab(olx, dlx, -hx, hx)
        ay0, ay1 = _slab(oly, dly, -hy, hy)
        az0, az1 = _slab(o[2] - self.center[2], dz, -hz, hz)
        tnear = np.maximum(np.maximum(ax0, ay0), az0)
        tfar = np.minimum(np.minimum(ax1, ay1), az1)
        return np.where((tnear <= tfar) & (tnear > T_MIN), tnear, _INF)

    def surface(self, p: np.ndarray):
        """(normals [N, 3], material [N], s [N], t [N]) at visible hit points p [N, 3]."""
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        hx, hy, hz = (np.float32(v) for v in self.half)
        dx = p[:, 0] - np.float32(self.center[0])
        dy = p[:, 1] - np.float32(self.center[1])
        lx = np.float32(c) * dx + np.float32(s) * dy  # local coordinates
        ly = np.float32(c) * dy - np.float32(s) * dx
        lz = p[:, 2] - np.float32(self.center[2])
        # The face is the axis whose normalised coordinate is closest to ±1.
        ax, ay, az = np.abs(lx) / hx, np.abs(ly) / hy, np.abs(lz) / hz
        is_x = (ax >= ay) & (ax >= az)
        is_z = ~is_x & (az > ay)
        is_y = ~(is_x | is_z)
        positive = (is_x & (lx > 0)) | (is_y & (ly > 0)) | (is_z & (lz > 0))
        axis = is_y.view(np.int8) + 2 * is_z.view(np.int8)
        face = 2 * axis + positive.view(np.int8)
        local = np.zeros((6, 3))
        local[np.arange(6), np.arange(6) // 2] = np.where(np.arange(6) % 2 == 1, 1.0, -1.0)
        normals = (local @ _rot_z(self.yaw).T).astype(np.float32)[face]
        mat = np.full(p.shape[0], self.material)
        if self.top_material >= 0:
            mat[face == 5] = self.top_material
        # Along the face (>= 0): y on x-faces, else x; up on the sides, across on top/bottom.
        fx, fz = is_x.astype(np.float32), is_z.astype(np.float32)
        u = lx + hx + fx * ((ly + hy) - (lx + hx))
        v = lz + hz + fz * ((ly + hy) - (lz + hz))
        return normals, mat, u, v


@dataclass(frozen=True)
class Cylinder:
    """A vertical cylinder: axis through (x, y), radius, from z0 to z1 (with caps)."""

    x: float
    y: float
    radius: float
    z0: float
    z1: float
    material: int

    @property
    def center(self) -> tuple[float, float, float]:
        return self.x, self.y, 0.5 * (self.z0 + self.z1)

    def bounding_radius(self) -> float:
        return math.hypot(self.radius, 0.5 * (self.z1 - self.z0))

    def footprint_radius(self) -> float:
        return self.radius

    @property
    def z_range(self) -> tuple[float, float]:
        return self.z0, self.z1

    def xy_distance(self, x: float, y: float) -> float:
        return max(math.hypot(x - self.x, y - self.y) - self.radius, 0.0)

    def intersect(self, o: np.ndarray, dx, dy, dz) -> np.ndarray:
        ox, oy, oz = o[0] - self.x, o[1] - self.y, o[2]
        a = dx * dx + dy * dy
        b = np.float32(ox) * dx + np.float32(oy) * dy  # half of the usual b
        c = np.float32(ox * ox + oy * oy - self.radius**2)
        disc = b * b - a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        z = np.float32(oz) + t * dz
        t = np.where((disc > 0) & (t > T_MIN) & (z >= self.z0) & (z <= self.z1), t, _INF)
        for cap_z, seen in ((self.z1, oz > self.z1), (self.z0, oz < self.z0)):
            if seen:
                with np.errstate(divide="ignore", invalid="ignore"):
                    tc = np.float32(cap_z - oz) / dz
                px, py = np.float32(ox) + tc * dx, np.float32(oy) + tc * dy
                ok = (tc > T_MIN) & (px * px + py * py <= self.radius**2) & (tc < t)
                t = np.where(ok, tc, t)
        return t

    def surface(self, p: np.ndarray):
        rx, ry = p[:, 0] - self.x, p[:, 1] - self.y
        radial = np.hypot(rx, ry)
        tol = 1e-3 + 1e-5 * np.abs(p).max(axis=1)
        top = (p[:, 2] >= self.z1 - tol) & (radial < self.radius - tol)
        bottom = (p[:, 2] <= self.z0 + tol) & (radial < self.radius - tol)
        normals = np.stack([rx, ry, np.zeros_like(rx)], axis=1) / np.maximum(radial, 1e-9)[:, None]
        normals[top] = (0.0, 0.0, 1.0)
        normals[bottom] = (0.0, 0.0, -1.0)
        cap = top | bottom
        s = np.where(cap, rx, (np.arctan2(ry, rx) + math.pi) * self.radius)
        t = np.where(cap, ry, p[:, 2] - self.z0)
        return normals, np.full(p.shape[0], self.material), s, t


@dataclass(frozen=True)
class Sphere:
    """A sphere (tree crowns, lamp globes)."""

    center: tuple[float, float, float]
    radius: float
    material: int

    def bounding_radius(self) -> float:
        return self.radius

    def footprint_radius(self) -> float:
        return self.radius

    @property
    def z_range(self) -> tuple[float, float]:
        return self.center[2] - self.radius, self.center[2] + self.radius

    def xy_distance(self, x: float, y: float) -> float:
        return max(math.hypot(x - self.center[0], y - self.center[1]) - self.radius, 0.0)

    def intersect(self, o: np.ndarray, dx, dy, dz) -> np.ndarray:
        ox, oy, oz = (o - np.asarray(self.center)).tolist()
        b = np.float32(ox) * dx + np.float32(oy) * dy + np.float32(oz) * dz
        disc = b * b - np.float32(ox * ox + oy * oy + oz * oz - self.radius**2)
        t = -b - np.sqrt(np.maximum(disc, 0))
        return np.where((disc > 0) & (t > T_MIN), t, _INF)

    def surface(self, p: np.ndarray):
        q = p - np.asarray(self.center, dtype=np.float32)
        normals = q / np.linalg.norm(q, axis=1, keepdims=True)
        s = np.arctan2(q[:, 1], q[:, 0]) * self.radius
        t = np.arcsin(np.clip(normals[:, 2], -1, 1)) * self.radius
        return normals, np.full(p.shape[0], self.material), s, t


Primitive = Box | Cylinder | Sphere


@dataclass(frozen=True)
class Opening:
    """A doorway cut through one wall of a room: wall index, span along it and height, metres."""

    wall: int
    s0: float
    s1: float
    z0: float
    z1: float


@dataclass(frozen=True)
class Room:
    """The inside of an axis-aligned box seen from within: [x0, x1] x [y0, y1] x [0, height].

    Faces: 0 wall x = x0, 1 wall x = x1, 2 wall y = y0, 3 wall y = y1, 4 floor, 5 ceiling.
    The along-wall texture coordinate is y on x-walls and x on y-walls.
    """

    x0: float
    x1: float
    y0: float
    y1: float
    height: float

    def contains(self, p: np.ndarray, margin: float = 0.0) -> bool:
        return bool(
            self.x0 + margin < p[0] < self.x1 - margin
            and self.y0 + margin < p[1] < self.y1 - margin
            and margin < p[2] < self.height - margin
        )

    def intersect(self, o: np.ndarray, dx, dy, dz) -> tuple[np.ndarray, np.ndarray]:
        """Exit distance [...] and face [...] (int8) of rays starting inside the room."""
        exits = []
        for d, lo, hi, oa in ((dx, self.x0, self.x1, o[0]), (dy, self.y0, self.y1, o[1]),
                              (dz, 0.0, self.height, o[2])):  # fmt: skip
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = np.float32(1.0) / d
            # From inside, the exit is the positive one of the two plane distances (+inf
            # for rays parallel to the planes); max() avoids a slower np.where.
            exits.append(np.maximum(np.float32(lo - oa) * inv, np.float32(hi - oa) * inv))
        tx, ty, tz = exits
        t_yz = np.minimum(ty, tz)
        t = np.minimum(tx, t_yz)
        is_x = tx <= t_yz
        is_y = ~is_x & (ty <= tz)
        is_z = ~(is_x | is_y)
        axis = is_y.view(np.int8) + 2 * is_z.view(np.int8)
        positive = (is_x & (dx > 0)) | (is_y & (dy > 0)) | (is_z & (dz > 0))
        face = 2 * axis + positive.view(np.int8)
        return t, face

    @staticmethod
    def normals(face: np.ndarray) -> np.ndarray:
        n = np.zeros((face.shape[0], 3))
        axis = face // 2
        # Inward normals: the wall at the low bound faces +axis.
        n[np.arange(face.shape[0]), axis] = np.where(face % 2 == 0, 1.0, -1.0)
        return n

    @staticmethod
    def surface_uv(p: np.ndarray, face: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        axis = face // 2
        s = np.where(axis == 0, p[:, 1], p[:, 0])
        t = np.where(axis == 2, p[:, 1], p[:, 2])
        return s, t


def ground_intersect(o: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Distance to the ground plane z = 0 from above (+inf for rays at or above the horizon)."""
    with np.errstate(divide="ignore"):
        t = np.float32(-o[2]) / dz
    return np.where(dz < 0, t, _INF)
