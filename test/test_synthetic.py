"""Synthetic panoramas: closed-form ranges, sky, determinism, normals, domains, dataset."""

from __future__ import annotations

import math
import os

import numpy as np
import pytest
import torch

from dap_core import geometry
from dap_core.data.appearance import Lighting, Material, Sky
from dap_core.data.raycast import Box, Room, Sphere
from dap_core.data.scenes import INDOOR_CAMERA_HEIGHT, CameraPath, Scene, make_scene
from dap_core.data.synthetic import SyntheticPanoramaDataset, generate_panorama

H, W = 32, 64


def rays(h: int = H, w: int = W) -> np.ndarray:
    return geometry.pixel_rays(h, w, dtype=torch.float64).numpy()


def empty_room(lx=6.0, ly=4.0, hc=3.0, primitives=()) -> Scene:
    mats = (Material("paint", (0.5, 0.5, 0.5)), Material("tiles", (0.6, 0.6, 0.6), scale=0.5))
    return Scene(
        seed=7,
        kind="indoor",
        layout="room",
        primitives=tuple(primitives),
        materials=mats,
        lighting=Lighting(key_dir=(0.0, 0.0, 1.0)),
        path=CameraPath(lx / 2, ly / 2, 0.5, 0.5, 0.0, 1.5, 0.5),
        camera_height=INDOOR_CAMERA_HEIGHT,
        room=Room(0.0, lx, 0.0, ly, hc),
        shell=Room(-2.0, lx + 2, -2.0, ly + 2, hc),
        room_materials=(0, 1, 0),
        shell_materials=(0, 1, 0),
    )


def closed_form_room_range(ray_world: np.ndarray, cam, lx, ly, hc) -> np.ndarray:
    """Distance to the first of the six room planes along each ray (camera inside)."""
    best = np.full(ray_world.shape[:-1], np.inf)
    for axis, lo, hi in ((0, 0.0, lx), (1, 0.0, ly), (2, 0.0, hc)):
        d = ray_world[..., axis]
        with np.errstate(divide="ignore"):
            t = np.where(d > 0, (hi - cam[axis]) / d, (lo - cam[axis]) / d)
        best = np.minimum(best, np.where(d != 0, t, np.inf))
    return best


def test_room_ranges_equal_closed_form_distances():
    cam = np.array([2.0, 1.5, 1.2])
    sample = empty_room().render(cam, 0.0, H, W)
    r = sample.range_m
    assert r.dtype == np.float32 and r.shape == (H, W)
    d = rays()
    # Hand-computed pixels: the centre pixel looks (almost) along +x at the wall x = 6 m,
    # the left-quarter column along +y at the wall y = 4 m, the bottom row at the floor.
    centre = d[H // 2, W // 2]
    assert r[H // 2, W // 2] == pytest.approx(min(4.0 / centre[0], 1.2 / -centre[2]), rel=1e-5)
    left = d[H // 2, W // 4 - 1]
    assert r[H // 2, W // 4 - 1] == pytest.approx(2.5 / left[1], rel=1e-5)
    assert r[-1, 0] == pytest.approx(1.2 / -d[-1, 0, 2], rel=1e-5)
    assert r[0, 5] == pytest.approx(1.8 / d[0, 5, 2], rel=1e-5)
    np.testing.assert_allclose(r, closed_form_room_range(d, cam, 6.0, 4.0, 3.0), rtol=1e-5)


def test_camera_yaw_turns_the_view_counter_clockwise():
    cam = np.array([2.0, 1.5, 1.2])
    yaw = math.pi / 2  # the centre column now looks along world +y
    r = empty_room().render(cam, yaw, H, W).range_m
    d = rays()
    c, s = math.cos(yaw), math.sin(yaw)
    world = np.stack([c * d[..., 0] - s * d[..., 1], s * d[..., 0] + c * d[..., 1], d[..., 2]], -1)
    np.testing.assert_allclose(r, closed_form_room_range(world, cam, 6.0, 4.0, 3.0), rtol=1e-5)
    assert r[H // 2, W // 2] == pytest.approx(2.5 / d[H // 2, W // 2, 0], rel=1e-5)


def test_box_in_front_of_camera_has_closed_form_range():
    box = Box((4.0, 0.0, 1.0), (0.5, 1.0, 1.0), 0.0, 0)  # front face at x = 3.5
    scene = empty_room(12.0, 8.0, 3.0, [box])
    scene.room = Room(-6.0, 6.0, -4.0, 4.0, 3.0)
    cam = np.array([0.0, 0.0, 1.0])
    sample = scene.render(cam, 0.0, H, W)
    d = rays()
    centre = d[H // 2, W // 2]
    assert sample.range_m[H // 2, W // 2] == pytest.approx(3.5 / centre[0], rel=1e-5)
    # The box face's normal points back at the camera: -x.
    np.testing.assert_allclose(sample.normals[H // 2, W // 2], [-1.0, 0.0, 0.0], atol=1e-6)


def test_sphere_range_is_distance_to_its_surface():
    ball = Sphere((3.0, 0.0, 1.0), 0.5, 0)
    scene = empty_room(12.0, 8.0, 3.0, [ball])
    scene.room = Room(-6.0, 6.0, -4.0, 4.0, 3.0)
    sample = scene.render(np.array([0.0, 0.0, 1.0]), 0.0, 64, 128)
    d = rays(64, 128)[32, 64]  # just below and right of the ball's centre direction
    oc = np.array([-3.0, 0.0, 0.0])
    b = d @ oc
    expected = -b - math.sqrt(b * b - (oc @ oc - 0.25))
    assert sample.range_m[32, 64] == pytest.approx(expected, rel=1e-5)


def open_field(height=1.7) -> Scene:
    from dap_core.data.appearance import GroundLayout

    return Scene(
        seed=3,
        kind="outdoor",
        layout="plaza",
        primitives=(),
        materials=(),
        lighting=Lighting(key_dir=(0.0, 0.6, 0.8)),
        path=CameraPath(0, 0, 5, 5, 0, height, 1.0),
        camera_height=(height, height),
        ground=GroundLayout("plaza"),
        sky=Sky((0.2, 0.3, 0.6), (0.6, 0.7, 0.8), (0.0, 0.6, 0.8), clouds=0.3),
    )


def test_sky_is_plus_inf_and_ground_is_closed_form():
    sample = open_field(1.7).render(np.array([0.0, 0.0, 1.7]), 0.3, H, W)
    r = sample.range_m
    assert np.isposinf(r[: H // 2]).all()  # everything above the horizon is sky
    d = rays()
    np.testing.assert_allclose(r[H // 2 :], 1.7 / -d[H // 2 :, :, 2], rtol=1e-5)
    assert (sample.normals[: H // 2] == 0).all()
    np.testing.assert_allclose(sample.normals[H // 2 :, :, 2], 1.0, atol=1e-6)
    assert sample.valid.all()  # +inf sky is valid ground truth ("beyond every threshold")


@pytest.mark.parametrize("domain", ["sim", "real_like"])
def test_same_seed_gives_identical_bytes(domain):
    a = generate_panorama(11, H, W, domain=domain)
    b = generate_panorama(11, H, W, domain=domain)
    assert a.rgb.tobytes() == b.rgb.tobytes()
    assert a.range_m.tobytes() == b.range_m.tobytes()
    assert a.normals.tobytes() == b.normals.tobytes()
    assert (a.seed, a.scene, a.domain) == (11, b.scene, domain)
    c = generate_panorama(12, H, W, domain=domain)
    assert c.range_m.tobytes() != a.range_m.tobytes()


def test_domains_share_geometry_but_not_appearance():
    sim = generate_panorama(5, 64, 128, domain="sim")
    real = generate_panorama(5, 64, 128, domain="real_like")
    assert sim.range_m.tobytes() == real.range_m.tobytes()
    assert sim.normals.tobytes() == real.normals.tobytes()
    diff = np.abs(sim.rgb.astype(int) - real.rgb.astype(int)).mean()
    assert diff > 8, f"real_like should look different (mean |Δ| = {diff:.1f})"


def test_wall_normals_are_axis_aligned_in_the_camera_frame():
    cam = np.array([2.0, 1.5, 1.2])
    yaw = 0.4
    sample = empty_room().render(cam, yaw, 64, 128)
    n = sample.normals
    assert np.allclose(np.linalg.norm(n, axis=-1), 1.0, atol=1e-6)
    world = n.copy()  # camera -> world: rotate by +yaw about z
    world[..., 0] = math.cos(yaw) * n[..., 0] - math.sin(yaw) * n[..., 1]
    world[..., 1] = math.sin(yaw) * n[..., 0] + math.cos(yaw) * n[..., 1]
    # Every room pixel sees a wall, floor or ceiling: one world axis, unit length.
    assert np.allclose(np.abs(world).max(axis=-1), 1.0, atol=1e-5)
    assert np.allclose(np.sort(np.abs(world), axis=-1)[..., :2], 0.0, atol=1e-5)
    # Normals face the camera.
    pts = geometry.range_to_points(sample.range_m)
    assert ((pts * n).sum(-1) < 0).all()


def test_normals_agree_with_geometry_normals_from_range():
    sample = generate_panorama(2, 64, 128, scene="indoor")
    from_range, valid = geometry.range_to_normals(sample.range_m.astype(np.float64))
    cos = (from_range * sample.normals).sum(-1)
    # Away from depth edges the two agree; edges are a minority of the pixels.
    assert np.median(cos[valid]) > 0.999
    assert (cos[valid] > 0.99).mean() > 0.8


def test_outdoor_scenes_reach_past_150_m_and_have_sky():
    far, sky = 0, 0
    for seed in range(6):
        s = generate_panorama(seed, H, W, scene="outdoor")
        finite = np.isfinite(s.range_m)
        far += int(s.range_m[finite].max() > 150)
        sky += int((~finite).any())
    assert far >= 4 and sky == 6


def test_scene_sizes_follow_the_real_world():
    for seed in range(12):
        scene = make_scene(seed, "indoor")
        assert 2.4 <= scene.room.height <= 4.0
        assert 3.0 <= scene.room.x1 - scene.room.x0 <= 15.0
        for op in scene.openings:
            assert 2.0 <= op.z1 <= 2.15 and 0.8 <= op.s1 - op.s0 <= 1.8
        pos, _ = scene.sample_camera(np.random.default_rng(seed))
        assert 1.0 <= pos[2] <= 1.8
    drone = [make_scene(s, "outdoor") for s in range(30)]
    heights = [sc.camera_height[0] for sc in drone if sc.layout == "drone"]
    assert heights and all(20 <= h <= 60 for h in heights)
    assert sum(sc.layout != "drone" for sc in drone) > len(drone) / 2  # drones are a minority


@pytest.mark.parametrize("seed", [0, 1, 4])
def test_trajectory_is_smooth_and_collision_free(seed):
    scene = make_scene(seed)
    prev_pos, prev_yaw = scene.trajectory(0.0)
    for k in range(1, 200):
        pos, yaw = scene.trajectory(k * 0.1)
        step = np.linalg.norm(pos - prev_pos)
        assert step == pytest.approx(0.1 * scene.path.speed, rel=0.02)  # constant speed
        dyaw = (yaw - prev_yaw + math.pi) % (2 * math.pi) - math.pi
        assert abs(dyaw) < 0.5
        assert scene.is_free(pos[0], pos[1], pos[2], clearance=0.3)
        # The camera looks along its motion.
        motion = pos[:2] - prev_pos[:2]
        if np.linalg.norm(motion) > 1e-6:
            heading = math.atan2(motion[1], motion[0])
            assert abs((heading - yaw + math.pi) % (2 * math.pi) - math.pi) < 0.2
        prev_pos, prev_yaw = pos, yaw
    sample = scene.render(*scene.trajectory(3.0), H, W)
    assert np.isfinite(sample.range_m).any()


def test_bad_arguments_are_rejected():
    with pytest.raises(ValueError, match="domain"):
        generate_panorama(0, H, W, domain="photo")
    with pytest.raises(ValueError, match="scene kind"):
        generate_panorama(0, H, W, scene="underwater")
    with pytest.raises(ValueError, match="H x 2H"):
        generate_panorama(0, 32, 32)
    with pytest.raises(ValueError, match="outside the room"):
        empty_room().render(np.array([10.0, 1.0, 1.0]), 0.0, H, W)


def test_dataset_items_are_deterministic_tensors():
    ds = SyntheticPanoramaDataset(4, H, W, domain="real_like", seed_offset=100)
    assert len(ds) == 4
    item = ds[1]
    assert item["rgb"].shape == (3, H, W) and item["rgb"].dtype == torch.float32
    assert float(item["rgb"].min()) >= 0.0 and float(item["rgb"].max()) <= 1.0
    assert item["range_m"].shape == (1, H, W) and item["range_m"].dtype == torch.float32
    assert item["valid"].shape == (1, H, W) and item["valid"].dtype == torch.bool
    assert (item["seed"], item["domain"], item["scene"]) == (101, "real_like", "outdoor")
    assert ds[0]["scene"] == "indoor"
    again = ds[1]
    assert torch.equal(item["rgb"], again["rgb"]) and torch.equal(item["range_m"], again["range_m"])
    direct = generate_panorama(101, H, W, scene="outdoor", domain="real_like")
    assert torch.equal(item["range_m"][0], torch.from_numpy(direct.range_m))
    with pytest.raises(IndexError):
        ds[4]
    batch = torch.utils.data.default_collate([ds[0], ds[2]])
    assert batch["rgb"].shape == (2, 3, H, W)


def test_dap_synth_writes_samples_and_previews(tmp_path):
    from dap_core.cli import main

    assert (
        main(["synth", "--out", str(tmp_path), "--n", "2", "--size", "16x32", "--seed", "40"]) == 0
    )
    rng = np.load(tmp_path / "00041_range.npy")
    assert rng.shape == (16, 32) and rng.dtype == np.float32
    assert rng.tobytes() == generate_panorama(41, 16, 32).range_m.tobytes()
    import cv2

    rgb = cv2.imread(str(tmp_path / "00040_rgb.png"))[:, :, ::-1]
    assert rgb.tobytes() == generate_panorama(40, 16, 32).rgb.tobytes()
    assert cv2.imread(str(tmp_path / "00040_preview.png")).shape[1] >= 3 * 32
    assert (tmp_path / "index.csv").read_text().count("\n") == 3
    assert main(["synth", "--out", str(tmp_path), "--size", "16x16"]) == 1  # W must be 2H


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4, 8])
def test_window_culling_never_hides_an_object(seed, monkeypatch):
    """Each primitive is only ray-cast inside its ERP window; casting every primitive over
    the whole panorama must give the same range map."""
    from dap_core.data import render

    fast = generate_panorama(seed, 48, 96)

    def everywhere(prims, o, yaw, h, w):
        return [(slice(0, h), slice(0, w))] * len(prims)

    monkeypatch.setattr(render, "_primitive_windows", everywhere)
    full = generate_panorama(seed, 48, 96)
    assert np.array_equal(fast.range_m, full.range_m)
    assert np.array_equal(fast.normals, full.normals)


def test_paths_and_sampled_cameras_keep_clear_of_obstacles():
    for seed in range(30):
        scene = make_scene(seed)
        for k in range(120):
            pos, _ = scene.trajectory(k * 0.5)
            assert scene.is_free(pos[0], pos[1], pos[2], clearance=0.3), (seed, k)
        pos, _ = scene.sample_camera(np.random.default_rng(seed))
        assert scene.is_free(pos[0], pos[1], pos[2], clearance=0.29), seed


def random_unit_rays(rng: np.random.Generator, n: int) -> tuple[np.ndarray, ...]:
    d = rng.standard_normal((3, n))
    d /= np.linalg.norm(d, axis=0)
    return tuple(np.ascontiguousarray(c, dtype=np.float32) for c in d)


def test_batched_intersections_equal_one_by_one():
    """`intersect_many` (small windows cast together) gives bit-identical hits and faces to
    each primitive's own `intersect` (large windows), for boxes turned or not, capped
    cylinders seen from above / below / the side, and spheres."""
    from dap_core.data.raycast import Cylinder

    rng = np.random.default_rng(3)
    o = np.array([0.3, -0.2, 1.6])
    aim = rng.uniform(-8, 8, (12, 2))  # primitive centres around the camera
    prims = {
        Box: [Box((x, y, rng.uniform(0, 3)), tuple(rng.uniform(0.2, 1.5, 3)),
                  0.0 if i % 2 else rng.uniform(-3, 3), 0) for i, (x, y) in enumerate(aim)],
        Cylinder: [Cylinder(x, y, rng.uniform(0.1, 1.0), z0, z0 + rng.uniform(0.5, 3), 0)
                   for (x, y), z0 in zip(aim, rng.uniform(-1, 2.5, len(aim)), strict=True)],
        Sphere: [Sphere((x, y, rng.uniform(0, 3)), rng.uniform(0.2, 2), 0) for x, y in aim],
    }  # fmt: skip
    for cls, items in prims.items():
        counts = [int(c) for c in rng.integers(50, 400, len(items))]
        dx, dy, dz = random_unit_rays(rng, sum(counts))
        # Aim half of each run's rays at its primitive, so that most runs have hits.
        start = 0
        for prim, n in zip(items, counts, strict=True):
            to = np.asarray(prim.center) - o
            m = slice(start, start + n // 2)
            d = to[:, None] / np.linalg.norm(to) + 0.15 * rng.standard_normal((3, n // 2))
            d /= np.linalg.norm(d, axis=0)
            dx[m], dy[m], dz[m] = d.astype(np.float32)
            start += n
        t_many, face_many = cls.intersect_many(items, o, dx, dy, dz, counts)
        start, hits, faces = 0, 0, set()
        for prim, n in zip(items, counts, strict=True):
            m = slice(start, start + n)
            with np.errstate(divide="ignore"):
                inv = tuple(np.float32(1) / a[m] for a in (dx, dy, dz))
            t_one, face_one = prim.intersect(o, dx[m], dy[m], dz[m], inv)
            np.testing.assert_array_equal(t_many[m], t_one)
            hit = np.isfinite(t_one)
            face_one = np.broadcast_to(face_one, t_one.shape)
            np.testing.assert_array_equal(face_many[m][hit], face_one[hit])
            hits += int(hit.sum())
            faces |= set(face_one[hit].tolist())
            start += n
        # The comparison saw many hits, on sides, tops and bottoms.
        assert hits > sum(counts) // 10, cls
        assert len(faces) >= {Box: 5, Cylinder: 3, Sphere: 1}[cls], (cls, faces)


def _chattr(flag: str, path) -> bool:
    import shutil
    import subprocess

    if shutil.which("chattr") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("where", ["under_a_file", "immutable"])
def test_dap_synth_unwritable_output_is_one_line(tmp_path, capsys, where):
    from dap_core.cli import main

    if where == "under_a_file":
        (tmp_path / "file").write_text("x")
        out = tmp_path / "file" / "out"
    else:
        out = tmp_path / "frozen"
        out.mkdir()
        if not _chattr("+i", out):
            pytest.skip("needs root, chattr and a filesystem with the immutable attribute")
    try:
        assert main(["synth", "--out", str(out), "--n", "1", "--size", "16x32"]) == 1
    finally:
        if where == "immutable":
            _chattr("-i", out)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0], err
    assert "Traceback" not in err[0]
