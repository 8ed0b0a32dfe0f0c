"""Render a procedural scene into an ERP panorama with exact range and normals.

Rays come from `dap_core.geometry.pixel_rays` (REP 103 camera frame), are turned by the camera
yaw into the world frame and cast analytically against the room, the ground and every
primitive. Each primitive is only tested on the ERP window it can cover (a lon/lat box
around its footprint prism or bounding sphere), so small or distant objects cost little.
"""

from __future__ import annotations

import ctypes
import functools
import math
from dataclasses import dataclass

import cv2
import numpy as np

from dap_core.data import appearance as ap
from dap_core.data import occlusion as occ
from dap_core.data.raycast import Box, Sphere, ground_intersect

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
def _camera_rays(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read-only camera-frame rays as planes [3, H, W] float32, 1 / their z plane [H, W] (a
    yaw keeps z, so every render reuses it), and column longitudes [W] radians."""
    import torch

    from dap_core import geometry

    rays = geometry.pixel_rays(height, width, dtype=torch.float64).numpy()
    lon, _ = geometry.pixel_lonlat(height, width, dtype=torch.float64)
    planes = np.ascontiguousarray(rays.transpose(2, 0, 1), dtype=np.float32)
    with np.errstate(divide="ignore"):
        inv_z = np.float32(1.0) / planes[2]
    for a in (planes, inv_z):
        a.setflags(write=False)
    return planes, inv_z, lon.numpy()


@functools.lru_cache(maxsize=16)
def _noise_bank(scene_seed: int) -> ap.NoiseBank:
    """The scene's texture noise (read-only; shared by all renders of the scene)."""
    return ap.NoiseBank(np.random.default_rng([scene_seed, 0x7E87]))


@functools.lru_cache(maxsize=1)
def _keep_freed_memory() -> bool:
    """Ask glibc to keep freed blocks of up to 8 MB in the heap and up to 32 MB of free heap
    top, instead of returning them to the OS (once per process; no-op off glibc).

    A render allocates and frees a few hundred arrays of 0.1-6 MB. With glibc's defaults
    each one is fresh memory from the OS, and touching it costs ~5,000 page faults per
    256x512 panorama, about 15% of the render time. The price is up to 32 MB of freed memory
    kept by the process for reuse.
    """
    try:
        libc = ctypes.CDLL("libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_trim_threshold, m_mmap_threshold = -1, -3  # glibc's malloc.h
    return bool(mallopt(m_mmap_threshold, 8 << 20)) and bool(mallopt(m_trim_threshold, 32 << 20))


_PAD_PX = 2.0  # angular margin of every window, in pixels


def _rows_cols(lat_lo, lat_hi, lon_lo, lon_hi, height: int, width: int):
    """ERP rows (slice) and columns (slice, or index array across the seam) of a lon/lat box.

    lon_lo/lon_hi None: every column. Returns None when no pixel centre can fall inside.
    """
    r0 = max(0, math.floor(height * (0.5 - lat_hi / math.pi) - 0.5))
    r1 = min(height, math.ceil(height * (0.5 - lat_lo / math.pi) - 0.5) + 1)
    if r0 >= r1:
        return None
    rows = slice(r0, r1)
    if lon_lo is None:
        return rows, slice(0, width)
    u0 = math.floor(width / 2 * (1 - lon_hi / math.pi) - 0.5)
    u1 = math.ceil(width / 2 * (1 - lon_lo / math.pi) - 0.5)
    if u1 - u0 + 1 >= width:
        return rows, slice(0, width)
    if u0 >= 0 and u1 < width:
        return rows, slice(u0, u1 + 1)
    return rows, np.arange(u0, u1 + 1) % width


def _sphere_window(rel_cam: np.ndarray, radius: float, height: int, width: int):
    """Window of a sphere; rel_cam: its centre minus the camera, camera frame."""
    dist = float(np.linalg.norm(rel_cam))
    if dist <= radius * 1.001 + 1e-6:
        return slice(0, height), slice(0, width)
    pad = _PAD_PX * math.pi / height
    alpha = math.asin(min(radius / dist, 1.0)) + pad
    lat_c = math.asin(max(-1.0, min(1.0, rel_cam[2] / dist)))
    lat_hi, lat_lo = lat_c + alpha, lat_c - alpha
    if lat_hi >= math.pi / 2 or lat_lo <= -math.pi / 2:
        return _rows_cols(lat_lo, lat_hi, None, None, height, width)
    sin_dl = math.sin(alpha) / math.cos(max(abs(lat_hi), abs(lat_lo)))
    if sin_dl >= 1.0:
        return _rows_cols(lat_lo, lat_hi, None, None, height, width)
    lon_c = math.atan2(rel_cam[1], rel_cam[0])
    dl = math.asin(sin_dl)
    return _rows_cols(lat_lo, lat_hi, lon_c - dl, lon_c + dl, height, width)


def _segment_distance(ax: float, ay: float, bx: float, by: float) -> float:
    """Distance from the origin to the segment a-b."""
    ex, ey = bx - ax, by - ay
    t = max(0.0, min(1.0, -(ax * ex + ay * ey) / max(ex * ex + ey * ey, 1e-12)))
    return math.hypot(ax + t * ex, ay + t * ey)


def _prism_window(corners, dz0: float, dz1: float, height: int, width: int):
    """Window of a vertical prism: convex footprint `corners` [(x, y)] relative to the camera
    (camera frame, counter-clockwise), spanning heights dz0..dz1 relative to the camera.

    Tighter than a bounding sphere for walls, buildings and poles.
    """
    pad = _PAD_PX * math.pi / height
    crosses = [
        ax * by - ay * bx
        for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True)
    ]
    if all(c >= 0 for c in crosses):  # the camera is above or below the footprint
        r_min = 0.0
    else:
        r_min = min(
            _segment_distance(ax, ay, bx, by)
            for (ax, ay), (bx, by) in zip(corners, corners[1:] + corners[:1], strict=True)
        )
    r_max = max(math.hypot(x, y) for x, y in corners)
    lat_hi = math.atan2(dz1, r_min if dz1 > 0 else r_max) + pad
    lat_lo = math.atan2(dz0, r_min if dz0 < 0 else r_max) - pad
    if r_min < 1e-6 or lat_hi >= math.pi / 2 or lat_lo <= -math.pi / 2:
        return _rows_cols(lat_lo, lat_hi, None, None, height, width)
    ref = math.atan2(corners[0][1], corners[0][0])
    rel = [(math.atan2(y, x) - ref + math.pi) % (2 * math.pi) - math.pi for x, y in corners]
    # Columns near the poles spread: widen the longitude margin by 1 / cos(lat).
    dl = pad / max(math.cos(max(abs(lat_hi), abs(lat_lo))), 1e-3)
    return _rows_cols(lat_lo, lat_hi, ref + min(rel) - dl, ref + max(rel) + dl, height, width)


def _primitive_window(prim, o: np.ndarray, yaw: float, height: int, width: int):
    """The ERP window (rows, cols) outside which `prim` cannot appear, or None."""
    c, s = math.cos(yaw), math.sin(yaw)
    if isinstance(prim, Sphere):
        rel = np.asarray(prim.center) - o
        rel_cam = np.array([c * rel[0] + s * rel[1], -s * rel[0] + c * rel[1], rel[2]])
        return _sphere_window(rel_cam, prim.radius, height, width)
    if isinstance(prim, Box):
        cx, cy = prim.center[0], prim.center[1]
        hx, hy = prim.half[0], prim.half[1]
        cb, sb = math.cos(prim.yaw), math.sin(prim.yaw)
        local = ((-hx, -hy), (hx, -hy), (hx, hy), (-hx, hy))
        world = [(cx + cb * a - sb * b, cy + sb * a + cb * b) for a, b in local]
    else:  # Cylinder: its bounding square
        r = prim.radius
        world = [(prim.x - r, prim.y - r), (prim.x + r, prim.y - r),
                 (prim.x + r, prim.y + r), (prim.x - r, prim.y + r)]  # fmt: skip
    corners = []
    for x, y in world:
        dx, dy = x - o[0], y - o[1]
        corners.append((c * dx + s * dy, -s * dx + c * dy))
    z0, z1 = prim.z_range
    return _prism_window(corners, z0 - o[2], z1 - o[2], height, width)


class _Frame:
    """Per-render buffers: world ray planes (and their reciprocals for axis-aligned slab
    tests), hit distance, object id and face per pixel."""

    def __init__(self, o: np.ndarray, height: int, width: int, yaw: float):
        rays_cam, inv_z, _ = _camera_rays(height, width)
        self.o = o
        c, s = np.float32(math.cos(yaw)), np.float32(math.sin(yaw))
        cx, cy, cz = rays_cam
        self.dx, self.dy, self.dz = c * cx - s * cy, s * cx + c * cy, cz
        with np.errstate(divide="ignore"):
            self.inv = (np.float32(1.0) / self.dx, np.float32(1.0) / self.dy, inv_z)
        shape = cz.shape
        self.t = np.full(shape, np.inf, dtype=np.float32)
        self.ids = np.full(shape, SKY_ID, dtype=np.int16)
        self.face = np.zeros(shape, dtype=np.int8)

    def cast(self, obj, obj_id: int, window) -> None:
        """Intersect `obj` with the rays of `window` and keep its hits where it is closest."""
        rows, cols = window
        wants_inv = isinstance(obj, Box)
        if isinstance(cols, slice):
            sub = (rows, cols)
            inv = tuple(a[sub] for a in self.inv) if wants_inv else None
            t, face = obj.intersect(self.o, self.dx[sub], self.dy[sub], self.dz[sub], inv)
            cur = self.t[sub]  # views: the writes below land in the buffers
            closer = t < cur
            np.minimum(cur, t, out=cur)
            np.copyto(self.ids[sub], np.int16(obj_id), where=closer)
            np.copyto(self.face[sub], face, where=closer, casting="unsafe")
            return

        def take(a):  # the window's columns wrap around the seam
            return np.take(a[rows], cols, axis=1)

        inv = tuple(take(a) for a in self.inv) if wants_inv else None
        t, face = obj.intersect(self.o, take(self.dx), take(self.dy), take(self.dz), inv)
        cur = take(self.t)
        closer = t < cur
        if closer.any():
            ids, faces = take(self.ids), take(self.face)
            np.copyto(ids, np.int16(obj_id), where=closer)
            np.copyto(faces, face, where=closer, casting="unsafe")
            self.t[rows, cols] = np.minimum(t, cur)
            self.ids[rows, cols] = ids
            self.face[rows, cols] = faces


def _cast_room(frame: _Frame, scene) -> None:
    t, face = scene.room.intersect(frame.o, frame.dx, frame.dy, frame.dz, frame.inv)
    ids = np.full(t.shape, ROOM_ID, dtype=np.int16)
    if scene.openings:
        ox, oy, oz = (float(v) for v in frame.o)
        z = np.float32(oz) + t * frame.dz
        along = {}  # wall texture coordinate: y on x-walls (0, 1), x on y-walls (2, 3)
        through = np.zeros(t.shape, dtype=bool)
        for op in scene.openings:
            x_wall = op.wall < 2
            if x_wall not in along:
                along[x_wall] = (
                    np.float32(oy) + t * frame.dy if x_wall else np.float32(ox) + t * frame.dx
                )
            s = along[x_wall]
            through |= (face == op.wall) & (s > op.s0) & (s < op.s1) & (z > op.z0) & (z < op.z1)
        if through.any():
            t2, f2 = scene.shell.intersect(
                frame.o, frame.dx[through], frame.dy[through], frame.dz[through]
            )
            t[through], face[through], ids[through] = t2, f2, SHELL_ID
    frame.t, frame.face, frame.ids = t, face, ids


_ROOM_NORMALS = (
    (1.0, 0.0, 0.0), (-1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, -1.0, 0.0), (0.0, 0.0, 1.0),
    (0.0, 0.0, -1.0),
)  # inward normal of each room face  # fmt: skip


def _room_face(scene, x, y, z, face: int, is_room: bool, noise, style, alb: np.ndarray):
    """Albedo (written into `alb` [3, N]) and emitted radiance [3, N] (or None) of points
    (x, y, z) [N] on one room face."""
    mats = scene.room_materials if is_room else scene.shell_materials
    if face < 4:
        s, t, mat_id = y if face < 2 else x, z, mats[0]
    else:
        s, t, mat_id = x, y, mats[1 if face == 4 else 2]
    ap.albedo(scene.materials[mat_id], s, t, noise, style, mat_id, out=alb)
    emit = None
    if not is_room:
        return emit
    if face < 4:
        for dec in scene.decals:
            if dec.wall != face:
                continue
            m = np.flatnonzero((s >= dec.s0) & (s <= dec.s1) & (t >= dec.z0) & (t <= dec.z1))
            if m.size == 0:
                continue
            a = ap.albedo(scene.materials[dec.material], s[m], t[m], noise, style, dec.material)
            alb[:, m] = a
            if dec.emissive > 0:
                emit = np.zeros_like(alb) if emit is None else emit
                emit[:, m] = a * np.float32(dec.emissive)
    elif face == 5:
        for lx, ly, _, r in scene.lamps:
            du, dv = s - np.float32(lx), t - np.float32(ly)
            m = np.flatnonzero(du * du + dv * dv < np.float32(r * r))
            if m.size:
                emit = np.zeros_like(alb) if emit is None else emit
                emit[:, m] = np.asarray(LAMP_RADIANCE, dtype=np.float32)[:, None]
    return emit


def _cast(scene, o: np.ndarray, yaw: float, height: int, width: int) -> _Frame:
    """Ray-cast the room (or ground) and every primitive inside its window."""
    frame = _Frame(o, height, width, yaw)
    if scene.room is not None:
        _cast_room(frame, scene)
    if scene.ground is not None:
        frame.t = ground_intersect(o, frame.dz)
        frame.ids[np.isfinite(frame.t)] = GROUND_ID
    for k, prim in enumerate(scene.primitives):
        window = _primitive_window(prim, o, yaw, height, width)
        if window is not None:
            frame.cast(prim, PRIM_BASE + k, window)
    return frame


def _surfaces(scene, camera, p, key, starts, bounds, noise, style):
    """World normals [3, N], albedo [3, N], emission [3, N] (or None) and occlusion [N] (or
    None) of hit points p [3, N] sorted by key.

    Every run starts[i]:bounds[i] of equal key = 8 * object id + face is one surface face.
    """
    real = style.domain == "real_like"
    n_px = p.shape[1]
    n = np.empty((3, n_px), dtype=np.float32)
    alb = np.empty((3, n_px), dtype=np.float32)
    emit = None
    occlusion = np.ones(n_px, dtype=np.float32) if real else None
    contact = sun = None
    if real and scene.room is not None:
        contact = occ.ContactMap(scene.room, list(scene.primitives))
    if real and scene.ground is not None:
        sun = occ.SunShadowMap(list(scene.primitives), scene.lighting.key_dir, camera)
    for a, b in zip(starts, bounds, strict=True):
        obj_id, face = divmod(int(key[a]), 8)
        x, y, z = p[0, a:b], p[1, a:b], p[2, a:b]
        if obj_id in (ROOM_ID, SHELL_ID):
            n[:, a:b] = np.asarray(_ROOM_NORMALS[face], dtype=np.float32)[:, None]
            e = _room_face(scene, x, y, z, face, obj_id == ROOM_ID, noise, style, alb[:, a:b])
            if e is not None:
                emit = np.zeros_like(alb) if emit is None else emit
                emit[:, a:b] = e
            if real and obj_id == ROOM_ID:
                occlusion[a:b] = occ.room_corner_factor(scene.room, face, x, y, z)
                if face == 4:
                    occlusion[a:b] *= contact.lookup(x, y)
        elif obj_id == GROUND_ID:
            n[:, a:b] = np.array([[0.0], [0.0], [1.0]], dtype=np.float32)
            ap.ground_albedo(scene.ground, x, y, noise, style, out=alb[:, a:b])
            if real:
                occlusion[a:b] = sun.lookup(x, y)
        else:
            prim = scene.primitives[obj_id - PRIM_BASE]
            normal, m, s_uv, t_uv = prim.surface(face, x, y, z)
            if isinstance(normal, tuple):
                n[:, a:b] = np.asarray(normal, dtype=np.float32)[:, None]
            else:
                n[:, a:b] = normal
            if real:
                occlusion[a:b] = occ.object_contact_factor(z)
            ap.albedo(scene.materials[m], s_uv, t_uv, noise, style, m, out=alb[:, a:b])
    return n, alb, emit, occlusion


SKY_DOWNSAMPLE = 4  # the sky is smooth: shade it on a coarser grid and upsample


def _sky_image(scene, yaw: float, height: int, width: int, noise, style) -> np.ndarray:
    """Sky radiance [3, H, W] for every pixel, shaded at 1/SKY_DOWNSAMPLE resolution."""
    f = SKY_DOWNSAMPLE if height >= 16 * SKY_DOWNSAMPLE else 1
    h, w = height // f, width // f
    rays, _, _ = _camera_rays(h, w)
    c, s = np.float32(math.cos(yaw)), np.float32(math.sin(yaw))
    d = np.stack([c * rays[0] - s * rays[1], s * rays[0] + c * rays[1], rays[2]])
    sky = ap.sky_radiance(scene.sky, d.reshape(3, -1), noise, style).reshape(3, h, w)
    if f == 1:
        return sky
    return np.stack(
        [cv2.resize(plane, (width, height), interpolation=cv2.INTER_LINEAR) for plane in sky]
    )


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
    yaw = float(yaw_rad)
    _keep_freed_memory()
    frame = _cast(scene, o, yaw, height, width)

    rng = np.random.default_rng([int(scene.seed), int(noise_seed), 0xC0105])
    style = ap.Style.draw(domain, rng)
    noise = _noise_bank(int(scene.seed))

    # Shade hit pixels sorted by (object, face) so every surface face is a contiguous run;
    # int16 keys (< 8 * (3 + primitives)) let numpy use its radix sort. Sky sorts first.
    # Everything per pixel is planar ([3, N] rows, not [N, 3]): numpy broadcasts a colour
    # over a row at full speed, but over length-3 inner rows several times slower.
    t, ids = frame.t.reshape(-1), frame.ids.reshape(-1)
    key = ids * np.int16(8) + frame.face.reshape(-1)
    order = np.argsort(key, kind="stable")
    n_sky = int(np.count_nonzero(ids == SKY_ID))
    sky, hit = order[:n_sky], order[n_sky:]
    key = np.take(key, hit)
    starts = np.flatnonzero(np.diff(key, prepend=np.int16(-1)))
    bounds = [*starts[1:].tolist(), hit.shape[0]]
    # np.take is numpy's fast gather (fancy indexing is several times slower).
    t_hit = np.take(t, hit)
    p = np.empty((3, hit.shape[0]), dtype=np.float32)  # world hit points
    for axis, d in enumerate((frame.dx, frame.dy, frame.dz)):
        np.multiply(np.take(d.reshape(-1), hit), t_hit, out=p[axis])
        p[axis] += np.float32(o[axis])
    n, alb, emit, occlusion = _surfaces(scene, o, p, key, starts.tolist(), bounds, noise, style)
    shaded = ap.shade(alb, p, n, scene.lighting, style, occlusion)  # in place: alb
    if emit is not None:
        shaded += emit
    # Radiance and camera-frame normals in sorted order (sky first), then back to pixel order
    # through the inverse permutation.
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.shape[0], dtype=order.dtype)
    sky_img = None
    if scene.sky is not None and n_sky:
        sky_img = _sky_image(scene, yaw, height, width, noise, style).reshape(3, -1)
    radiance = np.empty((3, height, width), dtype=np.float32)
    normals = np.empty((height, width, 3), dtype=np.float32)
    c, s = np.float32(math.cos(yaw)), np.float32(math.sin(yaw))
    camera_normals = (c * n[0] + s * n[1], c * n[1] - s * n[0], n[2])  # rotate by -yaw
    row = np.empty(order.shape[0], dtype=np.float32)
    for ch in range(3):
        row[:n_sky] = 0.0 if sky_img is None else np.take(sky_img[ch], sky)
        row[n_sky:] = shaded[ch]
        np.take(row, inverse, out=radiance[ch].reshape(-1))
        row[:n_sky] = 0.0
        row[n_sky:] = camera_normals[ch]
        normals[..., ch] = np.take(row, inverse).reshape(height, width)

    range_m = frame.t.astype(np.float32, copy=False)
    radiance = ap.apply_haze(radiance, range_m, scene.lighting, style)
    _, _, lon = _camera_rays(height, width)
    rgb = ap.camera_pipeline(radiance, lon, style, rng)
    return PanoramaSample(
        rgb=rgb,
        range_m=range_m,
        normals=normals,
        valid=np.ones((height, width), dtype=bool),
        scene=scene.kind,
        domain=domain,
        seed=int(scene.seed),
    )
