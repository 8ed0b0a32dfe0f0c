"""Equirectangular (ERP) panorama geometry: the project's one source of spherical conventions.

Frame (REP 103 body axes): x forward, y left, z up. An ERP image has width W = 2H; the centre
of pixel (row v, column u) sits at (u + 0.5, v + 0.5) and looks along

    lon λ = π (1 − 2 (u + 0.5) / W)     (centre column λ = 0 looks along +x, left quarter +y)
    lat φ = π (0.5 − (v + 0.5) / H)     (top row looks up, +z)
    ray   = (cos φ cos λ, cos φ sin λ, sin φ)

Moving right in the image turns right (viewed from inside, not mirrored). Depth is *range*:
Euclidean metres from the camera centre along the ray; +inf marks sky / no return.

Every function is torch, batched over leading dimensions, differentiable and device-agnostic.
Functions marked "numpy in, numpy out" also accept numpy arrays and then return numpy arrays.
Non-finite inputs are replaced before any arithmetic, so no inf or NaN reaches a gradient.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from typing import Any, TypeVar

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
    "cassini_to_erp",
    "distortion_weights",
    "erp_to_views",
    "fisheye_project",
    "fisheye_unproject",
    "flip_horizontal",
    "icosahedron_vertices",
    "lonlat_to_pixel",
    "pixel_lonlat",
    "pixel_rays",
    "points_to_normals",
    "points_to_range",
    "range_to_normals",
    "range_to_points",
    "rays_to_lonlat",
    "rays_to_pixel",
    "rotation_between",
    "rpy_to_matrix",
    "solid_angle_weights",
    "view_rays",
    "views_to_erp",
    "yaw_shift",
]

NORM_EPS = 1e-12  # floor for vector norms: keeps normalisation finite and differentiable at 0
VIEW_VALID_MIN_WEIGHT = 1.0 - 1e-3  # a bilinear view pixel is valid when ~all its weight is valid

_F = TypeVar("_F", bound=Callable[..., Any])


def _numpy_io(func: _F) -> _F:
    """Let a torch function take numpy arrays: any ndarray argument is converted to a tensor,
    and the results are ndarrays when the first argument (the map) was one."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not any(isinstance(a, np.ndarray) for a in (*args, *kwargs.values())):
            return func(*args, **kwargs)
        numpy_out = bool(args) and isinstance(args[0], np.ndarray)

        def to_torch(a: Any) -> Any:
            return torch.from_numpy(np.ascontiguousarray(a)) if isinstance(a, np.ndarray) else a

        out = func(*(to_torch(a) for a in args), **{k: to_torch(v) for k, v in kwargs.items()})
        if not numpy_out:
            return out
        if isinstance(out, tuple):
            return tuple(o.detach().cpu().numpy() for o in out)
        return out.detach().cpu().numpy()

    return wrapper  # type: ignore[return-value]


def _check_erp_size(height: int, width: int) -> None:
    if height < 2 or width < 2:
        raise ValueError(f"ERP size must be at least 2x2, got {height}x{width}")


# ---------------------------------------------------------------------------------------------
# Pixels <-> rays
# ---------------------------------------------------------------------------------------------


def pixel_lonlat(
    height: int, width: int, *, device: torch.device | str | None = None, dtype=torch.float32
) -> tuple[torch.Tensor, torch.Tensor]:
    """Longitude of each column [W] and latitude of each row [H], radians, at pixel centres."""
    _check_erp_size(height, width)
    # Computed in float64 so that float32 results are correctly rounded.
    u = torch.arange(width, dtype=torch.float64, device=device)
    v = torch.arange(height, dtype=torch.float64, device=device)
    lon = math.pi * (1.0 - 2.0 * (u + 0.5) / width)
    lat = math.pi * (0.5 - (v + 0.5) / height)
    return lon.to(dtype), lat.to(dtype)


def lonlat_to_pixel(
    lon: torch.Tensor, lat: torch.Tensor, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Continuous ERP pixel coordinates (u, v) of directions; pixel centres land on k + 0.5.

    The inverse of `pixel_lonlat`, extended to the continuum: u in [0, W) for lon in (−π, π].
    """
    u = (1.0 - lon / math.pi) * (width / 2.0)
    v = (0.5 - lat / math.pi) * height
    return u, v


def rays_to_lonlat(rays: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(lon, lat) in radians of direction vectors [..., 3] (need not be unit length)."""
    x, y, z = rays.unbind(-1)
    lon = torch.atan2(y, x)
    lat = torch.atan2(z, torch.sqrt(x * x + y * y))
    return lon, lat


@_numpy_io
def rays_to_pixel(rays: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Continuous ERP pixel coordinates [..., 2] = (u, v) of directions [..., 3].

    Pixel centres land on k + 0.5 (`lonlat_to_pixel` of `rays_to_lonlat`). Numpy in, numpy out.
    """
    lon, lat = rays_to_lonlat(rays)
    u, v = lonlat_to_pixel(lon, lat, height, width)
    return torch.stack([u, v], dim=-1)


def pixel_rays(
    height: int, width: int, *, device: torch.device | str | None = None, dtype=torch.float32
) -> torch.Tensor:
    """Unit ray of every ERP pixel centre, [H, W, 3], REP 103 camera frame."""
    lon, lat = pixel_lonlat(height, width, device=device, dtype=torch.float64)
    cos_lat = torch.cos(lat)[:, None]  # [H, 1]
    rays = torch.stack(
        [
            cos_lat * torch.cos(lon)[None, :],
            cos_lat * torch.sin(lon)[None, :],
            torch.sin(lat)[:, None].expand(height, width),
        ],
        dim=-1,
    )  # [H, W, 3]
    return rays.to(dtype)


# ---------------------------------------------------------------------------------------------
# Range <-> points <-> normals
# ---------------------------------------------------------------------------------------------


@_numpy_io
def range_to_points(range_m: torch.Tensor) -> torch.Tensor:
    """Points [..., H, W, 3] in metres (camera frame) from range [..., H, W].

    Non-finite range (+inf sky, NaN invalid) gives non-finite points. Numpy in, numpy out.
    """
    if range_m.ndim < 2:
        raise ValueError(f"range_m must be [..., H, W], got shape {tuple(range_m.shape)}")
    H, W = range_m.shape[-2:]
    rays = pixel_rays(H, W, device=range_m.device, dtype=range_m.dtype)
    return range_m[..., None] * rays


@_numpy_io
def points_to_range(points: torch.Tensor) -> torch.Tensor:
    """Range [..., H, W] in metres: the Euclidean norm of each point. Numpy in, numpy out."""
    if points.shape[-1] != 3:
        raise ValueError(f"points must be [..., 3], got shape {tuple(points.shape)}")
    return torch.linalg.vector_norm(points, dim=-1)


def _pad_sphere(x: torch.Tensor, pad: int = 1) -> torch.Tensor:
    """Pad an ERP map [..., H, W] by `pad` pixels with its true spherical neighbours.

    Columns wrap around the seam; beyond a pole, row k continues as row k of the opposite
    meridian (column shift W/2), read in reverse order.
    """
    W = x.shape[-1]
    half = W // 2
    top = torch.roll(x[..., :pad, :], half, dims=-1).flip(-2)
    bottom = torch.roll(x[..., -pad:, :], half, dims=-1).flip(-2)
    x = torch.cat([top, x, bottom], dim=-2)
    return torch.cat([x[..., -pad:], x, x[..., :pad]], dim=-1)


def _safe_normalize(v: torch.Tensor) -> torch.Tensor:
    return v / torch.linalg.vector_norm(v, dim=-1, keepdim=True).clamp_min(NORM_EPS)


@_numpy_io
def points_to_normals(points: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Unit surface normals [..., H, W, 3] of an ERP point map, and their validity [..., H, W].

    Each normal averages the four cross products of neighbour differences (up, left, down,
    right); the left/right seam wraps and the poles continue over the opposite meridian.
    Normals face the camera (n · p <= 0). A normal is valid when its point is finite and at
    least one neighbour pair is finite and non-degenerate. Numpy in, numpy out.
    """
    if points.ndim < 3 or points.shape[-1] != 3:
        raise ValueError(f"points must be [..., H, W, 3], got shape {tuple(points.shape)}")
    finite = torch.isfinite(points).all(dim=-1)  # [..., H, W]
    p = torch.where(finite[..., None], points, torch.zeros_like(points))

    grid = _pad_sphere(p.movedim(-1, -3), 1).movedim(-3, -1)  # [..., H+2, W+2, 3]
    ok = _pad_sphere(finite, 1)  # [..., H+2, W+2]
    centre = grid[..., 1:-1, 1:-1, :]
    # Neighbours in counter-clockwise order as seen from inside the sphere: up, left, down, right.
    shifts = ((0, 1), (1, 0), (2, 1), (1, 2))
    diffs = [grid[..., r : r + p.shape[-3], c : c + p.shape[-2], :] - centre for r, c in shifts]
    oks = [ok[..., r : r + p.shape[-3], c : c + p.shape[-2]] for r, c in shifts]

    total = torch.zeros_like(p)
    any_valid = torch.zeros_like(finite)
    for k in range(4):
        cross = torch.linalg.cross(diffs[k], diffs[(k + 1) % 4], dim=-1)
        pair_ok = oks[k] & oks[(k + 1) % 4]
        pair_ok = pair_ok & (torch.linalg.vector_norm(cross.detach(), dim=-1) > NORM_EPS)
        total = total + torch.where(pair_ok[..., None], _safe_normalize(cross), 0.0)
        any_valid = any_valid | pair_ok
    normals = _safe_normalize(total)
    # Face the camera: the camera sits at the origin, so a visible surface has n · p < 0.
    facing = torch.where((normals * p).sum(-1, keepdim=True) > 0, -1.0, 1.0)
    valid = finite & any_valid
    normals = torch.where(valid[..., None], normals * facing, 0.0)
    return normals, valid


@_numpy_io
def range_to_normals(range_m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Camera-facing unit normals and validity from a range map [..., H, W] (metres)."""
    return points_to_normals(range_to_points(range_m))


# ---------------------------------------------------------------------------------------------
# Pixel areas
# ---------------------------------------------------------------------------------------------


def solid_angle_weights(
    height: int, width: int, *, device: torch.device | str | None = None, dtype=torch.float32
) -> torch.Tensor:
    """Exact solid angle of every ERP pixel, [H, W] steradians; they sum to 4π.

    A pixel spans Δλ = 2π/W and latitudes φ ± Δφ/2, so its area is
    Δλ (sin(φ + Δφ/2) − sin(φ − Δφ/2)) = (2π/W) · 2 cos φ sin(π / 2H).
    """
    _, lat = pixel_lonlat(height, width, device=device, dtype=torch.float64)
    row = (2 * math.pi / width) * 2.0 * torch.cos(lat) * math.sin(math.pi / (2 * height))
    return row[:, None].expand(height, width).to(dtype).contiguous()


def distortion_weights(
    height: int, width: int, *, device: torch.device | str | None = None, dtype=torch.float32
) -> torch.Tensor:
    """Solid-angle weights [H, W] normalised to mean 1 (dimensionless), for ERP-aware losses."""
    w = solid_angle_weights(height, width, device=device, dtype=torch.float64)
    return (w * (height * width / (4 * math.pi))).to(dtype)


# ---------------------------------------------------------------------------------------------
# Perspective views
# ---------------------------------------------------------------------------------------------


def icosahedron_vertices(dtype=torch.float32) -> torch.Tensor:
    """The 12 vertices of a regular icosahedron as unit vectors [12, 3] (REP 103 frame).

    Oriented with vertices at the poles (±z) and two rings of five at latitude ±atan(1/2); the
    upper ring starts at +x (longitude 0) and the lower ring is offset by 36°. Order: +z,
    upper ring by increasing longitude, lower ring by increasing longitude, −z.
    """
    ring_lat = math.atan(0.5)
    verts = [(0.0, 0.0, 1.0)]
    for offset in (0.0, math.pi / 5):
        lat = ring_lat if offset == 0.0 else -ring_lat
        for k in range(5):
            lon = offset + k * 2 * math.pi / 5
            verts.append(
                (math.cos(lat) * math.cos(lon), math.cos(lat) * math.sin(lon), math.sin(lat))
            )
    verts.append((0.0, 0.0, -1.0))
    return torch.tensor(verts, dtype=torch.float64).to(dtype)


def _view_frames(directions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Forward, left and up unit axes [V, 3] of pinhole views looking along `directions`.

    Up stays in the vertical plane through the forward axis (no roll). Looking straight up or
    down, the frame is the limit of pitching from +x: up is −x (looking up) or +x (down).
    """
    if directions.ndim != 2 or directions.shape[-1] != 3:
        raise ValueError(f"directions must be [V, 3], got shape {tuple(directions.shape)}")
    fwd = _safe_normalize(directions)
    z = torch.zeros_like(fwd)
    z[:, 2] = 1.0
    left = torch.linalg.cross(z, fwd, dim=-1)
    horizontal = torch.linalg.vector_norm(left, dim=-1, keepdim=True) > 1e-6
    pole_up = torch.zeros_like(fwd)
    pole_up[:, 0] = -torch.sign(fwd[:, 2])
    pole_left = torch.linalg.cross(pole_up, fwd, dim=-1)
    left = _safe_normalize(torch.where(horizontal, left, pole_left))
    up = torch.linalg.cross(fwd, left, dim=-1)
    return fwd, left, up


def view_rays(directions: torch.Tensor, fov_deg: float, size: int) -> torch.Tensor:
    """Unit rays [V, size, size, 3] of square pinhole views (pixel centres at k + 0.5).

    Image x grows to the right (towards −left), image y grows downwards (towards −up); the
    field of view spans edge to edge of the image.
    """
    if not 0.0 < fov_deg < 180.0:
        raise ValueError(f"fov_deg must be in (0, 180), got {fov_deg}")
    if size < 1:
        raise ValueError(f"view size must be positive, got {size}")
    fwd, left, up = _view_frames(directions)
    half = math.tan(math.radians(fov_deg) / 2)
    t = (
        (torch.arange(size, dtype=directions.dtype, device=directions.device) + 0.5) / size - 0.5
    ) * (2 * half)  # [s], tangent-plane coordinate of each pixel centre
    x = t[None, None, :, None]  # image right
    y = t[None, :, None, None]  # image down
    rays = fwd[:, None, None] - x * left[:, None, None] - y * up[:, None, None]
    return _safe_normalize(rays)  # [V, s, s, 3]


def _erp_grid(lon: torch.Tensor, lat: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """grid_sample coordinates (align_corners=False) into an ERP padded by `_pad_sphere(., 1)`."""
    u, v = lonlat_to_pixel(lon, lat, height, width)
    gx = (u + 1.0) / (width + 2) * 2 - 1
    gy = (v + 1.0) / (height + 2) * 2 - 1
    return torch.stack([gx, gy], dim=-1)


@_numpy_io
def erp_to_views(
    erp: torch.Tensor,
    directions: torch.Tensor,
    fov_deg: float,
    size: int,
    *,
    valid: torch.Tensor | None = None,
    mode: str = "bilinear",
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample an ERP map [..., C, H, W] into V square pinhole views looking along `directions`.

    Returns views [..., V, C, size, size] and views_valid [..., V, size, size]. A view pixel is
    invalid where its ERP source is invalid (`valid` [..., H, W], False) or non-finite in any
    channel; invalid view pixels hold 0. Bilinear sampling renormalises over valid source
    pixels and keeps a pixel only when (almost) all its interpolation weight is valid, so depth
    edges never blend foreground with sky. The seam wraps and the poles continue over the
    opposite meridian. Numpy in, numpy out.
    """
    if mode not in ("bilinear", "nearest"):
        raise ValueError(f"mode must be 'bilinear' or 'nearest', got {mode!r}")
    if erp.ndim < 3:
        raise ValueError(f"erp must be [..., C, H, W], got shape {tuple(erp.shape)}")
    *lead, C, H, W = erp.shape
    ok = torch.isfinite(erp).all(dim=-3)  # [..., H, W]
    if valid is not None:
        if valid.shape[-2:] != (H, W):
            raise ValueError(f"valid must be [..., {H}, {W}], got {tuple(valid.shape)}")
        ok = ok & valid.to(torch.bool)
    ok = ok.expand(*lead, H, W)
    dtype = erp.dtype if erp.is_floating_point() else torch.float32
    dirs = directions.to(device=erp.device, dtype=dtype)
    V = dirs.shape[0]

    src = torch.where(ok[..., None, :, :], erp.to(dtype), 0.0).reshape(-1, C, H, W)
    weight = ok.to(dtype).reshape(-1, 1, H, W)
    B = src.shape[0]
    # One grid for all views, stacked along the output height: [1, V*s, s, 2].
    lon, lat = rays_to_lonlat(view_rays(dirs, fov_deg, size))
    grid = _erp_grid(lon, lat, H, W).reshape(1, V * size, size, 2).expand(B, -1, -1, -1)

    both = _pad_sphere(torch.cat([src * weight, weight], dim=1), 1)
    sampled = F.grid_sample(both, grid, mode=mode, align_corners=False)  # [B, C+1, V*s, s]
    num, den = sampled[:, :C], sampled[:, C:]
    views_valid = den > (VIEW_VALID_MIN_WEIGHT if mode == "bilinear" else 0.5)
    views = torch.where(views_valid, num / den.clamp_min(NORM_EPS), 0.0)
    views = views.reshape(B, C, V, size, size).transpose(1, 2)  # [B, V, C, s, s]
    views_valid = views_valid.reshape(B, V, size, size)
    return views.reshape(*lead, V, C, size, size), views_valid.reshape(*lead, V, size, size)


@_numpy_io
def views_to_erp(
    views: torch.Tensor, directions: torch.Tensor, fov_deg: float, height: int, width: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Back-project pinhole views [..., V, C, s, s] onto an ERP canvas, for visualisation.

    Every ERP pixel samples (bilinearly) each view that sees it and blends them with weight
    cos(angle to the view axis), so overlaps fade smoothly. Returns erp [..., C, H, W] (0 where
    no view sees the pixel) and coverage [H, W]: how many views see each ERP pixel.
    Numpy in, numpy out.
    """
    if views.ndim < 4 or views.shape[-1] != views.shape[-2]:
        raise ValueError(f"views must be [..., V, C, s, s], got shape {tuple(views.shape)}")
    _check_erp_size(height, width)
    *lead, V, C, s, _ = views.shape
    dtype = views.dtype if views.is_floating_point() else torch.float32
    dirs = directions.to(device=views.device, dtype=dtype)
    if dirs.shape[0] != V:
        raise ValueError(f"{V} views but {dirs.shape[0]} directions")
    fwd, left, up = _view_frames(dirs)
    rays = pixel_rays(height, width, device=views.device, dtype=dtype)  # [H, W, 3]
    depth = torch.einsum("hwc,vc->vhw", rays, fwd)  # [V, H, W], cos of angle to the axis
    half = math.tan(math.radians(fov_deg) / 2)
    safe_depth = depth.clamp_min(1e-6)
    x = -torch.einsum("hwc,vc->vhw", rays, left) / safe_depth / half  # in [-1, 1] inside
    y = -torch.einsum("hwc,vc->vhw", rays, up) / safe_depth / half
    inside = (depth > 1e-6) & (x.abs() <= 1) & (y.abs() <= 1)  # [V, H, W]
    grid = torch.stack([x, y], dim=-1).clamp(-2, 2)  # [V, H, W, 2]

    flat = views.to(dtype).reshape(-1, V, C, s, s)
    B = flat.shape[0]
    sampled = F.grid_sample(
        flat.reshape(B * V, C, s, s),
        grid.repeat(B, 1, 1, 1),
        mode="bilinear",
        padding_mode="border",
        align_corners=False,
    ).reshape(B, V, C, height, width)
    w = torch.where(inside, depth, 0.0)  # [V, H, W]
    total = w.sum(0)  # [H, W]
    erp = (sampled * w[None, :, None]).sum(1) / total.clamp_min(NORM_EPS)
    coverage = inside.sum(0).to(dtype)
    return erp.reshape(*lead, C, height, width), coverage


# ---------------------------------------------------------------------------------------------
# Re-projections and augmentations with a geometric meaning
# ---------------------------------------------------------------------------------------------


@_numpy_io
def cassini_to_erp(cassini: torch.Tensor) -> torch.Tensor:
    """Resample a Cassini panorama [..., C, Hc, Wc] to ERP [..., C, Wc, Hc] (Deep360 data).

    Reproduces the official `cassini2Equirec`: for ERP longitude θ and latitude φ (pixel
    centres), the Cassini source angles are θc = atan2(tan φ, cos θ), φc = asin(cos φ sin θ),
    sampled bilinearly at grid (x, y) = (−φc / (π/2), −θc / π) with align_corners=True and
    border padding. Integer inputs come back as float (the official code truncates uint8 RGB;
    cast yourself if you need that). Numpy in, numpy out.
    """
    if cassini.ndim < 3:
        raise ValueError(f"cassini must be [..., C, Hc, Wc], got shape {tuple(cassini.shape)}")
    *lead, C, Hc, Wc = cassini.shape
    erp_h, erp_w = Wc, Hc
    dtype = cassini.dtype if cassini.is_floating_point() else torch.float32
    theta, phi = pixel_lonlat(erp_h, erp_w, device=cassini.device, dtype=torch.float64)
    theta = theta[None, :]  # [1, W]  ERP longitude, π − π/W down to −π + π/W
    phi = phi[:, None]  # [H, 1]    ERP latitude, π/2 − π/2H down to −π/2 + π/2H
    theta_c = torch.atan2(torch.tan(phi), torch.cos(theta))
    phi_c = torch.asin(torch.cos(phi) * torch.sin(theta))
    grid = torch.stack(
        [(-phi_c / (0.5 * math.pi)).clamp(-1, 1), (-theta_c / math.pi).clamp(-1, 1)], dim=-1
    ).to(dtype)  # [erp_h, erp_w, 2]
    src = cassini.to(dtype).reshape(-1, C, Hc, Wc)
    out = F.grid_sample(
        src,
        grid[None].expand(src.shape[0], -1, -1, -1),
        mode="bilinear",
        padding_mode="border",
        align_corners=True,
    )
    return out.reshape(*lead, C, erp_h, erp_w)


@_numpy_io
def yaw_shift(erp: torch.Tensor, shift_px: int) -> torch.Tensor:
    """Circularly shift the columns of an ERP map [..., W] by `shift_px` (to the right if > 0).

    Geometric meaning: the camera yaws by +2π · shift_px / W radians (counter-clockwise about
    +z, i.e. to the left): the new centre column shows what the old one saw `shift_px` columns
    to its left. Points of a shifted range map live in the rotated frame. Numpy in, numpy out.
    """
    return torch.roll(erp, shifts=int(shift_px), dims=-1)


@_numpy_io
def flip_horizontal(erp: torch.Tensor) -> torch.Tensor:
    """Mirror an ERP map [..., W] left/right: the reflection y -> −y (lon -> −lon).

    A flipped range map is the exact range map of the mirrored scene. Numpy in, numpy out.
    """
    return torch.flip(erp, dims=(-1,))


# ---------------------------------------------------------------------------------------------
# Rotations between frames
# ---------------------------------------------------------------------------------------------


def rpy_to_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """float64 [3, 3] rotation of fixed-axis roll (x), pitch (y), yaw (z), radians: Rz Ry Rx.

    The URDF / REP 103 convention: a child frame with `rpy` relative to its parent has
    p_parent = R p_child. Positive pitch turns the child's +x towards the parent's −z (nose
    down); roll π turns the child upside down.
    """
    cr, sr = math.cos(roll), math.sin(roll)
    cp, sp = math.cos(pitch), math.sin(pitch)
    cy, sy = math.cos(yaw), math.sin(yaw)
    rx = np.array([[1.0, 0.0, 0.0], [0.0, cr, -sr], [0.0, sr, cr]])
    ry = np.array([[cp, 0.0, sp], [0.0, 1.0, 0.0], [-sp, 0.0, cp]])
    rz = np.array([[cy, -sy, 0.0], [sy, cy, 0.0], [0.0, 0.0, 1.0]])
    return rz @ ry @ rx


def rotation_between(source: np.ndarray, target: np.ndarray) -> np.ndarray:
    """float64 [3, 3] smallest rotation R with R · source/|source| = target/|target|.

    Rodrigues' formula about source × target; for opposite vectors, a half turn about an axis
    perpendicular to source. Raises ValueError for a zero or non-finite vector.
    """
    a = np.asarray(source, np.float64)
    b = np.asarray(target, np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if not (np.isfinite(na) and np.isfinite(nb) and na > NORM_EPS and nb > NORM_EPS):
        raise ValueError(f"rotation_between needs finite non-zero vectors, got {a}, {b}")
    a, b = a / na, b / nb
    axis = np.cross(a, b)
    sin, cos = np.linalg.norm(axis), float(a @ b)
    if sin < 1e-12:
        if cos > 0:
            return np.eye(3)
        # Half turn about any axis perpendicular to a: R = 2 n nᵀ − I.
        helper = np.eye(3)[int(np.argmin(np.abs(a)))]
        n = np.cross(a, helper)
        n /= np.linalg.norm(n)
        return 2.0 * np.outer(n, n) - np.eye(3)
    k = axis / sin
    cross = np.array([[0.0, -k[2], k[1]], [k[2], 0.0, -k[0]], [-k[1], k[0], 0.0]])
    return np.eye(3) + sin * cross + (1.0 - cos) * (cross @ cross)


# ---------------------------------------------------------------------------------------------
# Fisheye lenses (numpy, float64): the lens models of dual-fisheye 360° cameras
# ---------------------------------------------------------------------------------------------

FISHEYE_MODELS = ("equidistant", "equisolid", "kannala_brandt")
_KB_NEWTON_STEPS = 12  # Newton steps inverting θ(1 + k1 θ² + ...): converges to 1e-12 rad


def _body_to_optical(rays: np.ndarray) -> np.ndarray:
    """REP 103 lens body axes (x along the optical axis, y left, z up) -> OpenCV optical axes
    (z along the optical axis, x image right, y image down)."""
    return np.stack([-rays[..., 1], -rays[..., 2], rays[..., 0]], axis=-1)


def _optical_to_body(rays: np.ndarray) -> np.ndarray:
    return np.stack([rays[..., 2], -rays[..., 0], -rays[..., 1]], axis=-1)


def _lens_radius(theta: np.ndarray, model: str, focal: float, k: tuple[float, ...]) -> np.ndarray:
    if model == "equidistant":
        return focal * theta  # r = f θ
    if model == "equisolid":
        return 2.0 * focal * np.sin(theta / 2.0)  # r = 2 f sin(θ/2)
    if model == "kannala_brandt":  # OpenCV cv2.fisheye: r = f θ (1 + k1 θ² + k2 θ⁴ + ...)
        t2 = theta * theta
        poly = 1.0 + sum(kk * t2 ** (i + 1) for i, kk in enumerate(k))
        return focal * theta * poly
    raise ValueError(f"unknown fisheye model '{model}' (one of {', '.join(FISHEYE_MODELS)})")


def fisheye_project(
    rays: np.ndarray,
    rotation: np.ndarray,
    centre: tuple[float, float],
    focal: float,
    model: str = "equidistant",
    k: tuple[float, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates [..., 2] (x right, y down; OpenCV's convention: pixel (0, 0) centred on
    (0, 0), as cv2.remap reads maps) of panorama-frame directions [..., 3] in a fisheye lens,
    and their angle θ from the optical axis [...] (rad).

    rotation: float64 [3, 3] the lens body frame in the panorama frame (p_pano = R p_lens; lens
    body x = optical axis, REP 103); centre: the principal point (pixels); focal: pixels per
    radian at the centre. Directions behind the lens still get coordinates (mask them by θ).
    """
    lens = _body_to_optical(np.asarray(rays, np.float64) @ np.asarray(rotation))
    x, y, z = lens[..., 0], lens[..., 1], lens[..., 2]
    sideways = np.hypot(x, y)
    theta = np.arctan2(sideways, z)
    r = _lens_radius(theta, model, focal, k)
    with np.errstate(invalid="ignore", divide="ignore"):
        scale = np.where(sideways > 0, r / sideways, 0.0)
    pixels = np.stack([centre[0] + x * scale, centre[1] + y * scale], axis=-1)
    return pixels, theta


def fisheye_unproject(
    pixels: np.ndarray,
    rotation: np.ndarray,
    centre: tuple[float, float],
    focal: float,
    model: str = "equidistant",
    k: tuple[float, ...] = (),
) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of `fisheye_project`: unit panorama-frame rays [..., 3] of fisheye pixel
    coordinates [..., 2], and their θ [...] (rad; NaN where the model has no inverse)."""
    pixels = np.asarray(pixels, np.float64)
    dx, dy = pixels[..., 0] - centre[0], pixels[..., 1] - centre[1]
    r = np.hypot(dx, dy)
    if model == "equidistant":
        theta = r / focal
    elif model == "equisolid":
        with np.errstate(invalid="ignore"):
            theta = 2.0 * np.arcsin(r / (2.0 * focal))
    elif model == "kannala_brandt":
        theta = r / focal
        for _ in range(_KB_NEWTON_STEPS):
            t2 = theta * theta
            f = theta * (1.0 + sum(kk * t2 ** (i + 1) for i, kk in enumerate(k))) - r / focal
            df = 1.0 + sum((2 * i + 3) * kk * t2 ** (i + 1) for i, kk in enumerate(k))
            theta = theta - f / df
    else:
        raise ValueError(f"unknown fisheye model '{model}' (one of {', '.join(FISHEYE_MODELS)})")
    with np.errstate(invalid="ignore", divide="ignore"):
        c, s_ = np.where(r > 0, dx / r, 1.0), np.where(r > 0, dy / r, 0.0)
    sin_t = np.sin(theta)
    optical = np.stack([sin_t * c, sin_t * s_, np.cos(theta)], axis=-1)
    return _optical_to_body(optical) @ np.asarray(rotation).T, theta
