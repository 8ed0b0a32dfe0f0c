"""Render a procedural scene into an ERP panorama with exact range and normals.

Rays come from `dap_core.geometry.pixel_rays` (REP 103 camera frame), are turned by the camera
yaw into the world frame and cast analytically against the room, the ground and every
primitive. Each primitive is only tested on the ERP window its bounding sphere covers.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np

from dap_core.data import appearance as ap
from dap_core.data.raycast import Box, Cylinder, ground_intersect

SKY_ID, ROOM_ID, SHELL_ID, GROUND_ID, PRIM_BASE = -1, 0, 1, 2, 3
LAMP_RADIANCE = (3.0, 2.8, 2.4)  # linear radiance of ceiling lamp discs


@dataclass
class PanoramaSample:
    """One synthetic ERP panorama with exact ground truth.

    rgb      uint8 [H, W, 3] RGB.
    range_m  float32 [H, W]: metres along each pixel's ray; +inf where the ray sees sky.
    normals  float32 [H, W, 3]: unit surface normals in the camera frame (REP 103), facing
             the camera; 0 on sky.
    valid    bool [H, W]: ground truth is defined (finite range or sky); all True here.
    scene    "indoor" or "outdoor"; domain "sim" or "real_like"; seed reproduces it exactly.
    """

    rgb: np.ndarray
    range_m: np.ndarray
    normals: np.ndarray
    valid: np.ndarray
    scene: str
    domain: str
    seed: int


@functools.lru_cache(maxsize=8)
def _camera_rays(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """Read-only camera-frame rays as planes [3, H, W] float32, and column longitudes [W]."""
    import torch

    from dap_core import geometry

    rays = geometry.pixel_rays(height, width, dtype=torch.float64).numpy()
    lon, _ = geometry.pixel_lonlat(height, width, dtype=torch.float64)
    planes = np.ascontiguousarray(rays.transpose(2, 0, 1), dtype=np.float32)
    planes.setflags(write=False)
    return planes, lon.numpy()


def _rot_z(angle: float) -> np.ndarray:
    c, s = math.cos(angle), math.sin(angle)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def _window(rel_cam: np.ndarray, radius: float, height: int, width: int):
    """ERP rows (slice) and columns (slice or index array) that a sphere can cover.

    rel_cam: sphere centre minus camera position, camera frame. Returns None when empty.
    """
    dist = float(np.linalg.norm(rel_cam))
    full = (slice(0, height), slice(0, width))
    if dist <= radius * 1.001 + 1e-6:
        return full
    pad = 2.0 * math.pi / height  # two pixels of angular margin
    alpha = math.asin(min(radius / dist, 1.0)) + pad
    lat_c = math.asin(max(-1.0, min(1.0, rel_cam[2] / dist)))
    lon_c = math.atan2(rel_cam[1], rel_cam[0])
    lat_hi, lat_lo = lat_c + alpha, lat_c - alpha
    r0 = max(0, math.floor(height * (0.5 - lat_hi / math.pi) - 0.5))
    r1 = min(height, math.ceil(height * (0.5 - lat_lo / math.pi) - 0.5) + 1)
    if r0 >= r1:
        return None
    rows = slice(r0, r1)
    if lat_hi >= math.pi / 2 or lat_lo <= -math.pi / 2:
        return rows, slice(0, width)
    sin_dl = math.sin(alpha) / math.cos(max(abs(lat_hi), abs(lat_lo)))
    if sin_dl >= 1.0:
        return rows, slice(0, width)
    dl = math.asin(sin_dl)
    u0 = math.floor(width / 2 * (1 - (lon_c + dl) / math.pi) - 0.5)
    u1 = math.ceil(width / 2 * (1 - (lon_c - dl) / math.pi) - 0.5)
    if u1 - u0 + 1 >= width:
        return rows, slice(0, width)
    if u0 >= 0 and u1 < width:
        return rows, slice(u0, u1 + 1)
    return rows, np.arange(u0, u1 + 1) % width


def _footprint_distance(prim, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Horizontal distance [N] from points to a primitive's footprint (0 inside)."""
    if isinstance(prim, Box):
        c, s = math.cos(prim.yaw), math.sin(prim.yaw)
        dx, dy = x - prim.center[0], y - prim.center[1]
        lx = np.maximum(np.abs(c * dx + s * dy) - prim.half[0], 0.0)
        ly = np.maximum(np.abs(-s * dx + c * dy) - prim.half[1], 0.0)
        return np.hypot(lx, ly)
    cx, cy = prim.center[0], prim.center[1]
    r = prim.radius
    return np.maximum(np.hypot(x - cx, y - cy) - r, 0.0)


class _Frame:
    """Per-render buffers: world ray planes, hit distance, object id and room face per pixel."""

    def __init__(self, o: np.ndarray, rays_cam: np.ndarray, yaw: float):
        self.o = o
        c, s = np.float32(math.cos(yaw)), np.float32(math.sin(yaw))
        cx, cy, cz = rays_cam
        self.dx, self.dy, self.dz = c * cx - s * cy, s * cx + c * cy, cz
        shape = cz.shape
        self.t = np.full(shape, np.inf, dtype=np.float32)
        self.ids = np.full(shape, SKY_ID, dtype=np.int16)
        self.face = np.zeros(shape, dtype=np.int8)

    def cast(self, obj, obj_id: int, window) -> None:
        rows, cols = window
        sub = (rows, cols)
        if isinstance(cols, slice):
            t = obj.intersect(self.o, self.dx[sub], self.dy[sub], self.dz[sub])
            cur = self.t[sub]
            closer = t < cur
            cur[closer] = t[closer]  # views write straight into the buffers
            self.ids[sub][closer] = obj_id
            return
        t = obj.intersect(
            self.o, self.dx[rows][:, cols], self.dy[rows][:, cols], self.dz[rows][:, cols]
        )
        cur = self.t[rows][:, cols]
        closer = t < cur
        if closer.any():
            self.t[rows, cols] = np.where(closer, t, cur)
            self.ids[rows, cols] = np.where(closer, np.int16(obj_id), self.ids[rows][:, cols])


def _cast_room(frame: _Frame, scene) -> None:
    t, face = scene.room.intersect(frame.o, frame.dx, frame.dy, frame.dz)
    ids = np.full(t.shape, ROOM_ID, dtype=np.int16)
    if scene.openings:
        wall = face < 4
        s = np.where(face < 2, frame.o[1] + t * frame.dy, frame.o[0] + t * frame.dx)
        z = frame.o[2] + t * frame.dz
        through = np.zeros(t.shape, dtype=bool)
        for op in scene.openings:
            through |= (face == op.wall) & (s > op.s0) & (s < op.s1) & (z > op.z0) & (z < op.z1)
        through &= wall
        if through.any():
            t2, f2 = scene.shell.intersect(
                frame.o, frame.dx[through], frame.dy[through], frame.dz[through]
            )
            t[through], face[through], ids[through] = t2, f2, SHELL_ID
    frame.t, frame.face, frame.ids = t, face, ids


_ROOM_NORMALS = np.array(
    [[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=np.float32
)  # inward normal of each room face


def _room_face(scene, q: np.ndarray, face: int, is_room: bool, noise, style):
    """Albedo [N, 3] and emitted radiance [N, 3] (or None) of points on one room face."""
    mats = scene.room_materials if is_room else scene.shell_materials
    if face < 4:
        s, t, mat_id = q[:, 1] if face < 2 else q[:, 0], q[:, 2], mats[0]
    else:
        s, t, mat_id = q[:, 0], q[:, 1], mats[1 if face == 4 else 2]
    alb = ap.albedo(scene.materials[mat_id], s, t, noise, style, mat_id)
    emit = None
    if not is_room:
        return alb, emit
    if face < 4:
        for dec in scene.decals:
            if dec.wall != face:
                continue
            m = np.flatnonzero((s >= dec.s0) & (s <= dec.s1) & (t >= dec.z0) & (t <= dec.z1))
            if m.size == 0:
                continue
            alb[m] = ap.albedo(scene.materials[dec.material], s[m], t[m], noise, style,
                               dec.material)  # fmt: skip
            if dec.emissive > 0:
                emit = np.zeros_like(alb) if emit is None else emit
                emit[m] = alb[m] * np.float32(dec.emissive)
    elif face == 5:
        for x, y, _, r in scene.lamps:
            m = (s - np.float32(x)) ** 2 + (t - np.float32(y)) ** 2 < np.float32(r * r)
            if m.any():
                emit = np.zeros_like(alb) if emit is None else emit
                emit[m] = LAMP_RADIANCE
    return alb, emit


def _occlusion(scene, ids, face, p, prim_on_floor) -> np.ndarray:
    """Ambient occlusion in (0, 1] [N]: corners, contact and furniture shadows (real_like)."""
    occ = np.ones(p.shape[0], dtype=np.float32)
    room = scene.room
    in_room = ids == ROOM_ID
    floorish = (in_room & (face == 4)) | (ids == GROUND_ID)
    if room is not None and in_room.any():
        q = p[in_room]
        f = face[in_room]
        dists = np.stack(
            [q[:, 0] - room.x0, room.x1 - q[:, 0], q[:, 1] - room.y0, room.y1 - q[:, 1],
             q[:, 2], room.height - q[:, 2]], axis=1,
        )  # fmt: skip
        dists[np.arange(len(f)), f] = np.inf  # a surface does not occlude itself
        occ[in_room] *= 1 - 0.35 * np.exp(-dists.min(axis=1) / 0.3)
    prims = ids >= PRIM_BASE
    occ[prims] *= 1 - 0.3 * np.exp(-p[prims, 2] / 0.25)
    if floorish.any():
        fi = np.flatnonzero(floorish)
        fx, fy = p[fi, 0], p[fi, 1]
        for prim in prim_on_floor:
            reach = prim.footprint_radius() + 0.6
            near = (np.abs(fx - prim.center[0]) < reach) & (np.abs(fy - prim.center[1]) < reach)
            if near.any():
                dist = _footprint_distance(prim, fx[near], fy[near])
                occ[fi[near]] *= 1 - 0.45 * np.exp(-dist / 0.2)
    return occ


def _sun_shadow(scene, p: np.ndarray) -> np.ndarray:
    """1 where ground points see the sun, 0.35 in the shadow of buildings, trees and cars."""
    sun = np.asarray(scene.lighting.key_dir)
    lit = np.ones(p.shape[0], dtype=np.float32)
    tan_elev = sun[2] / max(math.hypot(sun[0], sun[1]), 1e-6)
    sxy = sun[:2] / max(np.linalg.norm(sun[:2]), 1e-9)
    for prim in scene.primitives:
        z_top = prim.z_range[1]
        length = z_top / max(tan_elev, 0.05)
        r = prim.footprint_radius()
        c = np.asarray(prim.center[:2])
        tip = c - sxy * length
        lo, hi = np.minimum(c, tip) - r, np.maximum(c, tip) + r
        near = (p[:, 0] > lo[0]) & (p[:, 0] < hi[0]) & (p[:, 1] > lo[1]) & (p[:, 1] < hi[1])
        if not near.any():
            continue
        idx = np.flatnonzero(near)
        hit = _hits_towards(prim, p[idx], sun)
        lit[idx[hit]] = 0.35
    return lit


def _hits_towards(prim, origins: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Whether rays from many origins [N, 3] along one direction d [3] hit the primitive."""
    if isinstance(prim, Box):
        R = _rot_z(prim.yaw)
        ol = (origins - np.asarray(prim.center)) @ R
        dl = d @ R
        h = np.asarray(prim.half)
        with np.errstate(divide="ignore", invalid="ignore"):
            t1 = (-h - ol) / dl
            t2 = (h - ol) / dl
        tn = np.minimum(t1, t2).max(axis=1)
        tf = np.maximum(t1, t2).min(axis=1)
        return (tn <= tf) & (tf > 0)
    if isinstance(prim, Cylinder):
        ox, oy = origins[:, 0] - prim.x, origins[:, 1] - prim.y
        a = d[0] ** 2 + d[1] ** 2
        b = ox * d[0] + oy * d[1]
        c = ox * ox + oy * oy - prim.radius**2
        disc = b * b - a * c
        tt = (-b - np.sqrt(np.maximum(disc, 0))) / max(a, 1e-12)
        z = origins[:, 2] + tt * d[2]
        return (disc > 0) & (tt > 0) & (z < prim.z1)
    oc = origins - np.asarray(prim.center)
    b = oc @ d
    c = (oc * oc).sum(1) - prim.radius**2
    return (b * b - c > 0) & (-b > 0)


def render_scene(scene, position, yaw_rad: float, height: int, width: int, domain: str,
                 noise_seed: int) -> PanoramaSample:  # fmt: skip
    """Render `scene` from `position` (xyz metres, world) with camera yaw `yaw_rad`."""
    ap.check_domain(domain)
    if height < 2 or width != 2 * height:
        raise ValueError(f"panorama size must be H x 2H, got {height}x{width}")
    o = np.asarray(position, dtype=np.float64).reshape(3)
    if scene.room is not None and not scene.room.contains(o):
        raise ValueError(f"camera position {o.tolist()} is outside the room")
    if scene.ground is not None and o[2] <= 0:
        raise ValueError(f"camera height {o[2]} m must be above the ground")
    rays_cam, lon = _camera_rays(height, width)
    yaw = float(yaw_rad)
    R = _rot_z(yaw)
    frame = _Frame(o, rays_cam, yaw)

    if scene.room is not None:
        _cast_room(frame, scene)
    if scene.ground is not None:
        frame.t = ground_intersect(o, frame.dz)
        frame.ids[np.isfinite(frame.t)] = GROUND_ID
    for k, prim in enumerate(scene.primitives):
        rel = R.T @ (np.asarray(prim.center) - o)
        window = _window(rel, prim.bounding_radius(), height, width)
        if window is not None:
            frame.cast(prim, PRIM_BASE + k, window)

    rng = np.random.default_rng([int(scene.seed), int(noise_seed), 0xC0105])
    style = ap.Style.draw(domain, rng)
    noise = ap.NoiseBank(np.random.default_rng([int(scene.seed), 0x7E87]))

    t = frame.t.reshape(-1)
    ids = frame.ids.reshape(-1)
    # Process hit pixels sorted by (object, room face): every group is a contiguous slice.
    key = ids.astype(np.int32) * 8 + np.where(ids <= SHELL_ID, frame.face.reshape(-1), 0)
    order = np.argsort(key, kind="stable")
    n_sky = int(np.count_nonzero(ids == SKY_ID))
    sky, hit = order[:n_sky], order[n_sky:]  # sky sorts first (id -1)
    key = key[hit]
    starts = np.flatnonzero(np.diff(key, prepend=np.int32(-1)))
    bounds = [*starts[1:].tolist(), hit.shape[0]]
    dxf, dyf, dzf = frame.dx.reshape(-1), frame.dy.reshape(-1), frame.dz.reshape(-1)
    d = np.stack([dxf[hit], dyf[hit], dzf[hit]], axis=1)  # [N, 3]
    p = o.astype(np.float32) + t[hit, None] * d  # [N, 3] world hit points
    n = np.empty(p.shape, dtype=np.float32)
    alb = np.empty(p.shape, dtype=np.float32)
    emit = None
    for a, b in zip(starts.tolist(), bounds, strict=True):
        obj_id, face = divmod(int(key[a]), 8)
        q = p[a:b]
        if obj_id in (ROOM_ID, SHELL_ID):
            n[a:b] = _ROOM_NORMALS[face]
            alb[a:b], e = _room_face(scene, q, face, obj_id == ROOM_ID, noise, style)
            if e is not None:
                emit = np.zeros_like(alb) if emit is None else emit
                emit[a:b] = e
        elif obj_id == GROUND_ID:
            n[a:b] = (0.0, 0.0, 1.0)
            alb[a:b] = ap.ground_albedo(scene.ground, q[:, 0], q[:, 1], noise, style)
        else:
            prim = scene.primitives[obj_id - PRIM_BASE]
            n[a:b], mat_ids, s_uv, t_uv = prim.surface(q)
            if (mat_ids == mat_ids[0]).all():
                m = int(mat_ids[0])
                alb[a:b] = ap.albedo(scene.materials[m], s_uv, t_uv, noise, style, m)
                continue
            for m in np.unique(mat_ids).tolist():
                mm = np.flatnonzero(mat_ids == m)
                alb[a + mm] = ap.albedo(scene.materials[m], s_uv[mm], t_uv[mm], noise, style, m)
    h_ids = (key >> 3).astype(np.int16)
    h_face = (key & 7).astype(np.int8)

    occlusion = None
    if domain == "real_like":
        on_floor = [pr for pr in scene.primitives if pr.z_range[0] < 0.05]
        occlusion = _occlusion(scene, h_ids, h_face, p, on_floor)
        if scene.ground is not None:
            ground = h_ids == GROUND_ID
            occlusion[ground] *= _sun_shadow(scene, p[ground])
    radiance = np.zeros((t.shape[0], 3), dtype=np.float32)
    shaded = ap.shade(alb, p, n, d, scene.lighting, style, occlusion)
    radiance[hit] = shaded if emit is None else shaded + emit
    if scene.sky is not None and n_sky:
        d_sky = np.stack([dxf[sky], dyf[sky], dzf[sky]], axis=1)
        radiance[sky] = ap.sky_radiance(scene.sky, d_sky, noise, style)
    normals = np.zeros((t.shape[0], 3), dtype=np.float32)
    c, s_ = np.float32(math.cos(yaw)), np.float32(math.sin(yaw))
    normals[hit, 0] = c * n[:, 0] + s_ * n[:, 1]  # world -> camera frame: rotate by -yaw
    normals[hit, 1] = c * n[:, 1] - s_ * n[:, 0]
    normals[hit, 2] = n[:, 2]

    range_m = frame.t.astype(np.float32, copy=False)
    radiance = ap.apply_haze(radiance.reshape(height, width, 3), range_m, scene.lighting, style)
    rgb = ap.camera_pipeline(radiance, lon, style, rng)
    return PanoramaSample(
        rgb=rgb,
        range_m=range_m,
        normals=normals.reshape(height, width, 3),
        valid=np.ones((height, width), dtype=bool),
        scene=scene.kind,
        domain=domain,
        seed=int(scene.seed),
    )
