"""Analytic, vectorised ray casting of the primitives that synthetic scenes are built from.

World frame: z up, metres. Intersectors take one ray origin `o` [3], the unit ray directions
as three same-shape float32 arrays (dx, dy, dz) and optionally their reciprocals `inv`
(1/dx, 1/dy, 1/dz, shared by every axis-aligned slab test of a render). They return the hit
distance t in metres (+inf on a miss) and the face hit (an int8 array, or one int when the
primitive has a single face). Normals and texture coordinates are computed afterwards from
the visible hit points only, for all faces of one kind of primitive at once (`surfaces`,
with per-point parameters repeated over each face's run of points).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import cv2
import numpy as np

T_MIN = 1e-3  # metres: hits closer than this are the surface the ray starts on
_INF = np.float32(np.inf)


def _per_point(values, counts) -> np.ndarray:
    """One value per primitive ([P] or [P, k]) -> one per point ([N] or [k, N]) for points
    in runs of counts[i] (float64 inputs become float32)."""
    values = np.asarray(values)
    if values.dtype == np.float64:
        values = values.astype(np.float32)
    return np.repeat(values.T, counts, axis=-1)


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

    def _local_origin(self, o) -> tuple[float, float, float]:
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        ox, oy = o[0] - self.center[0], o[1] - self.center[1]
        return c * ox + s * oy, -s * ox + c * oy, o[2] - self.center[2]

    def seen_faces(self, o) -> tuple[int, ...]:
        """Faces whose outer side the camera at `o` sees (at most three)."""
        faces = []
        for axis, (ol, h) in enumerate(zip(self._local_origin(o), self.half, strict=True)):
            if ol < -h:
                faces.append(2 * axis)
            elif ol > h:
                faces.append(2 * axis + 1)
        return tuple(faces)

    def intersect(self, o: np.ndarray, dx, dy, dz, inv=None):
        """(t, face) of rays o + t·d; `inv` = (1/dx, 1/dy, 1/dz) is used by unrotated boxes."""
        local = self._local_origin(o)
        with np.errstate(divide="ignore", invalid="ignore"):
            if inv is not None and self.yaw == 0.0:
                inv_d = inv
            else:
                cf, sf = np.float32(math.cos(self.yaw)), np.float32(math.sin(self.yaw))
                one = np.float32(1.0)
                inv_z = inv[2] if inv is not None else one / dz
                inv_d = (one / (cf * dx + sf * dy), one / (cf * dy - sf * dx), inv_z)
            # Slab test: an axis whose slab holds the camera bounds only the exit; an axis the
            # camera is outside of gives the entry through its near face (the face hit when
            # that entry is the latest one).
            entries, exits = [], []
            for axis, (ol, h, iv) in enumerate(zip(local, self.half, inv_d, strict=True)):
                t_lo = np.float32(-h - ol) * iv
                t_hi = np.float32(h - ol) * iv
                if ol < -h:
                    entries.append((t_lo, 2 * axis))
                    exits.append(t_hi)
                elif ol > h:
                    entries.append((t_hi, 2 * axis + 1))
                    exits.append(t_lo)
                else:
                    exits.append(np.maximum(t_lo, t_hi))
        if not entries:  # the camera is inside the box: it sees no outer face
            return np.full(dz.shape, _INF, dtype=np.float32), 0
        tnear, face = entries[0]
        for t_e, f_e in entries[1:]:
            later = t_e > tnear
            face = np.where(later, np.int8(f_e), np.int8(face) if isinstance(face, int) else face)
            tnear = np.maximum(tnear, t_e)
        tfar = np.minimum(np.minimum(exits[0], exits[1]), exits[2])
        return np.where((tnear <= tfar) & (tnear > T_MIN), tnear, _INF), face

    @staticmethod
    def intersect_many(boxes: list[Box], o: np.ndarray, dx, dy, dz, counts: list[int]):
        """(t [N], face [N] int8) of rays [N] in runs of counts[i] rays against boxes[i]: the
        same values as `intersect` box by box, in one pass of general slab tests."""
        rows = []
        for b in boxes:
            ol = b._local_origin(o)
            rows.append((*(-h - v for v, h in zip(ol, b.half, strict=True)),
                         *(h - v for v, h in zip(ol, b.half, strict=True)),
                         math.cos(b.yaw), math.sin(b.yaw)))  # fmt: skip
        lo_x, lo_y, lo_z, hi_x, hi_y, hi_z, c, s = _per_point(rows, counts)
        # Faces entered along each axis: the side of the slab the camera is on.
        side = np.array([[ol > 0 for ol in b._local_origin(o)] for b in boxes], dtype=np.int8)
        side_x, side_y, side_z = _per_point(side, counts)
        one = np.float32(1.0)
        entries, exits = [], []
        with np.errstate(divide="ignore", invalid="ignore"):
            for lo, hi, d in ((lo_x, hi_x, c * dx + s * dy), (lo_y, hi_y, c * dy - s * dx),
                              (lo_z, hi_z, dz)):  # fmt: skip
                inv = one / d
                t_lo, t_hi = lo * inv, hi * inv
                entries.append(np.minimum(t_lo, t_hi))
                exits.append(np.maximum(t_lo, t_hi))
        ex, ey, ez = entries
        tnear = np.maximum(np.maximum(ex, ey), ez)
        tfar = np.minimum(np.minimum(exits[0], exits[1]), exits[2])
        t = np.where((tnear <= tfar) & (tnear > T_MIN), tnear, _INF)
        is_x = (ex >= ey) & (ex >= ez)  # ties go to the earlier axis, as in `intersect`
        is_y = ~is_x & (ey >= ez)
        face = np.where(is_x, side_x, np.where(is_y, 2 + side_y, 4 + side_z))
        return t, face

    def face_normal(self, face: int) -> tuple[float, float, float]:
        """Outward world normal of `face`."""
        axis, sign = divmod(face, 2)
        sign = 1.0 if sign else -1.0
        if axis == 2:
            return 0.0, 0.0, sign
        c, s = math.cos(self.yaw), math.sin(self.yaw)
        return (sign * c, sign * s, 0.0) if axis == 0 else (-sign * s, sign * c, 0.0)

    @staticmethod
    def surfaces(boxes: list[Box], faces: list[int], counts: list[int], x, y, z):
        """(normals [3, N], s [N], t [N]) of hit points (x, y, z) [N] lying in runs of
        counts[i] points on face faces[i] of boxes[i]. Texture coordinates (metres, >= 0):
        along the face (local y on x-faces, else x), up on the sides, across on the top."""
        face = np.asarray(faces)
        geo = np.array([(*b.center, *b.half, math.cos(b.yaw), math.sin(b.yaw)) for b in boxes],
                       dtype=np.float32)  # fmt: skip
        normals = np.array([b.face_normal(f) for b, f in zip(boxes, faces, strict=True)],
                           dtype=np.float32)  # fmt: skip

        def rep(values):  # one value per run -> one per point
            return np.repeat(values, counts, axis=-1)

        cx, cy, cz, hx, hy, hz, c, s = (rep(col) for col in geo.T)
        dx, dy = x - cx, y - cy
        lx, ly = c * dx + s * dy, c * dy - s * dx  # local frame (exact for yaw 0: c=1, s=0)
        u = np.where(rep(face // 2 == 0), ly + hy, lx + hx)
        v = np.where(rep(face // 2 == 2), ly + hy, (z - cz) + hz)
        return rep(normals.T), u, v


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

    SIDE, TOP, BOTTOM = 0, 1, 2  # faces

    def seen_faces(self, o) -> tuple[int, ...]:
        """The side, and the cap the camera at `o` is above or below."""
        return (self.SIDE, *((self.TOP,) if o[2] > self.z1 else ()),
                *((self.BOTTOM,) if o[2] < self.z0 else ()))  # fmt: skip

    def intersect(self, o: np.ndarray, dx, dy, dz, inv=None):
        """(t, face) of rays o + t·d: the side, or a cap the camera is above / below."""
        ox, oy, oz = o[0] - self.x, o[1] - self.y, o[2]
        a = dx * dx + dy * dy
        b = np.float32(ox) * dx + np.float32(oy) * dy  # half of the usual b
        c = np.float32(ox * ox + oy * oy - self.radius**2)
        disc = b * b - a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (-b - np.sqrt(np.maximum(disc, 0))) / a
        z = np.float32(oz) + t * dz
        t = np.where((disc > 0) & (t > T_MIN) & (z >= self.z0) & (z <= self.z1), t, _INF)
        face = self.SIDE
        for cap_z, seen, cap in ((self.z1, oz > self.z1, self.TOP),
                                 (self.z0, oz < self.z0, self.BOTTOM)):  # fmt: skip
            if seen:
                with np.errstate(divide="ignore", invalid="ignore"):
                    tc = np.float32(cap_z - oz) / dz
                px, py = np.float32(ox) + tc * dx, np.float32(oy) + tc * dy
                ok = (tc > T_MIN) & (px * px + py * py <= self.radius**2) & (tc < t)
                t = np.where(ok, tc, t)
                face = np.where(ok, np.int8(cap), np.int8(face) if isinstance(face, int) else face)
        return t, face

    @staticmethod
    def intersect_many(cyls: list[Cylinder], o: np.ndarray, dx, dy, dz, counts: list[int]):
        """(t [N], face [N] int8) of rays in runs of counts[i] rays against cyls[i]: the same
        values as `intersect` cylinder by cylinder, in one pass."""
        rows = []
        for cy in cyls:
            ox, oy, oz = o[0] - cy.x, o[1] - cy.y, o[2]
            cap_z, cap = (cy.z1, Cylinder.TOP) if oz > cy.z1 else (cy.z0, Cylinder.BOTTOM)
            has_cap = oz > cy.z1 or oz < cy.z0
            rows.append((ox, oy, ox * ox + oy * oy - cy.radius**2, cy.z0, cy.z1,
                         cy.radius**2, cap_z - oz, cap if has_cap else Cylinder.SIDE))  # fmt: skip
        ox, oy, c, z0, z1, r2, cap_dz, cap = _per_point(rows, counts)
        oz = np.float32(o[2])
        a = dx * dx + dy * dy
        b = ox * dx + oy * dy  # half of the usual b
        disc = b * b - a * c
        with np.errstate(divide="ignore", invalid="ignore"):
            t = (-b - np.sqrt(np.maximum(disc, 0))) / a
            tc = cap_dz / dz
        z = oz + t * dz
        t = np.where((disc > 0) & (t > T_MIN) & (z >= z0) & (z <= z1), t, _INF)
        px, py = ox + tc * dx, oy + tc * dy
        ok = (cap != Cylinder.SIDE) & (tc > T_MIN) & (px * px + py * py <= r2) & (tc < t)
        return np.where(ok, tc, t), np.where(ok, cap.astype(np.int8), np.int8(Cylinder.SIDE))

    @staticmethod
    def surfaces(cyls: list[Cylinder], faces: list[int], counts: list[int], x, y, z):
        """(normals [3, N], s [N], t [N]) of hit points in runs of counts[i] points on face
        faces[i] of cyls[i]: metres around and up the side, metres across the caps."""
        face = np.asarray(faces)
        geo = np.array([(c.x, c.y, c.radius, c.z0) for c in cyls], dtype=np.float32)
        cap_nz = np.where(face == Cylinder.TOP, 1.0, -1.0).astype(np.float32)
        side = np.repeat(face == Cylinder.SIDE, counts)
        x0, y0, radius, z0 = (np.repeat(col, counts) for col in geo.T)
        rx, ry = x - x0, y - y0
        inv_r = np.float32(1.0) / np.maximum(np.sqrt(rx * rx + ry * ry), np.float32(1e-9))
        zero = np.float32(0.0)
        normals = np.stack([np.where(side, rx * inv_r, zero), np.where(side, ry * inv_r, zero),
                            np.where(side, zero, np.repeat(cap_nz, counts))])  # fmt: skip
        # cv2.phase (atan2 in [0, 2π), 2e-4 rad accurate) is ~15x cheaper than np.arctan2;
        # the angle of (-rx, -ry) is atan2(ry, rx) + π, so the texture seam faces -x.
        around = cv2.phase(-rx, -ry).reshape(-1) * radius
        return normals, np.where(side, around, rx), np.where(side, z - z0, ry)


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

    def seen_faces(self, o) -> tuple[int, ...]:
        return (0,)

    def intersect(self, o: np.ndarray, dx, dy, dz, inv=None):
        """(t, 0) of rays o + t·d (a sphere has one face)."""
        ox, oy, oz = (o - np.asarray(self.center)).tolist()
        b = np.float32(ox) * dx + np.float32(oy) * dy + np.float32(oz) * dz
        disc = b * b - np.float32(ox * ox + oy * oy + oz * oz - self.radius**2)
        t = -b - np.sqrt(np.maximum(disc, 0))
        return np.where((disc > 0) & (t > T_MIN), t, _INF), 0

    @staticmethod
    def intersect_many(spheres: list[Sphere], o: np.ndarray, dx, dy, dz, counts: list[int]):
        """(t [N], face [N] int8) of rays in runs of counts[i] rays against spheres[i]."""
        rows = []
        for sp in spheres:
            ox, oy, oz = (o - np.asarray(sp.center)).tolist()
            rows.append((ox, oy, oz, ox * ox + oy * oy + oz * oz - sp.radius**2))
        ox, oy, oz, c = _per_point(rows, counts)
        b = ox * dx + oy * dy + oz * dz
        disc = b * b - c
        t = -b - np.sqrt(np.maximum(disc, 0))
        t = np.where((disc > 0) & (t > T_MIN), t, _INF)
        return t, np.zeros(t.shape, dtype=np.int8)

    @staticmethod
    def surfaces(spheres: list[Sphere], faces: list[int], counts: list[int], x, y, z):
        """(normals [3, N], s [N], t [N]) of hit points in runs of counts[i] points on
        spheres[i]: metres around and up the sphere."""
        geo = np.array([(*p.center, p.radius) for p in spheres], dtype=np.float32)
        cx, cy, cz, r = (np.repeat(col, counts) for col in geo.T)
        qx, qy, qz = x - cx, y - cy, z - cz
        h = np.sqrt(qx * qx + qy * qy)
        inv_r = np.float32(1.0) / np.sqrt(h * h + qz * qz)
        normals = np.stack([qx * inv_r, qy * inv_r, qz * inv_r])
        # Longitude in [-π, π) (seam towards -x) and latitude from the polar angle, both with
        # cv2.phase: ~15x cheaper than arctan2 / arcsin, 2e-4 rad accurate.
        s = (cv2.phase(-qx, -qy).reshape(-1) - np.float32(math.pi)) * r
        t = (np.float32(math.pi / 2) - cv2.phase(qz, h).reshape(-1)) * r
        return normals, s, t


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

    def intersect(self, o: np.ndarray, dx, dy, dz, inv=None) -> tuple[np.ndarray, np.ndarray]:
        """Exit distance [...] and face [...] (int8) of rays starting inside the room;
        `inv` = (1/dx, 1/dy, 1/dz) when the caller has them."""
        exits = []
        for k, (d, lo, hi, oa) in enumerate(((dx, self.x0, self.x1, o[0]),
                                             (dy, self.y0, self.y1, o[1]),
                                             (dz, 0.0, self.height, o[2]))):  # fmt: skip
            if inv is not None:
                iv = inv[k]
            else:
                with np.errstate(divide="ignore", invalid="ignore"):
                    iv = np.float32(1.0) / d
            # From inside, the exit is the positive one of the two plane distances (+inf
            # for rays parallel to the planes); max() avoids a slower np.where.
            exits.append(np.maximum(np.float32(lo - oa) * iv, np.float32(hi - oa) * iv))
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


def ground_intersect(o: np.ndarray, dz: np.ndarray) -> np.ndarray:
    """Distance to the ground plane z = 0 from above (+inf for rays at or above the horizon)."""
    with np.errstate(divide="ignore"):
        t = np.float32(-o[2]) / dz
    return np.where(dz < 0, t, _INF)
