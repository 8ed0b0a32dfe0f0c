"""Render a procedural scene into an ERP panorama with exact range and normals.

Rays come from `dap_core.geometry.pixel_rays` (REP 103 camera frame), are turned by the camera
yaw into the world frame and cast analytically against the room, the ground and every
primitive. Each primitive is only tested on the ERP window it can cover (a lon/lat box
around its footprint prism or bounding sphere), so small or distant objects cost little;
primitives with small windows are cast together in one vectorised pass per class.

Shading works on the hit pixels sorted so that every surface face is a contiguous run, the
runs of one kind of surface form one block (geometry in one call per kind) and, within it,
the runs of one pattern (texturing in one call per pattern). Per-pixel data is planar
([3, N] rows), which numpy broadcasts far faster than [N, 3].
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
from dap_core.data.raycast import Box, Cylinder, Sphere, ground_intersect

_INF = np.float32(np.inf)

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


@functools.lru_cache(maxsize=1)
def _noise_tiles() -> ap.NoiseBank:
    """The texture noise tiles every scene reads (read-only; built once per process)."""
    return ap.NoiseBank(np.random.default_rng(0x7E87))


def _noise_bank(scene_seed: int) -> ap.NoiseBank:
    """The scene's texture noise: the shared tiles at an offset drawn from its seed."""
    return _noise_tiles().shifted(np.random.default_rng([scene_seed, 0x7E87]))


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
# Windows up to this many pixels are cast together (`_Frame.cast_many`): below it, numpy's
# per-call overhead outweighs the cost of gathering the window's rays.
_SMALL_WINDOW_PX = 1024


def _prism_bounds(prims, o: np.ndarray, yaw: float, pad: float):
    """(lat_lo, lat_hi, lon_lo, lon_hi, full_lon) [P] radians of vertical prisms (boxes, and
    cylinders by their bounding squares) seen from `o` with camera yaw `yaw`.

    Tighter than bounding spheres for walls, buildings and poles. full_lon: the prism may
    cover every longitude (the camera is above / below it, or it reaches a pole).
    """
    geo = np.array(
        [(p.center[0], p.center[1], p.half[0], p.half[1], p.yaw, *p.z_range)
         if isinstance(p, Box) else (p.x, p.y, p.radius, p.radius, 0.0, p.z0, p.z1)
         for p in prims]
    )  # fmt: skip
    cx, cy, hx, hy, pyaw, z0, z1 = geo.T[:, :, None]  # [P, 1] each
    cb, sb = np.cos(pyaw), np.sin(pyaw)
    a = np.array([-1.0, 1.0, 1.0, -1.0]) * hx  # footprint corners, counter-clockwise
    b = np.array([-1.0, -1.0, 1.0, 1.0]) * hy
    wx = cx + cb * a - sb * b - o[0]  # [P, 4] relative to the camera, world axes
    wy = cy + sb * a + cb * b - o[1]
    c, s = math.cos(yaw), math.sin(yaw)
    x, y = c * wx + s * wy, c * wy - s * wx  # camera frame
    bx, by = np.roll(x, -1, axis=1), np.roll(y, -1, axis=1)  # each edge's end
    above = ((x * by - y * bx) >= 0).all(axis=1)  # the camera is above or below the footprint
    ex, ey = bx - x, by - y
    tt = np.clip(-(x * ex + y * ey) / np.maximum(ex * ex + ey * ey, 1e-12), 0.0, 1.0)
    r_min = np.where(above, 0.0, np.hypot(x + tt * ex, y + tt * ey).min(axis=1))
    r_max = np.hypot(x, y).max(axis=1)
    dz0, dz1 = z0[:, 0] - o[2], z1[:, 0] - o[2]
    lat_hi = np.arctan2(dz1, np.where(dz1 > 0, r_min, r_max)) + pad
    lat_lo = np.arctan2(dz0, np.where(dz0 < 0, r_min, r_max)) - pad
    full = (r_min < 1e-6) | (lat_hi >= math.pi / 2) | (lat_lo <= -math.pi / 2)
    ref = np.arctan2(y[:, 0], x[:, 0])
    rel = (np.arctan2(y, x) - ref[:, None] + math.pi) % (2 * math.pi) - math.pi
    # Columns near the poles spread: widen the longitude margin by 1 / cos(lat).
    with np.errstate(invalid="ignore"):
        dl = pad / np.maximum(np.cos(np.maximum(np.abs(lat_hi), np.abs(lat_lo))), 1e-3)
    return lat_lo, lat_hi, ref + rel.min(axis=1) - dl, ref + rel.max(axis=1) + dl, full


def _sphere_bounds(prims, o: np.ndarray, yaw: float, pad: float):
    """Like `_prism_bounds` for spheres; also `inside` [S]: the camera is in the sphere."""
    geo = np.array([(*p.center, p.radius) for p in prims])  # [S, 4]
    rel = geo[:, :3] - o
    c, s = math.cos(yaw), math.sin(yaw)
    x, y, z = c * rel[:, 0] + s * rel[:, 1], c * rel[:, 1] - s * rel[:, 0], rel[:, 2]
    radius = geo[:, 3]
    dist = np.sqrt(x * x + y * y + z * z)
    inside = dist <= radius * 1.001 + 1e-6
    dist = np.maximum(dist, 1e-12)
    alpha = np.arcsin(np.minimum(radius / dist, 1.0)) + pad
    lat_c = np.arcsin(np.clip(z / dist, -1.0, 1.0))
    lat_hi, lat_lo = lat_c + alpha, lat_c - alpha
    with np.errstate(divide="ignore", invalid="ignore"):
        sin_dl = np.sin(alpha) / np.cos(np.maximum(np.abs(lat_hi), np.abs(lat_lo)))
    full = inside | (lat_hi >= math.pi / 2) | (lat_lo <= -math.pi / 2) | ~(sin_dl < 1.0)
    lon_c = np.arctan2(y, x)
    dl = np.arcsin(np.where(full, 0.0, sin_dl))
    return lat_lo, lat_hi, lon_c - dl, lon_c + dl, full, inside


def _primitive_windows(prims, o: np.ndarray, yaw: float, height: int, width: int) -> list:
    """Per primitive, the ERP window (rows slice, cols slice or column indices across the
    seam) outside which it cannot appear, or None (no pixel centre can see it); computed for
    all primitives at once.

    Windows are lon/lat boxes around each primitive's footprint prism (boxes, cylinders) or
    bounding sphere, widened by _PAD_PX pixels.
    """
    windows: list = [None] * len(prims)
    if not prims:
        return windows
    pad = _PAD_PX * math.pi / height
    spheres = [k for k, p in enumerate(prims) if isinstance(p, Sphere)]
    prisms = [k for k, p in enumerate(prims) if not isinstance(p, Sphere)]
    parts = []
    if prisms:
        lat_lo, lat_hi, lon_lo, lon_hi, full = _prism_bounds(
            [prims[k] for k in prisms], o, yaw, pad
        )
        parts.append((prisms, lat_lo, lat_hi, lon_lo, lon_hi, full, np.zeros(len(prisms), bool)))
    if spheres:
        parts.append((spheres, *_sphere_bounds([prims[k] for k in spheres], o, yaw, pad)))
    for ks, lat_lo, lat_hi, lon_lo, lon_hi, full, inside in parts:
        with np.errstate(invalid="ignore"):
            r0 = np.maximum(0, np.floor(height * (0.5 - lat_hi / math.pi) - 0.5))
            r1 = np.minimum(height, np.ceil(height * (0.5 - lat_lo / math.pi) - 0.5) + 1)
            u0 = np.floor(width / 2 * (1 - lon_hi / math.pi) - 0.5)
            u1 = np.ceil(width / 2 * (1 - lon_lo / math.pi) - 0.5)
        r0[inside], r1[inside] = 0, height
        full |= ~(u1 - u0 + 1 < width)  # also NaN-safe
        for k, a, b, c0, c1, f in zip(ks, r0.tolist(), r1.tolist(), u0.tolist(), u1.tolist(),
                                      full.tolist(), strict=True):  # fmt: skip
            if a >= b:
                continue
            rows = slice(int(a), int(b))
            if f:
                windows[k] = (rows, slice(0, width))
            elif c0 >= 0 and c1 < width:
                windows[k] = (rows, slice(int(c0), int(c1) + 1))
            else:
                windows[k] = (rows, np.arange(int(c0), int(c1) + 1) % width)
    return windows


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
        self.seen: list[tuple[int, tuple[int, ...]]] = []  # (primitive, faces) cast

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

    def cast_many(self, prims: list, obj_ids: list[int], windows: list) -> None:
        """Cast primitives of one class with small windows in one vectorised pass (per-call
        overhead dominates windows of a few hundred pixels): their window pixels are
        gathered into one array and intersected with per-pixel parameters. Where they
        overlap, the closest hit wins and, on an exact tie, the lower id: the same result
        as casting them one by one in id order."""
        width = self.t.shape[1]
        r0 = np.array([w[0].start for w in windows])
        nr = np.array([w[0].stop for w in windows]) - r0
        c0 = np.array([w[1].start if isinstance(w[1], slice) else w[1][0] for w in windows])
        nc = np.array([w[1].stop - w[1].start if isinstance(w[1], slice) else len(w[1])
                       for w in windows])  # fmt: skip
        counts = nr * nc
        win = np.repeat(np.arange(len(windows)), counts)
        j = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
        row, col = np.divmod(j, nc[win])
        # Columns wrap across the seam (windows there start at negative columns).
        idx = (r0[win] + row) * width + (c0[win] + col) % width  # [M] flat pixel indices
        flat = (self.dx.reshape(-1), self.dy.reshape(-1), self.dz.reshape(-1))
        dx, dy, dz = (np.take(a, idx) for a in flat)
        t, face = type(prims[0]).intersect_many(prims, self.o, dx, dy, dz, counts.tolist())
        hit = np.flatnonzero(t < _INF)
        if hit.size == 0:
            return
        ids = np.repeat(np.asarray(obj_ids, dtype=np.int16), counts)
        idx, t, face, ids = idx[hit], t[hit], face[hit], ids[hit]
        # Closest first per pixel (then lowest id), and keep that one.
        order = np.lexsort((ids, t, idx))
        idx, t, face, ids = idx[order], t[order], face[order], ids[order]
        first = np.flatnonzero(np.diff(idx, prepend=-1) != 0)
        idx, t, face, ids = idx[first], t[first], face[first], ids[first]
        t_px, ids_px, face_px = self.t.reshape(-1), self.ids.reshape(-1), self.face.reshape(-1)
        cur, cur_ids = np.take(t_px, idx), np.take(ids_px, idx)
        win = np.flatnonzero((t < cur) | ((t == cur) & (ids < cur_ids)))
        t_px[idx[win]] = t[win]
        ids_px[idx[win]] = ids[win]
        face_px[idx[win]] = face[win]


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


def _room_decals(scene, rooms, s_uv, t_uv, noise, style, alb: np.ndarray):
    """Paint the room's decals over the albedo `alb` [3, N] of its wall runs and light its
    ceiling lamps; returns the emitted radiance [3, N] or None.

    rooms: (start, stop, face) runs of room faces; s_uv, t_uv [N]: wall coordinates. A pixel
    belongs to the last decal that covers it; decals are textured one call per pattern.
    """
    idx, owner = [], []
    emit = None
    for a, b, face in rooms:
        s, t = s_uv[a:b], t_uv[a:b]
        if face == 5:
            for lx, ly, _, r in scene.lamps:
                du, dv = s - np.float32(lx), t - np.float32(ly)
                m = np.flatnonzero(du * du + dv * dv < np.float32(r * r))
                if m.size:
                    emit = np.zeros_like(alb) if emit is None else emit
                    emit[:, a + m] = np.asarray(LAMP_RADIANCE, dtype=np.float32)[:, None]
        if face >= 4:
            continue
        cover = None
        for d, dec in enumerate(scene.decals):
            if dec.wall != face:
                continue
            m = np.flatnonzero((s >= dec.s0) & (s <= dec.s1) & (t >= dec.z0) & (t <= dec.z1))
            if m.size:
                cover = np.full(b - a, -1, dtype=np.int32) if cover is None else cover
                cover[m] = d
        if cover is not None:
            m = np.flatnonzero(cover >= 0)
            idx.append(a + m)
            owner.append(cover[m])
    if not idx:
        return emit
    idx, owner = np.concatenate(idx), np.concatenate(owner)
    dec_mat = np.array([dec.material for dec in scene.decals], dtype=np.int64)
    mat = dec_mat[owner]
    code = np.array([_PATTERN_CODE[scene.materials[m].pattern] for m in dec_mat])[owner]
    order = np.lexsort((mat, code))  # pattern blocks, then materials: one call per pattern
    idx, owner, mat, code = idx[order], owner[order], mat[order], code[order]
    cuts = np.flatnonzero(np.diff(mat, prepend=-1) != 0)  # material runs
    run_mats, run_codes = mat[cuts].tolist(), code[cuts].tolist()
    run_counts = np.diff(np.append(cuts, idx.shape[0])).tolist()
    painted = np.empty((3, idx.shape[0]), dtype=np.float32)
    i = 0
    while i < len(run_mats):
        j = i
        while j < len(run_mats) and run_codes[j] == run_codes[i]:
            j += 1
        a, b = cuts[i], cuts[j] if j < len(cuts) else idx.shape[0]
        mats = run_mats[i:j]
        prm = ap.MaterialParams.of([scene.materials[m] for m in mats], mats, style,
                                   run_counts[i:j])  # fmt: skip
        sel = idx[a:b]
        ap.pattern_albedo(ap.PATTERNS[run_codes[i]], np.take(s_uv, sel), np.take(t_uv, sel),
                          prm, noise, style, out=painted[:, a:b])  # fmt: skip
        i = j
    alb[:, idx] = painted
    glow = np.array([dec.emissive for dec in scene.decals], dtype=np.float32)[owner]
    lit = np.flatnonzero(glow > 0)
    if lit.size:
        emit = np.zeros_like(alb) if emit is None else emit
        emit[:, idx[lit]] = painted[:, lit] * glow[lit]
    return emit


_PATTERN_CODE = {name: i for i, name in enumerate(ap.PATTERNS)}


def _materials(scene) -> tuple:
    """The scene's materials, then its ground parts' (ASPHALT, PAVING, GRASS) if any."""
    if scene.ground is None:
        return scene.materials
    return (*scene.materials, *ap.ground_materials(scene.ground))


def _salt(scene, m: int) -> int:
    """Noise / hash salt of material m of `_materials(scene)`: its index, or the ground
    part's fixed salt."""
    n = len(scene.materials)
    return m if m < n else ap.GROUND_SALTS[m - n]


_KINDS = ("room", "ground", "box", "cylinder", "sphere")  # surface kinds, in shading order


def _key_tables(scene, seen: list[tuple[int, tuple[int, ...]]]):
    """Per surface key (8 * object id + face, offset by 8 so that the sky's -8 is 0): its
    shading rank, material index (of `_materials`; -1: sky), pattern code and kind (index
    in _KINDS) (-1: sky).

    Sorting pixels by rank makes every surface face a contiguous run, the runs of one kind
    of surface adjacent (their geometry is computed in one call), and within a kind the
    runs of one pattern (then of one material) adjacent: each is textured in one call.
    Only keys that can occur get ranks (the room, ground, sky and the `seen` (primitive
    index, faces) of primitives inside the view), so ranks usually fit in uint8, which
    numpy sorts in one radix pass instead of two.
    """
    n_keys = 8 * (PRIM_BASE + len(scene.primitives) + 1)
    mat = np.full(n_keys, -1, dtype=np.int32)
    kind = np.full(n_keys, -1, dtype=np.int32)  # -1 sky, then _KINDS
    kind[8 * (ROOM_ID + 1) : 8 * (GROUND_ID + 1)] = _KINDS.index("room")
    kind[8 * (GROUND_ID + 1) : 8 * (PRIM_BASE + 1)] = _KINDS.index("ground")
    can_occur = np.zeros(n_keys, dtype=bool)
    can_occur[0] = True  # sky
    if scene.room is not None:
        for obj_id, mats in ((ROOM_ID, scene.room_materials), (SHELL_ID, scene.shell_materials)):
            mat[8 * (obj_id + 1) : 8 * (obj_id + 1) + 6] = [mats[0]] * 4 + [mats[1], mats[2]]
            can_occur[8 * (obj_id + 1) : 8 * (obj_id + 1) + 6] = True
    n_mat = len(scene.materials)
    if scene.ground is not None:  # its parts' materials follow the scene's
        ground = 8 * (GROUND_ID + 1)
        mat[ground : ground + 3] = np.arange(n_mat, n_mat + 3)
        can_occur[ground : ground + 3] = True
    if scene.primitives:
        base = np.array([p.material for p in scene.primitives], dtype=np.int32)
        top = np.array([getattr(p, "top_material", -1) for p in scene.primitives])
        faces = np.repeat(base[:, None], 8, axis=1)  # [P, 8]
        faces[:, 5] = np.where(top >= 0, top, base)  # box tops (face 5) may differ
        mat[8 * (PRIM_BASE + 1) :] = faces.reshape(-1)
        kinds = [_KINDS.index(type(p).__name__.lower()) for p in scene.primitives]
        kind[8 * (PRIM_BASE + 1) :] = np.repeat(kinds, 8)
        keys = [8 * (PRIM_BASE + 1 + k) + f for k, fs in seen for f in fs]
        can_occur[np.asarray(keys, dtype=np.intp)] = True
    codes = [_PATTERN_CODE[m.pattern] for m in _materials(scene)]
    pattern = np.array([*codes, -1], dtype=np.int32)[mat]  # mat -1 picks the trailing -1
    occurring = np.flatnonzero(can_occur)
    sort_by = (occurring, mat[occurring], pattern[occurring], kind[occurring])
    order = occurring[np.lexsort(sort_by)]
    dtype = np.uint8 if order.shape[0] < 255 else np.int16
    rank = np.full(n_keys, np.iinfo(dtype).max, dtype=dtype)
    rank[order] = np.arange(order.shape[0])
    return rank, mat, pattern, kind


def _cast(scene, o: np.ndarray, yaw: float, height: int, width: int) -> _Frame:
    """Ray-cast the room (or ground) and every primitive inside its window."""
    frame = _Frame(o, height, width, yaw)
    if scene.room is not None:
        _cast_room(frame, scene)
    if scene.ground is not None:
        frame.t = ground_intersect(o, frame.dz)
        down = np.isfinite(frame.t)
        frame.ids[down] = GROUND_ID
        # Each ground part (asphalt, paving, grass) is a face of its own: a run per material.
        with np.errstate(invalid="ignore"):  # sky pixels: inf, nan; discarded below
            x = np.float32(o[0]) + frame.t * frame.dx
            y = np.float32(o[1]) + frame.t * frame.dy
            part = ap.ground_parts(scene.ground, x, y)
        np.copyto(frame.face, part, where=down)
    windows = _primitive_windows(scene.primitives, o, yaw, height, width)
    small: dict[type, list] = {}  # class -> [(primitive, id, window)]
    for k, (prim, window) in enumerate(zip(scene.primitives, windows, strict=True)):
        if window is None:
            continue
        frame.seen.append((k, prim.seen_faces(o)))
        rows, cols = window
        n_cols = cols.stop - cols.start if isinstance(cols, slice) else len(cols)
        if (rows.stop - rows.start) * n_cols <= _SMALL_WINDOW_PX:
            small.setdefault(type(prim), []).append((prim, PRIM_BASE + k, window))
        else:
            frame.cast(prim, PRIM_BASE + k, window)
    for items in small.values():
        frame.cast_many(*(list(col) for col in zip(*items, strict=True)))
    return frame


def _surfaces(scene, camera, p, key, starts, bounds, tables, noise, style):
    """World normals [3, N], albedo [3, N], emission [3, N] (or None) and occlusion [N] (or
    None) of hit points p [3, N] sorted by shading rank (see `_key_tables`).

    Every run starts[i]:bounds[i] of equal key = 8 * object id + face is one surface face.
    """
    _, mat_of_key, pattern_of_key, kind_of_key = tables
    real = style.domain == "real_like"
    n_px = p.shape[1]
    n = np.empty((3, n_px), dtype=np.float32)
    alb = np.empty((3, n_px), dtype=np.float32)
    s_uv = np.empty(n_px, dtype=np.float32)  # texture coordinates, metres
    t_uv = np.empty(n_px, dtype=np.float32)
    # Objects darken near the floor; room and ground runs overwrite theirs below.
    occlusion = occ.object_contact_factor(p[2]) if real else None
    run_keys = key[np.asarray(starts, dtype=np.intp)].astype(np.intp) + 8
    run_kinds = kind_of_key[run_keys].tolist()
    # Geometry: normals and texture coordinates, one call per kind of primitive.
    rooms, asphalt = [], None
    by_kind: dict[int, list] = {}
    for a, b, run_key, kind in zip(starts, bounds, run_keys.tolist(), run_kinds, strict=True):
        obj_id, face = divmod(run_key - 8, 8)
        if kind >= _KINDS.index("box"):
            by_kind.setdefault(kind, []).append((a, b, obj_id - PRIM_BASE, face))
            continue
        x, y, z = p[0, a:b], p[1, a:b], p[2, a:b]
        if obj_id == GROUND_ID:
            n[:, a:b] = np.array([[0.0], [0.0], [1.0]], dtype=np.float32)
            s_uv[a:b], t_uv[a:b] = x, y
            if face == ap.ASPHALT:
                asphalt = (a, b)
            continue
        n[:, a:b] = np.asarray(_ROOM_NORMALS[face], dtype=np.float32)[:, None]
        s_uv[a:b], t_uv[a:b] = (y if face < 2 else x), (z if face < 4 else y)
        if obj_id == ROOM_ID:
            rooms.append((a, b, face))
        elif real:
            occlusion[a:b] = 1.0  # beyond a doorway: not occluded
    for kind, runs in by_kind.items():
        a, b = runs[0][0], runs[-1][1]  # the kind's runs are one block
        cls = (Box, Cylinder, Sphere)[kind - _KINDS.index("box")]
        prims = [scene.primitives[k] for _, _, k, _ in runs]
        counts = [stop - start for start, stop, _, _ in runs]
        n[:, a:b], s_uv[a:b], t_uv[a:b] = cls.surfaces(
            prims, [f for _, _, _, f in runs], counts, p[0, a:b], p[1, a:b], p[2, a:b]
        )
    # Albedo: one call per block of runs of one pattern (one parameter set per material).
    run_mats = mat_of_key[run_keys].tolist()
    run_patterns = pattern_of_key[run_keys].tolist()
    materials = _materials(scene)
    i = 0
    while i < len(starts):
        code = run_patterns[i]
        mats, counts, j = [], [], i
        while j < len(starts) and run_patterns[j] == code and run_kinds[j] == run_kinds[i]:
            if mats and mats[-1] == run_mats[j]:
                counts[-1] += bounds[j] - starts[j]
            else:
                mats.append(run_mats[j])
                counts.append(bounds[j] - starts[j])
            j += 1
        a, b = starts[i], bounds[j - 1]
        prm = ap.MaterialParams.of(
            [materials[m] for m in mats], [_salt(scene, m) for m in mats], style, counts
        )
        ap.pattern_albedo(ap.PATTERNS[code], s_uv[a:b], t_uv[a:b], prm, noise, style,
                          out=alb[:, a:b])  # fmt: skip
        i = j
    emit = _room_decals(scene, rooms, s_uv, t_uv, noise, style, alb) if rooms else None
    for a, b, face in rooms if real else ():
        x, y, z = p[0, a:b], p[1, a:b], p[2, a:b]
        occlusion[a:b] = occ.room_corner_factor(scene.room, face, x, y, z)
        if face == 4:
            contact = occ.ContactMap(scene.room, list(scene.primitives))
            occlusion[a:b] *= contact.lookup(x, y)
    ground = [(a, b) for a, b, k in zip(starts, bounds, run_kinds, strict=True)
              if k == _KINDS.index("ground")]  # fmt: skip
    if real and ground:  # the ground's runs are one block
        a, b = ground[0][0], ground[-1][1]
        sun = occ.SunShadowMap(list(scene.primitives), scene.lighting.key_dir, camera)
        occlusion[a:b] = sun.lookup(p[0, a:b], p[1, a:b])
    if asphalt is not None:
        a, b = asphalt
        ap.paint_road_markings(scene.ground, p[0, a:b], p[1, a:b], style, alb[:, a:b])
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

    # Shade hit pixels sorted by rank of (pattern, material, object, face) (`_key_tables`):
    # every surface face is a contiguous run and each pattern one block; int16 ranks let
    # numpy use its radix sort. Sky sorts first.
    # Everything per pixel is planar ([3, N] rows, not [N, 3]): numpy broadcasts a colour
    # over a row at full speed, but over length-3 inner rows several times slower.
    tables = _key_tables(scene, frame.seen)
    t, ids = frame.t.reshape(-1), frame.ids.reshape(-1)
    key = ids * np.int16(8) + frame.face.reshape(-1)
    order = np.argsort(np.take(tables[0], key + np.int16(8)), kind="stable")
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
    n, alb, emit, occlusion = _surfaces(
        scene, o, p, key, starts.tolist(), bounds, tables, noise, style
    )
    shaded = ap.shade(alb, p, n, scene.lighting, style, occlusion)  # in place: alb
    if emit is not None:
        shaded += emit
    # Radiance and camera-frame normals in sorted order (sky first), then back to pixel order
    # through the inverse permutation.
    inverse = np.empty_like(order)
    inverse[order] = np.arange(order.shape[0], dtype=order.dtype)
    sky_img = None
    if scene.sky is not None and n_sky and not ap.haze_hides_sky(scene.lighting, style):
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
