"""Procedural scene layouts: furnished rooms, streets, plazas and city blocks seen from a drone.

A `Scene` is pure geometry plus material descriptions, fully determined by its seed. Sizes
follow the real world so that a network can learn metric scale from them: doors 2.0-2.15 m,
ceilings 2.4-4 m, storeys 3-3.6 m, cars 4.2-4.8 m, lane dashes 3 m; indoor cameras stand
1.0-1.8 m above the floor, outdoor ones 1.5-2.5 m, drones fly at 20-60 m.

World frame: z up, metres, ground / floor at z = 0.
"""

from __future__ import annotations

import colorsys
import contextlib
import gc
import math
import random
from dataclasses import dataclass

import numpy as np

from dap_core.data.appearance import GroundLayout, Lighting, Material, Sky
from dap_core.data.raycast import Box, Cylinder, Opening, Primitive, Room, Sphere

SCENE_KINDS = ("indoor", "outdoor")
INDOOR_CAMERA_HEIGHT = (1.0, 1.8)
OUTDOOR_CAMERA_HEIGHT = (1.5, 2.5)
DRONE_ALTITUDE = (20.0, 60.0)
DRONE_SHARE = 0.2  # fraction of outdoor scenes seen from a drone
WALKING_SPEED = 0.6  # m/s along indoor paths
STREET_SPEED = 2.0  # m/s outdoors; drones fly at 3x this
PATH_CLEARANCE = 0.45  # metres between a trajectory and any obstacle's footprint
CAMERA_CLEARANCE = 0.3  # metres between a sampled camera and any obstacle's footprint
TREE_CLEAR_M = 2.9  # lowest tree crown: above the highest walking camera plus clearance


@dataclass(frozen=True)
class Decal:
    """A flat rectangle painted on a room wall (doors, windows, frames, baseboards).

    Coordinates are the room's wall texture coordinates (s along the wall, z up), metres.
    Emissive decals (windows) give radiance directly instead of being lit.
    """

    wall: int
    s0: float
    s1: float
    z0: float
    z1: float
    material: int
    emissive: float = 0.0


@dataclass(frozen=True)
class CameraPath:
    """A closed stadium-shaped camera path travelled at constant speed.

    Two straights of length 2·half_length joined by half circles of `radius`, centred on
    (cx, cy), turned by `angle` about +z, at camera height `height`; speed in m/s. With
    half_length = 0 it is a circle. Curvature never exceeds 1 / radius, so the yaw turns
    smoothly.
    """

    cx: float
    cy: float
    half_length: float
    radius: float
    angle: float
    height: float
    speed: float

    @property
    def length(self) -> float:
        return 4 * self.half_length + 2 * math.pi * self.radius

    def _local(self, arc: float) -> tuple[float, float, float]:
        """Local (x, y, heading) at arc length `arc` in [0, length)."""
        L, r = self.half_length, self.radius
        straight, bend = 2 * L, math.pi * r
        if arc < straight:  # bottom straight, heading +x
            return -L + arc, -r, 0.0
        arc -= straight
        if arc < bend:  # right half circle around (L, 0)
            a = -math.pi / 2 + arc / r
            return L + r * math.cos(a), r * math.sin(a), a + math.pi / 2
        arc -= bend
        if arc < straight:  # top straight, heading -x
            return L - arc, r, math.pi
        arc -= straight
        a = math.pi / 2 + arc / r  # left half circle around (-L, 0)
        return -L + r * math.cos(a), r * math.sin(a), a + math.pi / 2

    def at(self, t_seconds: float) -> tuple[np.ndarray, float]:
        """(position [3] metres, yaw radians): the camera looks along its motion."""
        x, y, heading = self._local((self.speed * t_seconds) % self.length)
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        pos = np.array([self.cx + ca * x - sa * y, self.cy + sa * x + ca * y, self.height])
        yaw = (heading + self.angle + math.pi) % (2 * math.pi) - math.pi
        return pos, yaw

    def samples(self, n: int = 96) -> np.ndarray:
        """n points [n, 2] (x, y) evenly spaced along the path (the positions of `at`)."""
        length, speed = self.length, self.speed
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        out = []
        for k in range(n):
            x, y, _ = self._local((speed * (k * length / (n * speed))) % length)
            out.append((self.cx + ca * x - sa * y, self.cy + sa * x + ca * y))
        return np.array(out)


@dataclass
class Scene:
    """Geometry and materials of one procedural scene (see `make_scene`).

    Object ids in renders: -1 sky, 0 room, 1 shell (space beyond open doorways), 2 ground,
    3 + k primitive k.
    """

    seed: int
    kind: str
    layout: str
    primitives: tuple[Primitive, ...]
    materials: tuple[Material, ...]
    lighting: Lighting
    path: CameraPath
    camera_height: tuple[float, float]
    room: Room | None = None
    shell: Room | None = None
    openings: tuple[Opening, ...] = ()
    decals: tuple[Decal, ...] = ()
    room_materials: tuple[int, int, int] = (0, 0, 0)  # walls, floor, ceiling
    shell_materials: tuple[int, int, int] = (0, 0, 0)
    lamps: tuple[tuple[float, float, float, float], ...] = ()  # ceiling lamp x, y, z, radius
    ground: GroundLayout | None = None
    sky: Sky | None = None

    def trajectory(self, t_seconds: float) -> tuple[np.ndarray, float]:
        """Camera (position xyz [3] metres, yaw radians) at time t on a smooth closed path.

        The path keeps PATH_CLEARANCE from every obstacle; the camera looks along its motion.
        """
        return self.path.at(float(t_seconds))

    def is_free(self, x: float, y: float, z: float, clearance: float) -> bool:
        """True when a camera at (x, y, z) keeps `clearance` metres from every obstacle."""
        if self.room is not None and not self.room.contains(np.array([x, y, z]), clearance):
            return False
        for prim in self.primitives:
            z0, z1 = prim.z_range
            if z1 < z - clearance or z0 > z + clearance:  # passes over or under it
                continue
            if prim.xy_distance(x, y) < clearance:
                return False
        return True

    def sample_camera(self, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """A random free camera position and yaw (uniform in [-π, π))."""
        yaw = float(rng.uniform(-math.pi, math.pi))
        z = float(rng.uniform(*self.camera_height))
        for _ in range(200):
            if self.room is not None:
                x = rng.uniform(self.room.x0 + 0.4, self.room.x1 - 0.4)
                y = rng.uniform(self.room.y0 + 0.4, self.room.y1 - 0.4)
            else:
                reach = 40.0 if self.layout != "drone" else 80.0
                x, y = rng.uniform(-reach, reach, 2)
                if self.layout == "street" and self.ground is not None:
                    y = rng.uniform(-1, 1) * (self.ground.road_half + self.ground.walk * 0.8)
            if self.is_free(float(x), float(y), z, CAMERA_CLEARANCE):
                return np.array([x, y, z]), yaw
        pos, _ = self.path.at(float(rng.uniform(0, 1000)))
        return pos, yaw

    def render(
        self,
        position,
        yaw_rad: float,
        height: int = 256,
        width: int = 512,
        domain: str = "sim",
        noise_seed: int = 0,
    ):
        """Render a PanoramaSample from `position` (xyz metres) looking along `yaw_rad`."""
        from dap_core.data.render import render_scene

        return render_scene(self, position, yaw_rad, height, width, domain, noise_seed)


# ---------------------------------------------------------------------------------------------
# Colours
# ---------------------------------------------------------------------------------------------


def _linear(h: float, s: float, v: float) -> tuple[float, float, float]:
    """HSV (display-referred) -> linear RGB."""
    r, g, b = colorsys.hsv_to_rgb(h % 1.0, s, v)
    return (r**2.2, g**2.2, b**2.2)


class _Rand(random.Random):
    """Python's Mersenne Twister with numpy's method names: scene building draws thousands
    of scalars, and these are ~20x cheaper than numpy Generator scalar calls."""

    def integers(self, lo: int, hi: int | None = None) -> int:
        return self.randrange(lo) if hi is None else self.randrange(lo, hi)

    def gamma(self, shape: float, scale: float) -> float:
        return self.gammavariate(shape, scale)


class _Palette:
    def __init__(self, rng: _Rand):
        self.rng = rng

    def u(self, lo: float, hi: float) -> float:
        return lo + (hi - lo) * self.rng.random()  # random.uniform, one call cheaper

    def paint(self) -> tuple[float, float, float]:
        return _linear(self.u(0, 1), self.u(0.03, 0.35), self.u(0.55, 0.92))

    def wood(self) -> tuple[float, float, float]:
        return _linear(self.u(0.04, 0.11), self.u(0.35, 0.75), self.u(0.25, 0.75))

    def fabric(self) -> tuple[float, float, float]:
        return _linear(self.u(0, 1), self.u(0.1, 0.7), self.u(0.2, 0.8))

    def grey(self, lo: float = 0.2, hi: float = 0.9) -> tuple[float, float, float]:
        v = self.u(lo, hi)
        return _linear(self.u(0, 1), self.u(0, 0.08), v)

    def facade(self) -> tuple[float, float, float]:
        kind = self.rng.integers(3)
        if kind == 0:  # brick
            return _linear(self.u(0.0, 0.06), self.u(0.4, 0.7), self.u(0.35, 0.65))
        if kind == 1:  # plaster
            return _linear(self.u(0.05, 0.15), self.u(0.1, 0.35), self.u(0.6, 0.9))
        return self.grey(0.4, 0.85)  # concrete


class _Builder:
    """Collects materials and primitives while a layout is generated."""

    def __init__(self, rng: _Rand):
        self.rng = rng
        self.pal = _Palette(rng)
        self.materials: list[Material] = []
        self.prims: list[Primitive] = []
        self.footprints: list[tuple[float, float, float]] = []  # x, y, radius

    def mat(self, m: Material) -> int:
        self.materials.append(m)
        return len(self.materials) - 1

    def fits(self, x: float, y: float, r: float, path_xy: np.ndarray, margin: float) -> bool:
        if path_xy.size and np.min(np.hypot(path_xy[:, 0] - x, path_xy[:, 1] - y)) < r + margin:
            return False
        hypot = math.hypot
        for fx, fy, fr in self.footprints:  # noqa: SIM110 - a loop skips all()'s generator
            if hypot(x - fx, y - fy) < r + fr + 0.05:
                return False
        return True

    def add(self, prims: list[Primitive], x: float, y: float, r: float) -> None:
        self.prims.extend(prims)
        self.footprints.append((x, y, r))


def _box(x, y, z0, sx, sy, sz, yaw, mat, top=-1) -> Box:
    """A box standing on z0 with full sizes (sx, sy, sz), centred on (x, y)."""
    return Box((x, y, z0 + sz / 2), (sx / 2, sy / 2, sz / 2), yaw, mat, top)


def _local(x, y, yaw, dx, dy) -> tuple[float, float]:
    c, s = math.cos(yaw), math.sin(yaw)
    return x + c * dx - s * dy, y + s * dx + c * dy


# ---------------------------------------------------------------------------------------------
# Indoor
# ---------------------------------------------------------------------------------------------

WALL_DIRS = {  # wall index -> heading (radians) of its inward normal: furniture faces it
    0: 0.0,
    1: math.pi,
    2: math.pi / 2,
    3: -math.pi / 2,
}


def _furniture(
    b: _Builder, kind: str, x: float, y: float, yaw: float
) -> tuple[list[Primitive], float, float, float]:
    """Primitives of one piece, and its footprint circle (x, y, radius).

    Wall pieces (cabinet, bed, sofa, shelf) have their back on (x, y) and face `yaw`; free
    pieces are centred on (x, y).
    """
    u = b.pal.u
    rng = b.rng
    wood = b.mat(Material("planks", b.pal.wood(), scale=u(0.08, 0.2), variation=0.12))
    cloth = b.mat(Material("fabric", b.pal.fabric(), variation=0.15))
    prims: list[Primitive] = []

    def at(dx: float, dy: float = 0.0) -> tuple[float, float]:
        return _local(x, y, yaw, dx, dy)

    if kind == "cabinet":
        w, d, h = u(0.6, 2.0), u(0.4, 0.6), u(0.8, 2.2)
        col = b.mat(Material("paint", b.pal.paint() if rng.random() < 0.5 else b.pal.wood()))
        prims.append(_box(*at(d / 2 + 0.01), 0.0, d, w, h, yaw, col, wood))
        return prims, *at(d / 2), math.hypot(w, d) / 2
    if kind == "bed":
        w, length = u(0.9, 1.8), u(1.9, 2.1)
        prims.append(_box(*at(0.04), 0.0, 0.06, w, u(0.9, 1.2), yaw, wood))
        prims.append(_box(*at(0.07 + length / 2), 0.0, length, w, u(0.45, 0.6), yaw, cloth))
        return prims, *at(length / 2), math.hypot(w, length) / 2
    if kind == "sofa":
        w, d = u(1.5, 2.4), u(0.8, 0.95)
        prims.append(_box(*at(d / 2 + 0.01), 0.0, d, w, u(0.4, 0.47), yaw, cloth))
        prims.append(_box(*at(0.11), 0.0, 0.2, w, u(0.8, 0.9), yaw, cloth))
        return prims, *at(d / 2), math.hypot(w, d) / 2
    if kind == "shelf":
        w, h = u(0.8, 1.6), u(1.6, 2.2)
        prims.append(_box(*at(0.185), 0.0, 0.35, w, h, yaw, wood))
        return prims, *at(0.185), math.hypot(w, 0.35) / 2
    if kind == "table":
        w, d, h = u(0.8, 2.0), u(0.7, 1.0), u(0.72, 0.77)
        prims.append(_box(x, y, h - 0.04, d, w, 0.04, yaw, wood))
        r = u(0.02, 0.04)
        for sx in (-1, 1):
            for sy in (-1, 1):
                lx, ly = at(sx * (d / 2 - 0.06), sy * (w / 2 - 0.06))
                prims.append(Cylinder(lx, ly, r, 0.0, h - 0.04, wood))
        return prims, x, y, math.hypot(w, d) / 2
    if kind == "round_table":
        r, h = u(0.4, 0.65), u(0.72, 0.77)
        prims.append(Cylinder(x, y, r, h - 0.04, h, wood))
        prims.append(Cylinder(x, y, u(0.04, 0.08), 0.0, h - 0.04, wood))
        return prims, x, y, r
    if kind == "chair":
        s = u(0.42, 0.5)
        prims.append(_box(x, y, u(0.43, 0.47), s, s, 0.05, yaw, wood))
        prims.append(_box(*at(-s / 2 + 0.025), 0.45, 0.05, s, u(0.4, 0.5), yaw, wood))
        for side in (-1, 1):
            prims.append(_box(*at(0, side * (s / 2 - 0.02)), 0.0, s, 0.04, 0.45, yaw, wood))
        return prims, x, y, s * 0.75
    if kind == "plant":
        r = u(0.12, 0.25)
        pot = b.mat(Material("paint", b.pal.grey(0.3, 0.8)))
        leaf = b.mat(Material("foliage", _linear(u(0.22, 0.36), 0.7, 0.35), (0.02, 0.06, 0.01)))
        hp, rc = u(0.3, 0.55), u(0.3, 0.55)
        prims.append(Cylinder(x, y, r, 0.0, hp, pot))
        prims.append(Sphere((x, y, hp + rc * 0.8), rc, leaf))
        return prims, x, y, max(r, rc)
    if kind == "lamp":
        metal = b.mat(Material("paint", b.pal.grey(0.05, 0.6)))
        shade = b.mat(Material("fabric", _linear(u(0.05, 0.15), u(0.1, 0.4), 0.9)))
        h = u(1.4, 1.8)
        prims.append(Cylinder(x, y, 0.015, 0.0, h, metal))
        prims.append(Cylinder(x, y, u(0.15, 0.25), h, h + 0.25, shade))
        prims.append(Cylinder(x, y, 0.15, 0.0, 0.03, metal))
        return prims, x, y, 0.25
    if kind == "pillar":
        s = u(0.3, 0.6)
        col = b.mat(Material("paint", b.pal.paint()))
        prims.append(_box(x, y, 0.0, s, s, 6.0, 0.0, col))  # hidden above the ceiling
        return prims, x, y, s * 0.71
    raise ValueError(f"unknown furniture {kind!r}")


WALL_FURNITURE = ("cabinet", "bed", "sofa", "shelf", "cabinet", "sofa")
FREE_FURNITURE = ("table", "round_table", "chair", "chair", "plant", "lamp", "table")


def _indoor(seed: int, rng: _Rand) -> Scene:
    b = _Builder(rng)
    u = b.pal.u
    lx = 3.0 + 12.0 * rng.random() ** 1.6
    ly = 3.0 + 12.0 * rng.random() ** 1.6
    hc = 2.4 + 1.6 * rng.random() ** 1.5
    room = Room(0.0, lx, 0.0, ly, hc)
    margin = u(1.5, 5.0)
    shell = Room(-margin, lx + margin, -margin, ly + margin, hc)

    floor_kind = rng.integers(3)
    if floor_kind == 0:
        floor = Material("planks", b.pal.wood(), scale=u(0.1, 0.25), variation=0.15)
    elif floor_kind == 1:
        tile = u(0.3, 0.8)
        floor = Material("tiles", b.pal.grey(0.3, 0.9), b.pal.grey(0.1, 0.5), tile, 0.1)
    else:
        floor = Material("fabric", b.pal.fabric(), variation=0.2)
    wall = (
        Material("stripes", b.pal.paint(), b.pal.paint(), scale=u(0.05, 0.4))
        if rng.random() < 0.2
        else Material("paint", b.pal.paint(), variation=0.06)
    )
    ceiling = Material("ceiling", b.pal.grey(0.75, 0.95), scale=0.6 * (rng.random() < 0.4))
    room_mats = (b.mat(wall), b.mat(floor), b.mat(ceiling))
    shell_mats = (
        b.mat(Material("paint", b.pal.paint(), variation=0.06)),
        b.mat(Material("planks", b.pal.wood(), scale=u(0.1, 0.25), variation=0.15)),
        room_mats[2],
    )
    frame_mat = b.mat(Material("paint", b.pal.grey(0.6, 0.95)))
    door_mat = b.mat(Material("planks", b.pal.wood(), scale=u(0.2, 0.5), variation=0.05))
    window_mat = b.mat(Material("plain", _linear(u(0.55, 0.62), u(0.1, 0.4), 1.0)))
    base_mat = b.mat(Material("paint", b.pal.grey(0.1, 0.95)))

    # Doors and windows, spaced along the walls.
    wall_len = {0: ly, 1: ly, 2: lx, 3: lx}
    taken: dict[int, list[tuple[float, float]]] = {w: [] for w in range(4)}
    openings: list[Opening] = []
    decals: list[Decal] = []

    def place(wall: int, width: float) -> float | None:
        length = wall_len[wall]
        if length < width + 0.6:
            return None
        for _ in range(10):
            s0 = u(0.3, length - width - 0.3)
            if all(s0 + width + 0.2 < a or s0 > c + 0.2 for a, c in taken[wall]):
                taken[wall].append((s0, s0 + width))
                return s0
        return None

    for _ in range(int(rng.integers(1, 4))):
        wall = int(rng.integers(4))
        width = u(0.8, 1.0) if rng.random() < 0.85 else u(1.4, 1.8)
        dh = u(2.0, 2.15)
        s0 = place(wall, width)
        if s0 is None:
            continue
        s1 = s0 + width
        decals.append(Decal(wall, s0 - 0.07, s1 + 0.07, 0.0, dh + 0.07, frame_mat))
        if rng.random() < 0.6:
            openings.append(Opening(wall, s0, s1, 0.0, dh))
        else:
            decals.append(Decal(wall, s0, s1, 0.0, dh, door_mat))
    for _ in range(int(rng.integers(0, 4))):
        wall = int(rng.integers(4))
        width = u(0.8, 2.5)
        sill = u(0.8, 1.0)
        top = min(sill + u(1.2, 1.6), hc - 0.2)
        s0 = place(wall, width)
        if s0 is None:
            continue
        decals.append(Decal(wall, s0 - 0.06, s0 + width + 0.06, sill - 0.06, top + 0.06, frame_mat))
        decals.append(Decal(wall, s0, s0 + width, sill, top, window_mat, emissive=u(1.2, 2.5)))
    for _ in range(int(rng.integers(0, 5))):  # pictures and posters, hung at eye height
        wall = int(rng.integers(4))
        width = u(0.4, 1.4)
        pic_h = width * u(0.6, 1.4)
        centre = u(1.4, 1.7)
        s0 = place(wall, width)
        if s0 is None:
            continue
        taken[wall].pop()  # furniture may stand under a picture
        if centre + pic_h / 2 > hc - 0.1:
            continue
        z0, z1 = centre - pic_h / 2, centre + pic_h / 2
        art = Material(
            "stripes" if rng.random() < 0.5 else "plain",
            b.pal.fabric(),
            b.pal.fabric(),
            scale=u(0.03, 0.3),
            variation=0.4,
        )
        decals.append(Decal(wall, s0 - 0.04, s0 + width + 0.04, z0 - 0.04, z1 + 0.04, frame_mat))
        decals.append(Decal(wall, s0, s0 + width, z0, z1, b.mat(art)))
    base_h = u(0.06, 0.12)
    for w in range(4):
        decals.append(Decal(w, -1.0, wall_len[w] + 1.0, 0.0, base_h, base_mat))

    # Path first, then furniture around it.
    half_x, half_y = lx / 2, ly / 2
    # A loop around the room centre, along the room's long axis, >= 0.9 m from the walls.
    long_x = lx >= ly
    radius = max(0.3, (min(half_x, half_y) - 0.9) * u(0.3, 0.8))
    straight = max(0.0, (abs(half_x - half_y) + radius) * u(0.0, 0.8) - radius)
    path = CameraPath(
        half_x, half_y, straight, radius, 0.0 if long_x else math.pi / 2,
        u(*INDOOR_CAMERA_HEIGHT), WALKING_SPEED,
    )  # fmt: skip
    path_xy = path.samples()
    n_items = int(np.clip(lx * ly / 5, 3, 14)) + int(rng.integers(0, 3))
    for _ in range(n_items):
        for _attempt in range(8):
            if rng.random() < 0.5:
                kind = WALL_FURNITURE[int(rng.integers(len(WALL_FURNITURE)))]
                wall = int(rng.integers(4))
                yaw = WALL_DIRS[wall]
                s = u(0.6, wall_len[wall] - 0.6)
                if any(a - 1.0 < s < c + 1.0 for a, c in taken[wall]):
                    continue  # keep doorways and windows clear
                x, y = {0: (0.0, s), 1: (lx, s), 2: (s, 0.0), 3: (s, ly)}[wall]
            else:
                kind = FREE_FURNITURE[int(rng.integers(len(FREE_FURNITURE)))]
                if lx * ly > 40 and rng.random() < 0.15:
                    kind = "pillar"
                x, y, yaw = u(0.5, lx - 0.5), u(0.5, ly - 0.5), u(-math.pi, math.pi)
            n_mats = len(b.materials)
            prims, fx, fy, r = _furniture(b, kind, x, y, yaw)
            inside = all(_inside_room(p, room) for p in prims)
            if inside and b.fits(fx, fy, r, path_xy, PATH_CLEARANCE):
                b.add(prims, fx, fy, r)
                break
            del b.materials[n_mats:]  # drop the rejected piece's materials

    lamps = []
    n_lamps = int(rng.integers(1, 5))
    for i in range(n_lamps):
        fx = (i + 0.5) / n_lamps if lx >= ly else 0.5
        fy = (i + 0.5) / n_lamps if lx < ly else 0.5
        lamps.append((fx * lx, fy * ly, hc - 0.02, u(0.12, 0.3)))
    key = np.array([u(-0.5, 0.5), u(-0.5, 0.5), 1.0])
    key /= np.linalg.norm(key)
    lighting = Lighting(
        key_dir=tuple(key),
        key_color=_linear(u(0.08, 0.15), u(0.0, 0.25), 1.0),
        ambient=u(0.45, 0.65),
        points=tuple((x, y, z - 0.3) for x, y, z, _ in lamps),
        point_power=u(1.5, 4.0),
        sky_color=(0.8, 0.8, 0.8),
    )
    return Scene(
        seed=seed,
        kind="indoor",
        layout="room",
        primitives=tuple(b.prims),
        materials=tuple(b.materials),
        lighting=lighting,
        path=path,
        camera_height=INDOOR_CAMERA_HEIGHT,
        room=room,
        shell=shell,
        openings=tuple(openings),
        decals=tuple(decals),
        room_materials=room_mats,
        shell_materials=shell_mats,
        lamps=tuple(lamps),
    )


def _inside_room(prim: Primitive, room: Room) -> bool:
    r = prim.footprint_radius() if isinstance(prim, (Cylinder, Sphere)) else 0.0
    if isinstance(prim, Box):
        # Corners of the rotated footprint.
        c, s = math.cos(prim.yaw), math.sin(prim.yaw)
        hx, hy = prim.half[0], prim.half[1]
        xs = [prim.center[0] + c * a * hx - s * b * hy for a in (-1, 1) for b in (-1, 1)]
        ys = [prim.center[1] + s * a * hx + c * b * hy for a in (-1, 1) for b in (-1, 1)]
    else:
        xs, ys = [prim.center[0]], [prim.center[1]]
    eps = 0.01
    return (
        min(xs) - r >= room.x0 + eps
        and max(xs) + r <= room.x1 - eps
        and min(ys) - r >= room.y0 + eps
        and max(ys) + r <= room.y1 - eps
    )


# ---------------------------------------------------------------------------------------------
# Outdoor
# ---------------------------------------------------------------------------------------------


def _building(b: _Builder, x, y, yaw, length, depth, max_height) -> Box:
    u = b.pal.u
    floor_h = u(3.0, 3.6)
    # round() rounds halves to even, as np.round does; plain Python on scalars is much cheaper.
    floors = min(max(round(b.rng.gamma(2.0, 2.0)), 1), max(1, int(max_height / floor_h)))
    height = floors * floor_h + u(0.2, 0.8)
    extra = (u(2.5, 4.0), u(1.0, 1.8), u(1.2, 1.8), u(0.8, 1.0))
    glass = _linear(u(0.5, 0.65), u(0.1, 0.4), u(0.15, 0.45))
    if b.rng.random() < 0.25:
        wall = Material("bricks", b.pal.facade(), b.pal.grey(0.4, 0.7), scale=0.075, variation=0.2)
        wall = Material("facade", wall.color, glass, floor_h, 0.1, extra)
    else:
        wall = Material("facade", b.pal.facade(), glass, floor_h, 0.08, extra)
    roof = Material("concrete", b.pal.grey(0.15, 0.5), variation=0.2)
    return _box(x, y, 0.0, length, depth, height, yaw, b.mat(wall), b.mat(roof))


def _tree(b: _Builder, x: float, y: float) -> tuple[list[Primitive], float]:
    u = b.pal.u
    bark = b.mat(Material("bark", _linear(0.07, 0.5, 0.3), _linear(0.07, 0.4, 0.15)))
    leaf = b.mat(
        Material("foliage", _linear(u(0.18, 0.35), u(0.5, 0.8), u(0.25, 0.5)), (0.01, 0.04, 0.01))
    )
    # Crowns start above TREE_CLEAR_M, so cameras on foot pass under them.
    trunk_r, trunk_h, crown = u(0.12, 0.3), u(TREE_CLEAR_M, 4.5), u(1.5, 3.2)
    prims = [
        Cylinder(x, y, trunk_r, 0.0, trunk_h + crown * 0.5, bark),
        Sphere((x, y, trunk_h + crown), crown, leaf),
    ]
    return prims, trunk_r


def _pole(b: _Builder, x: float, y: float) -> tuple[list[Primitive], float]:
    u = b.pal.u
    metal = b.mat(Material("paint", b.pal.grey(0.05, 0.5)))
    h = u(5.0, 9.0)
    return [Cylinder(x, y, u(0.06, 0.12), 0.0, h, metal), Sphere((x, y, h), 0.25, metal)], 0.12


def _car(b: _Builder, x: float, y: float, yaw: float) -> tuple[list[Primitive], float]:
    u = b.pal.u
    col = b.pal.fabric() if b.rng.random() < 0.5 else b.pal.grey(0.05, 0.95)
    paint = b.mat(Material("paint", col, variation=0.03))
    glass = b.mat(Material("glass", (0.02, 0.025, 0.03)))
    length, width = u(4.2, 4.8), u(1.7, 1.9)
    prims = [
        _box(x, y, 0.18, length, width, u(0.65, 0.8), yaw, paint),
        _box(*_local(x, y, yaw, -0.2, 0), 0.9, length * 0.5, width * 0.88, 0.5, yaw, glass, paint),
    ]
    return prims, length / 2


def _skyline(b: _Builder) -> None:
    """Distant buildings 150-400 m away in all directions: far structure beyond the scene."""
    for _ in range(int(b.rng.integers(4, 12))):
        ang, dist = b.pal.u(-math.pi, math.pi), b.pal.u(150, 400)
        x, y = dist * math.cos(ang), dist * math.sin(ang)
        size = b.pal.u(20, 60)
        box = _building(b, x, y, b.pal.u(0, math.pi), size, size, b.pal.u(15, 90))
        b.add([box], x, y, box.footprint_radius())


def _sky_and_light(b: _Builder, rng: _Rand) -> tuple[Sky, Lighting]:
    u = b.pal.u
    elev, azim = math.radians(u(12, 70)), u(-math.pi, math.pi)
    sun = (math.cos(elev) * math.cos(azim), math.cos(elev) * math.sin(azim), math.sin(elev))
    warm = max(0.0, 1 - elev / math.radians(40))
    sun_color = (1.0, 0.95 - 0.2 * warm, 0.85 - 0.4 * warm)
    overcast = rng.random() < 0.25
    sky = Sky(
        zenith=_linear(u(0.56, 0.62), u(0.3, 0.7) * (0.3 if overcast else 1), u(0.7, 0.95)),
        horizon=_linear(u(0.55, 0.62), u(0.05, 0.25), u(0.85, 1.0)),
        sun=sun,
        sun_color=sun_color,
        clouds=u(0.6, 0.9) if overcast else u(0.0, 0.5),
    )
    lighting = Lighting(
        key_dir=sun,
        key_color=tuple(c * (0.5 if overcast else 1.0) for c in sun_color),
        ambient=u(0.55, 0.75) if overcast else u(0.3, 0.5),
        sky_color=(0.75, 0.85, 1.0),
        haze_m=u(600, 4000),
        haze_color=sky.horizon,
    )
    return sky, lighting


def _street(seed: int, rng: _Rand) -> Scene:
    b = _Builder(rng)
    u = b.pal.u
    ground = GroundLayout(
        "street",
        road_half=u(3.0, 7.0),
        walk=u(1.5, 4.0),
        asphalt=b.pal.grey(0.08, 0.3),
        paving=b.pal.grey(0.35, 0.7),
        grass=_linear(u(0.2, 0.3), u(0.5, 0.8), u(0.25, 0.45)),
        tile=u(0.3, 0.6),
    )
    # Up one side of the road and back down the other, turning within the road.
    path = CameraPath(
        u(-10, 10), 0.0, u(10, 40), u(1.0, ground.road_half - 1.2), 0.0,
        u(*OUTDOOR_CAMERA_HEIGHT), STREET_SPEED,
    )  # fmt: skip
    path_xy = path.samples()
    reach = u(120, 220)
    for side in (-1.0, 1.0):
        x = -reach
        while x < reach:
            length = u(8, 30)
            depth = u(8, 20)
            setback = u(0, 2.5)
            y = side * (ground.road_half + ground.walk + setback + depth / 2)
            box = _building(b, x + length / 2, y, 0.0, length, depth, 45.0)
            b.add([box], x + length / 2, y, 0.0)  # rows never collide with the road path
            x += length + (u(0, 6) if rng.random() < 0.75 else u(10, 25))
    walk_y = ground.road_half + ground.walk * 0.5
    for side in (-1.0, 1.0):
        x = u(-80, -60)
        while x < 80:
            if rng.random() < 0.6:
                prims, r = _tree(b, x, side * walk_y)
                if b.fits(x, side * walk_y, r, path_xy, PATH_CLEARANCE):
                    b.add(prims, x, side * walk_y, r)
            x += u(8, 15)
        x = u(-100, -80)
        while x < 100:
            py = side * (ground.road_half + 0.4)
            prims, r = _pole(b, x, py)
            if b.fits(x, py, r, path_xy, PATH_CLEARANCE):
                b.add(prims, x, py, r)
            x += u(25, 35)
    for _ in range(int(rng.integers(4, 14))):
        side = 1.0 if rng.random() < 0.5 else -1.0
        x = u(-60, 60)
        y = side * (ground.road_half - 1.1) if rng.random() < 0.7 else side * ground.road_half / 2
        prims, r = _car(b, x, y, 0.0 if rng.random() < 0.8 else math.pi)
        if b.fits(x, y, r, path_xy, PATH_CLEARANCE + 1.0):
            b.add(prims, x, y, r)
    _skyline(b)
    sky, lighting = _sky_and_light(b, rng)
    return Scene(
        seed, "outdoor", "street", tuple(b.prims), tuple(b.materials), lighting, path,
        OUTDOOR_CAMERA_HEIGHT, ground=ground, sky=sky,
    )  # fmt: skip


def _plaza(seed: int, rng: _Rand) -> Scene:
    b = _Builder(rng)
    u = b.pal.u
    ground = GroundLayout(
        "plaza",
        paved_radius=u(12, 40),
        paving=b.pal.grey(0.3, 0.7),
        grass=_linear(u(0.2, 0.3), u(0.5, 0.8), u(0.25, 0.45)),
        tile=u(0.4, 1.0),
    )
    radius = u(4, 12)
    path = CameraPath(0.0, 0.0, radius * u(0.0, 1.0), radius, u(0, math.pi),
                      u(*OUTDOOR_CAMERA_HEIGHT), STREET_SPEED)  # fmt: skip
    path_xy = path.samples()
    for _ in range(int(rng.integers(6, 16))):
        ang, dist = u(-math.pi, math.pi), u(25, 140)
        x, y = dist * math.cos(ang), dist * math.sin(ang)
        length, depth = u(10, 40), u(10, 30)
        box = _building(b, x, y, u(0, math.pi), length, depth, 60.0)
        if b.fits(x, y, box.footprint_radius(), path_xy, 3.0):
            b.add([box], x, y, box.footprint_radius())
    for _ in range(int(rng.integers(10, 30))):
        ang, dist = u(-math.pi, math.pi), u(3, 60)
        x, y = dist * math.cos(ang), dist * math.sin(ang)
        prims, r = _tree(b, x, y)
        if b.fits(x, y, 1.0, path_xy, PATH_CLEARANCE):
            b.add(prims, x, y, r)
    for _ in range(int(rng.integers(0, 8))):
        ang, dist = u(-math.pi, math.pi), u(3, 40)
        x, y = dist * math.cos(ang), dist * math.sin(ang)
        prims, r = _pole(b, x, y) if rng.random() < 0.5 else _bench(b, x, y, u(0, math.pi))
        if b.fits(x, y, r, path_xy, PATH_CLEARANCE):
            b.add(prims, x, y, r)
    for _ in range(int(rng.integers(0, 8))):
        ang, dist = u(-math.pi, math.pi), u(8, 50)
        x, y = dist * math.cos(ang), dist * math.sin(ang)
        prims, r = _car(b, x, y, u(0, math.pi))
        if b.fits(x, y, r, path_xy, PATH_CLEARANCE + 1.0):
            b.add(prims, x, y, r)
    _skyline(b)
    sky, lighting = _sky_and_light(b, rng)
    return Scene(
        seed, "outdoor", "plaza", tuple(b.prims), tuple(b.materials), lighting, path,
        OUTDOOR_CAMERA_HEIGHT, ground=ground, sky=sky,
    )  # fmt: skip


def _bench(b: _Builder, x: float, y: float, yaw: float) -> tuple[list[Primitive], float]:
    wood = b.mat(Material("planks", b.pal.wood(), scale=0.12, variation=0.1))
    return [_box(x, y, 0.0, 0.5, 1.8, 0.45, yaw, wood)], 0.95


def _drone(seed: int, rng: _Rand) -> Scene:
    b = _Builder(rng)
    u = b.pal.u
    altitude = u(*DRONE_ALTITUDE)
    block = u(50, 90)
    ground = GroundLayout(
        "grid",
        road_half=u(4, 8),
        block=block,
        asphalt=b.pal.grey(0.08, 0.3),
        grass=_linear(u(0.2, 0.3), u(0.5, 0.8), u(0.25, 0.45)),
    )
    radius = u(15, 60)
    path = CameraPath(0.0, 0.0, 0.0, radius, 0.0, altitude, 3 * STREET_SPEED)
    reach = 200.0
    n_blocks = int(reach // block)
    max_h = altitude - 5.0  # the drone clears every roof
    for i in range(-n_blocks, n_blocks + 1):
        for j in range(-n_blocks, n_blocks + 1):
            cx, cy = i * block + block / 2, j * block + block / 2
            inner = block / 2 - ground.road_half - 2.0
            for _ in range(int(rng.integers(1, 5))):
                length, depth = u(8, 1.2 * inner), u(8, 1.2 * inner)
                x = cx + u(-1, 1) * (inner - length / 2)
                y = cy + u(-1, 1) * (inner - depth / 2)
                box = _building(b, x, y, 0.0, length, depth, max_h)
                # Circles around rectangles are loose: half the diagonal still avoids overlaps
                # between the few buildings of one block often enough to look planned.
                if b.fits(x, y, box.footprint_radius() * 0.5, np.empty((0, 2)), 0.0):
                    b.add([box], x, y, box.footprint_radius() * 0.5)
            if rng.random() < 0.5:
                x, y = cx + u(-1, 1) * inner, cy + u(-1, 1) * inner
                prims, r = _tree(b, x, y)
                if b.fits(x, y, 1.0, np.empty((0, 2)), 0.0):
                    b.add(prims, x, y, r)
    _skyline(b)
    sky, lighting = _sky_and_light(b, rng)
    return Scene(
        seed, "outdoor", "drone", tuple(b.prims), tuple(b.materials), lighting, path,
        (altitude, altitude), ground=ground, sky=sky,
    )  # fmt: skip


def make_scene(seed: int, kind: str | None = None) -> Scene:
    """Build the scene of `seed`: "indoor", "outdoor", or None to let the seed choose.

    The same (seed, kind) always gives the same scene.
    """
    if kind is not None and kind not in SCENE_KINDS:
        raise ValueError(f"scene kind must be one of {SCENE_KINDS} or None, got {kind!r}")
    with gc_paused():
        rng = _Rand(int(np.random.default_rng([int(seed), 0x5CE7E]).integers(2**63)))
        if kind is None:
            kind = SCENE_KINDS[rng.integers(2)]
        if kind == "indoor":
            return _indoor(seed, rng)
        r = rng.random()
        if r < DRONE_SHARE:
            return _drone(seed, rng)
        street = r < DRONE_SHARE + (1 - DRONE_SHARE) * 0.55
        return _street(seed, rng) if street else _plaza(seed, rng)


@contextlib.contextmanager
def gc_paused():
    """Pause Python's cyclic garbage collector (if enabled) for the block.

    A scene is thousands of small objects that live until the render is done and are then
    freed by reference counting (they hold no cycles). Their allocation would otherwise
    trigger full collections over every object of the process (~2 ms per panorama once torch
    is loaded) that find nothing to free.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()
