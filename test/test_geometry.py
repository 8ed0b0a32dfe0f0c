"""ERP geometry: hand-computed rays, round trips, analytic normals, areas, views, Cassini."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dap_core import geometry as g

H, W = 32, 64


def smooth_field(rays: torch.Tensor) -> torch.Tensor:
    """A smooth 3-channel function of direction [..., 3] -> [3, ...], exact at any sample."""
    x, y, z = rays.unbind(-1)
    return torch.stack([x + 0.5 * y * z, torch.sin(2 * y) + z, z * z - x * y], dim=0)


# --- pixels and rays ------------------------------------------------------------------------


def test_centre_pixel_ray_looks_along_plus_x():
    rays = g.pixel_rays(H, W, dtype=torch.float64)
    # The four pixels around the image centre sit half a pixel off the axis.
    half_lon, half_lat = math.pi / W, math.pi / (2 * H)
    expected = torch.tensor(
        [math.cos(half_lat) * math.cos(half_lon), math.cos(half_lat) * math.sin(half_lon)]
    )
    centre = rays[H // 2 - 1, W // 2 - 1]
    assert torch.allclose(centre[:2], expected.double(), atol=1e-12)
    assert centre[2] == pytest.approx(math.sin(half_lat), abs=1e-12)
    mean = rays[H // 2 - 1 : H // 2 + 1, W // 2 - 1 : W // 2 + 1].reshape(-1, 3).mean(0)
    assert torch.allclose(mean / mean.norm(), torch.tensor([1.0, 0, 0]).double(), atol=1e-12)


def test_left_quarter_column_looks_along_plus_y():
    lon, _ = g.pixel_lonlat(H, W, dtype=torch.float64)
    # Columns W/4 - 1 and W/4 straddle longitude +π/2.
    assert (lon[W // 4 - 1] + lon[W // 4]) / 2 == pytest.approx(math.pi / 2, abs=1e-12)
    rays = g.pixel_rays(H, W, dtype=torch.float64)
    mean = rays[H // 2 - 1 : H // 2 + 1, W // 4 - 1 : W // 4 + 1].reshape(-1, 3).mean(0)
    assert torch.allclose(mean / mean.norm(), torch.tensor([0.0, 1, 0]).double(), atol=1e-12)


def test_right_quarter_looks_along_minus_y_and_edges_look_back():
    rays = g.pixel_rays(H, W, dtype=torch.float64)
    right = rays[H // 2, 3 * W // 4 - 1 : 3 * W // 4 + 1].mean(0)
    assert right[1] < -0.99
    assert rays[H // 2, 0, 0] < -0.99 and rays[H // 2, -1, 0] < -0.99


def test_top_row_is_near_plus_z_and_bottom_near_minus_z():
    rays = g.pixel_rays(H, W, dtype=torch.float64)
    assert torch.allclose(rays[0, :, 2], torch.full((W,), math.cos(math.pi / (2 * H))).double())
    assert torch.allclose(rays[-1, :, 2], -torch.full((W,), math.cos(math.pi / (2 * H))).double())


def test_rays_are_unit_and_lonlat_round_trips():
    rays = g.pixel_rays(H, W, dtype=torch.float64)
    assert torch.allclose(rays.norm(dim=-1), torch.ones(H, W).double())
    lon, lat = g.rays_to_lonlat(rays)
    u, v = g.lonlat_to_pixel(lon, lat, H, W)
    assert torch.allclose(u, (torch.arange(W).double() + 0.5).expand(H, W), atol=1e-9)
    assert torch.allclose(v, (torch.arange(H).double()[:, None] + 0.5).expand(H, W), atol=1e-9)


# --- range, points, normals -------------------------------------------------------------------


def test_range_points_range_round_trip_batched():
    gen = torch.Generator().manual_seed(0)
    rng = torch.rand(2, 3, H, W, generator=gen) * 99 + 0.5
    pts = g.range_to_points(rng)
    assert pts.shape == (2, 3, H, W, 3)
    assert torch.allclose(g.points_to_range(pts), rng, rtol=1e-6)


def test_range_to_points_accepts_numpy():
    rng = np.full((H, W), 2.0, dtype=np.float32)
    pts = g.range_to_points(rng)
    assert isinstance(pts, np.ndarray) and pts.shape == (H, W, 3)
    np.testing.assert_allclose(pts[0, :, 2], 2 * math.cos(math.pi / (2 * H)), rtol=1e-6)


def plane_range(normal: torch.Tensor, offset: float) -> torch.Tensor:
    """Range to the plane n·p = offset along each ray (+inf where the ray misses it)."""
    rays = g.pixel_rays(H, W, dtype=torch.float64)
    denom = rays @ normal
    t = offset / denom
    return torch.where(t > 0, t, torch.full_like(t, math.inf))


def test_normals_of_floor_plane_point_up():
    rng = plane_range(torch.tensor([0.0, 0, 1]).double(), -1.5)  # floor 1.5 m below
    normals, valid = g.range_to_normals(rng)
    lower = valid[H // 2 + 2 :]  # well below the horizon every normal is valid
    assert lower.all()
    assert not valid[: H // 2].any()  # the sky half has no floor
    n = normals[H // 2 + 2 :][lower]
    assert torch.allclose(n, torch.tensor([0.0, 0, 1]).double().expand_as(n), atol=1e-6)


def test_normals_of_oblique_plane_face_camera():
    n_true = torch.tensor([1.0, -2.0, 0.5]).double()
    n_true = n_true / n_true.norm()
    rng = plane_range(n_true, 3.0)
    normals, valid = g.range_to_normals(rng)
    assert valid.sum() > H * W // 4
    # The plane is on the +n side of the camera, so its camera-facing normal is −n.
    inner = valid.clone()
    inner[:, [0, -1]] = False  # seam pixels may straddle the plane's horizon
    n = normals[inner]
    assert torch.allclose(n, -n_true.expand_as(n), atol=1e-6)


def test_normals_of_sphere_around_camera_point_inward_including_poles():
    rng = torch.full((H, W), 4.0, dtype=torch.float64)
    normals, valid = g.range_to_normals(rng)
    assert valid.all()
    rays = g.pixel_rays(H, W, dtype=torch.float64)
    # Neighbour-difference normals of a sphere sampled on the ERP grid: exact up to O(pixel²).
    cos_err = 1 - (normals * -rays).sum(-1)
    assert cos_err.max() < 1e-2
    assert cos_err[H // 4 : -H // 4].max() < 1e-3


def test_normals_wrap_around_the_seam():
    # A vertical plane behind the camera (x = -2) crosses the left/right seam.
    rng = plane_range(torch.tensor([-1.0, 0, 0]).double(), 2.0)
    normals, valid = g.range_to_normals(rng)
    rows = slice(2, -2)
    assert valid[rows, 0].all() and valid[rows, -1].all()
    seam = torch.cat([normals[rows, 0], normals[rows, -1]])
    assert torch.allclose(seam, torch.tensor([1.0, 0, 0]).double().expand_as(seam), atol=1e-6)


def test_normals_skip_sky_and_have_finite_gradients():
    rng = plane_range(torch.tensor([0.0, 0, 1]).double(), -1.2).requires_grad_(True)
    normals, valid = g.range_to_normals(rng)
    assert not torch.isfinite(rng[0]).any()
    (normals * torch.linspace(0, 1, 3).double()).sum().backward()
    assert torch.isfinite(rng.grad).all()
    assert rng.grad[valid].abs().sum() > 0


def test_points_to_normals_numpy_in_numpy_out():
    pts = g.range_to_points(np.full((H, W), 3.0, dtype=np.float32))
    normals, valid = g.points_to_normals(pts)
    assert isinstance(normals, np.ndarray) and normals.dtype == np.float32
    assert valid.dtype == np.bool_ and valid.all()


# --- areas ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(8, 16), (64, 128), (256, 512)])
def test_solid_angles_sum_to_four_pi(size):
    w = g.solid_angle_weights(*size)
    assert w.shape == size
    assert float(w.sum()) == pytest.approx(4 * math.pi, abs=1e-3)
    d = g.distortion_weights(*size)
    assert float(d.mean()) == pytest.approx(1.0, abs=1e-5)


def test_solid_angle_of_equator_pixel_is_hand_computed():
    w = g.solid_angle_weights(4, 8, dtype=torch.float64)
    # Row 1 spans latitudes 0..45°: area = (2π/8) · (sin 45° − sin 0°).
    assert float(w[1, 0]) == pytest.approx(2 * math.pi / 8 * math.sin(math.pi / 4), rel=1e-12)
    assert float(w[0, 0]) == pytest.approx(2 * math.pi / 8 * (1 - math.sin(math.pi / 4)))


# --- perspective views ------------------------------------------------------------------------


def test_icosahedron_vertices_are_unit_and_regular():
    v = g.icosahedron_vertices(dtype=torch.float64)
    assert v.shape == (12, 3)
    assert torch.allclose(v.norm(dim=-1), torch.ones(12).double())
    cos = v @ v.T
    # Each vertex has exactly five nearest neighbours, at the edge angle atan(2), and one antipode.
    edge = 1 / math.sqrt(5)
    for row in cos:
        assert int(torch.isclose(row, torch.tensor(edge).double(), atol=1e-9).sum()) == 5
        assert int(torch.isclose(row, torch.tensor(-1.0).double(), atol=1e-9).sum()) == 1


def test_views_match_the_field_sampled_along_their_rays():
    h, w = 128, 256
    erp = smooth_field(g.pixel_rays(h, w, dtype=torch.float64))  # [3, h, w]
    dirs = g.icosahedron_vertices(dtype=torch.float64)
    views, valid = g.erp_to_views(erp, dirs, 90.0, 32)
    assert views.shape == (12, 3, 32, 32) and valid.all()
    exact = smooth_field(g.view_rays(dirs, 90.0, 32)).transpose(0, 1)  # [V, 3, s, s]
    # Bilinear interpolation of a smooth field: error O(pixel²) ~ (π/h)² ≈ 6e-4.
    assert (views - exact).abs().max() < 1e-3


def test_view_axes_centre_left_and_up():
    s = 2
    rays = g.view_rays(torch.tensor([[1.0, 0, 0], [0, 0, 1.0]]), 90.0, s)
    # View along +x: the right column looks to −y, the top row looks up (+z).
    assert rays[0, :, 1, 1].max() < 0 and rays[0, 0, :, 2].min() > 0
    # View straight up: the image top faces −x (head tilted back), right faces −y.
    assert rays[1, 0, :, 0].max() < 0 and rays[1, :, 1, 1].max() < 0


def test_views_agree_with_py360convert_e2p():
    """Independent implementation: py360convert (test-only dependency).

    py360convert's frame is x right, y up, z forward; its u_deg turns right, so
    u_deg = −lon and v_deg = lat. Its perspective grid puts the first and last pixel centres
    on the FOV edges (linspace), ours puts the edges at the image border, so we pass the FOV
    whose half-tangent is (s − 1)/s of ours: then both sample the same rays. The remaining
    difference is cv2.remap's fixed-point bilinear weights (1/32 pixel): measured mean
    |Δ| ≈ 9e-5 on a field of amplitude ~1, so we allow 5e-4.
    """
    py360convert = pytest.importorskip("py360convert")
    h, w, s, fov = 128, 256, 48, 80.0
    erp = smooth_field(g.pixel_rays(h, w, dtype=torch.float64)).float()
    dirs = g.icosahedron_vertices(dtype=torch.float64)
    views, _ = g.erp_to_views(erp, dirs, fov, s)
    fov_p = 2 * math.degrees(math.atan(math.tan(math.radians(fov) / 2) * (s - 1) / s))
    erp_hwc = erp.permute(1, 2, 0).numpy()
    lon, lat = g.rays_to_lonlat(dirs)
    for i in range(12):
        theirs = py360convert.e2p(
            erp_hwc, fov_p, -math.degrees(lon[i]), math.degrees(lat[i]), (s, s)
        )
        ours = views[i].permute(1, 2, 0).numpy()
        assert np.abs(theirs - ours).mean() < 5e-4, f"view {i}"


def test_views_carry_the_valid_mask_and_non_finite_values():
    h, w = 64, 128
    rng = torch.full((1, h, w), 5.0)
    rng[0, : h // 2 - 4] = math.inf  # sky above the horizon
    valid = torch.ones(h, w, dtype=torch.bool)
    valid[h // 2 - 8 : h // 2 + 8, w // 2 - 4 : w // 2 + 4] = False  # invalid patch ahead
    dirs = torch.tensor([[1.0, 0, 0], [0, 1.0, 0], [0, 0, 1.0], [0, 0, -1.0]])
    views, vv = g.erp_to_views(rng, dirs, 60.0, 16, valid=valid)
    assert torch.isfinite(views).all()
    assert not vv[0, 6:10, 6:10].any()  # centre of the forward view: the invalid patch
    assert vv[0, 15].all()  # its bottom row is below the patch
    assert not vv[2].any()  # straight up: all sky
    assert vv[3].all() and torch.allclose(views[3], torch.tensor(5.0))
    assert torch.allclose(views[1][0][vv[1]], torch.tensor(5.0))  # no blending with sky


def test_nearest_views_copy_source_values():
    h, w = 32, 64
    erp = torch.arange(h * w, dtype=torch.float32).reshape(1, h, w)
    views, vv = g.erp_to_views(erp, torch.tensor([[1.0, 0, 0]]), 30.0, 8, mode="nearest")
    assert vv.all()
    assert set(views.flatten().tolist()) <= set(erp.flatten().tolist())


def test_views_to_erp_inverts_erp_to_views_where_covered():
    h, w = 64, 128
    erp = smooth_field(g.pixel_rays(h, w, dtype=torch.float64))
    dirs = g.icosahedron_vertices(dtype=torch.float64)
    views, _ = g.erp_to_views(erp[None], dirs, 90.0, 64)
    back, coverage = g.views_to_erp(views, dirs, 90.0, h, w)
    assert back.shape == (1, 3, h, w) and coverage.shape == (h, w)
    assert coverage.min() >= 1  # twelve 90° views cover the sphere
    assert (back[0] - erp).abs().mean() < 5e-3


def test_views_are_differentiable():
    erp = torch.rand(2, 3, 16, 32, dtype=torch.float64, requires_grad=True)
    views, _ = g.erp_to_views(erp, g.icosahedron_vertices(torch.float64), 90.0, 8)
    views.sum().backward()
    assert erp.grad is not None and torch.isfinite(erp.grad).all() and erp.grad.abs().sum() > 0


def test_numpy_directions_with_a_tensor_map_give_tensors():
    views, valid = g.erp_to_views(torch.zeros(1, 8, 16), g.icosahedron_vertices().numpy(), 90, 4)
    assert isinstance(views, torch.Tensor) and isinstance(valid, torch.Tensor)
    views, valid = g.erp_to_views(np.zeros((1, 8, 16)), g.icosahedron_vertices(), 90, 4)
    assert isinstance(views, np.ndarray) and isinstance(valid, np.ndarray)


def test_erp_to_views_rejects_bad_arguments():
    with pytest.raises(ValueError, match="mode"):
        g.erp_to_views(torch.zeros(1, 8, 16), torch.eye(3), 90.0, 4, mode="cubic")
    with pytest.raises(ValueError, match="fov_deg"):
        g.erp_to_views(torch.zeros(1, 8, 16), torch.eye(3), 180.0, 4)
    with pytest.raises(ValueError, match="directions"):
        g.erp_to_views(torch.zeros(1, 8, 16), torch.zeros(3), 90.0, 4)


# --- Cassini, yaw, flip -------------------------------------------------------------------


def cassini_rays(hc: int, wc: int) -> torch.Tensor:
    """Directions of Cassini pixels, derived independently from the official sampling grid.

    The official grid samples row i at θc = π (1 − 2i/(hc − 1)) and column j at
    φc = (π/2)(1 − 2j/(wc − 1)) (align_corners=True). From θc = atan2(tan φ, cos θ) and
    φc = asin(cos φ sin θ) with d = (cos φ cos θ, cos φ sin θ, sin φ):
    d_y = sin φc and d_z / d_x = tan θc, so d = (cos φc cos θc, sin φc, cos φc sin θc).
    """
    theta_c = math.pi * (1 - 2 * torch.arange(hc, dtype=torch.float64) / (hc - 1))[:, None]
    phi_c = (math.pi / 2) * (1 - 2 * torch.arange(wc, dtype=torch.float64) / (wc - 1))[None]
    return torch.stack(
        [
            torch.cos(phi_c) * torch.cos(theta_c),
            torch.sin(phi_c).expand(hc, wc),
            torch.cos(phi_c) * torch.sin(theta_c),
        ],
        dim=-1,
    )


def test_cassini_to_erp_resamples_a_field_onto_erp_rays():
    hc, wc = 256, 128  # Deep360 stores 1024 x 512 Cassini (tall), giving 512 x 1024 ERP
    cassini = smooth_field(cassini_rays(hc, wc))  # [3, hc, wc]
    erp = g.cassini_to_erp(cassini)
    assert erp.shape == (3, wc, hc)
    expected = smooth_field(g.pixel_rays(wc, hc, dtype=torch.float64))
    err = (erp - expected).abs()
    # Bilinear on a smooth field; the border clamp only matters in the last half row.
    assert err.mean() < 1e-3
    assert err[:, 2:-2, 2:-2].max() < 1e-2


def test_cassini_to_erp_numpy_and_batch():
    cassini = np.random.default_rng(0).random((2, 1, 16, 8)).astype(np.float32)
    erp = g.cassini_to_erp(cassini)
    assert isinstance(erp, np.ndarray) and erp.shape == (2, 1, 8, 16)
    np.testing.assert_allclose(erp[1], g.cassini_to_erp(cassini[1]), atol=1e-7)


def test_yaw_shift_is_a_rotation_about_z():
    rng = plane_range(torch.tensor([1.0, 0.3, 0.2]).double(), 2.0)  # an oblique wall
    k = W // 8  # 45° of yaw
    shifted = g.yaw_shift(rng, k)
    # The shifted map is the wall's range map seen by a camera yawed by +45° (to the left):
    # in that camera's frame the wall normal is the original one rotated by −45°.
    c, s = math.cos(-math.pi / 4), math.sin(-math.pi / 4)
    rot = torch.tensor([[c, -s, 0], [s, c, 0], [0, 0, 1.0]]).double()
    expected = plane_range(rot @ torch.tensor([1.0, 0.3, 0.2]).double(), 2.0)
    assert torch.allclose(shifted, expected, rtol=1e-5)  # grazing rays amplify rounding
    assert torch.equal(g.yaw_shift(shifted, -k), rng)


def test_flip_horizontal_is_the_y_reflection():
    n = torch.tensor([1.0, 0.3, 0.2]).double()
    rng = plane_range(n, 2.0)
    flipped = g.flip_horizontal(rng)
    expected = plane_range(n * torch.tensor([1.0, -1.0, 1.0]).double(), 2.0)
    assert torch.allclose(flipped, expected, rtol=1e-5)  # grazing rays amplify rounding
    img = np.arange(12).reshape(1, 2, 6)
    assert g.flip_horizontal(img)[0, 0].tolist() == [5, 4, 3, 2, 1, 0]
    assert g.yaw_shift(img, 1)[0, 0].tolist() == [5, 0, 1, 2, 3, 4]


def test_geometry_runs_on_float32_and_keeps_dtype():
    rng = torch.full((H, W), 2.0)
    assert g.range_to_points(rng).dtype == torch.float32
    assert g.range_to_normals(rng)[0].dtype == torch.float32
    assert g.solid_angle_weights(H, W, dtype=torch.float64).dtype == torch.float64
