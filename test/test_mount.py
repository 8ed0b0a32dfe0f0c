"""The camera mount: rotations, the levelled scan of a tilted camera, the cloud's height band.

Expected geometry is the closed-form room of test/ros_oracle.py seen along rotated rays, so a
tilted camera's scan is checked against the level camera's, without dap_core.geometry.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from ros_oracle import (
    closed_form_lonlat,
    closed_form_rays,
    room_truth,
    rpy_matrix,
    tilted_room_truth,
    wall_distance,
)

from dap_core.geometry import rotation_between, rpy_to_matrix
from dap_ros import projection as proj
from dap_ros.mount import LEVEL, GravityTracker, Mount

H, W = 128, 256
BEAMS = 64
TILTS = {
    "pitch_25": (0.0, math.radians(25.0), 0.0),
    "upside_down": (math.pi, 0.0, 0.0),
    "roll_pitch_yaw": (math.radians(-7.0), math.radians(9.0), math.radians(30.0)),
}


def test_rpy_follows_urdf_pitch_noses_down_and_roll_pi_turns_upside_down():
    assert np.allclose(rpy_to_matrix(0.0, 0.3, 0.0) @ [1, 0, 0], [math.cos(0.3), 0, -math.sin(0.3)])
    assert np.allclose(rpy_to_matrix(math.pi, 0.0, 0.0) @ [0, 0, 1], [0, 0, -1])
    for rpy in TILTS.values():
        assert np.allclose(rpy_to_matrix(*rpy), rpy_matrix(*rpy), atol=1e-12)


@pytest.mark.parametrize("target", [[0, 0, 1], [0, 0, -1], [1, 2, 3]])
def test_rotation_between_takes_one_direction_to_the_other(target):
    source = np.array([0.3, -0.2, 0.9])
    r = rotation_between(source, np.array(target, float))
    assert np.allclose(
        r @ (source / np.linalg.norm(source)), np.array(target) / np.linalg.norm(target)
    )
    assert np.allclose(r @ r.T, np.eye(3), atol=1e-12) and np.linalg.det(r) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="non-zero"):
        rotation_between(np.zeros(3), np.ones(3))


def _level_wall_scan(beams: int) -> np.ndarray:
    lon = closed_form_lonlat(H, W)[0][::-1]
    sector = np.floor((lon + math.pi) / (2 * math.pi) * beams).astype(int)
    return np.array([wall_distance(lon[sector == b]).min() for b in range(beams)])


@pytest.mark.parametrize("tilt", TILTS.values(), ids=TILTS.keys())
def test_a_tilted_camera_with_its_mount_gives_the_level_scan(tilt):
    rotation = rpy_matrix(*tilt)
    truth = tilted_room_truth(H, W, rotation).astype(np.float32)
    mount = Mount.from_rpy(tilt)
    ranges, _ = proj.build_scan(truth, BEAMS, -0.2, 0.2, 0.0, 100.0, mount=mount)
    level, _ = proj.build_scan(room_truth(H, W).astype(np.float32), BEAMS, -0.2, 0.2, 0.0, 100.0)
    # The tilted camera's pixels sample other azimuths than the level columns: each beam's
    # nearest wall point moves by at most about one pixel (1.4°) along the wall, i.e. a
    # relative change below tan(1.4°) · tan(45°) ≈ 2.5 % at a 45° incidence.
    assert np.allclose(ranges, level, rtol=0.025)
    assert np.allclose(level, _level_wall_scan(BEAMS), rtol=1e-5)
    # Without the mount the same frames fail that tolerance (tilted or mirrored azimuths).
    unlevelled, _ = proj.build_scan(truth, BEAMS, -0.2, 0.2, 0.0, 100.0)
    assert not np.allclose(unlevelled, level, rtol=0.025)


def test_the_mounted_path_with_a_level_mount_equals_the_upright_path():
    truth = room_truth(H, W).astype(np.float32)
    shifted = Mount.from_rpy((0.0, 0.0, 0.0), (1e-9, 0.0, 0.0))  # forces the general path
    assert not shifted.upright and LEVEL.upright
    general, _ = proj.build_scan(truth, BEAMS, -0.2, 0.2, 0.0, 100.0, mount=shifted)
    upright, _ = proj.build_scan(truth, BEAMS, -0.2, 0.2, 0.0, 100.0)
    assert np.allclose(general, upright, rtol=1e-5)


def test_mount_height_moves_the_band_and_the_horizon():
    """Camera 1 m above the levelled origin: a band 0.8..1.2 m is the camera's own plane."""
    truth = room_truth(H, W).astype(np.float32)
    raised = Mount.from_rpy((0.0, 0.0, 0.0), (0.0, 0.0, 1.0))
    ranges, _ = proj.build_scan(truth, BEAMS, 0.8, 1.2, 0.0, 100.0, mount=raised)
    level, _ = proj.build_scan(truth, BEAMS, -0.2, 0.2, 0.0, 100.0)
    assert np.array_equal(ranges, level)
    floor_band, _ = proj.build_scan(truth, BEAMS, -0.6, -0.4, 0.0, 100.0, mount=raised)
    assert np.isfinite(floor_band).all()  # the floor 1.5 m below the camera: z = -0.5


def test_cloud_band_and_level_frame_points_of_an_upside_down_camera():
    tilt = TILTS["upside_down"]
    truth = tilted_room_truth(H, W, rpy_matrix(*tilt)).astype(np.float32)
    mount = Mount.from_rpy(tilt, (0.0, 0.0, 0.5))
    cloud = proj.build_cloud(truth, None, 1, 0.0, 1.0, True, mount=mount)
    level = proj.build_cloud(truth, None, 1, 0.0, 1.0, True, mount=mount, in_level_frame=True)
    camera_points = truth[..., None] * closed_form_rays(H, W)
    z_level = (camera_points @ rpy_matrix(*tilt).T)[..., 2] + 0.5
    with np.errstate(invalid="ignore"):
        kept = np.isfinite(z_level) & (z_level >= 0.0) & (z_level <= 1.0)
    assert np.array_equal(np.isfinite(cloud[..., 0]), kept)
    # In the camera frame the points are the camera's; in the levelled frame, R p + t.
    assert np.allclose(cloud[kept][:, :3], camera_points[kept], atol=1e-5)
    expected = camera_points[kept] @ rpy_matrix(*tilt).T + [0.0, 0.0, 0.5]
    assert np.allclose(level[kept][:, :3], expected, atol=1e-5)
    assert (level[kept][:, 2] >= -1e-6).all() and (level[kept][:, 2] <= 1.0 + 1e-6).all()


def test_gravity_tracker_levels_a_tilted_camera_and_ignores_bumps():
    tilt = TILTS["roll_pitch_yaw"]
    rotation = rpy_matrix(*tilt)
    up_in_camera = rotation.T @ [0.0, 0.0, GravityTracker.G]  # specific force at rest
    tracker = GravityTracker(yaw=tilt[2], time_constant_s=0.2)
    assert not tracker.update(3.0 * up_in_camera, 0.0)  # 3 g: a bump, not gravity
    for k in range(50):
        assert tracker.update(up_in_camera + np.random.default_rng(k).normal(0, 0.05, 3), k * 0.01)
    assert tracker.rejected == 1
    levelled = tracker.rotation()
    assert np.allclose(levelled @ up_in_camera / GravityTracker.G, [0, 0, 1], atol=0.01)
    # Up to heading (not observable from gravity), the tracked rotation is the true mount.
    truth = tilted_room_truth(H, W, rotation).astype(np.float32)
    tracked, _ = proj.build_scan(
        truth, BEAMS, -0.2, 0.2, 0.0, 100.0, mount=Mount.from_matrix(levelled)
    )
    known, _ = proj.build_scan(truth, BEAMS, -0.2, 0.2, 0.0, 100.0, mount=Mount.from_rpy(tilt))
    finite = np.isfinite(known)
    assert finite.all() and np.isfinite(tracked).all()
    assert np.median(np.abs(tracked / known - 1.0)) < 0.05


SIM_TILTS = {
    "pitch_15": (0.0, math.radians(15.0), 0.0),
    "roll_pitch_yaw": (math.radians(-10.0), math.radians(8.0), math.radians(40.0)),
}


@pytest.mark.parametrize("tilt", SIM_TILTS.values(), ids=SIM_TILTS.keys())
def test_the_tilted_simulated_camera_gives_the_level_cameras_scan(tilt):
    """dap_ros.camera_sim tilted by known angles; its frames with mount_rpy = those angles
    give the scan of the level camera at the same place in the same scene."""
    from test_ros_camera_sim import _sim_settings

    from dap_core.data.synthetic import make_scene
    from dap_ros.camera_sim import render_frame

    scene = make_scene(3, "indoor")
    level = render_frame(scene, 0.0, _sim_settings(width=384), 0)
    tilted = render_frame(scene, 0.0, _sim_settings(width=384, mount_rpy=tilt), 0)
    expected, _ = proj.build_scan(level.range_m, 120, -0.2, 0.2, 0.0, 100.0)
    ranges, _ = proj.build_scan(
        tilted.range_m, 120, -0.2, 0.2, 0.0, 100.0, mount=Mount.from_rpy(tilt)
    )
    unlevelled, _ = proj.build_scan(tilted.range_m, 120, -0.2, 0.2, 0.0, 100.0)
    assert np.isfinite(expected).all()
    error = np.abs(ranges / expected - 1.0)
    # The tilted frame is a resampling of a 2x finer level render (nearest range) and its
    # pixels sample other azimuths: most beams agree within a percent; a few beams at object
    # edges may see the other side of the edge.
    assert np.median(error) < 0.01 and np.percentile(error, 90) < 0.03
    assert np.percentile(np.abs(unlevelled / expected - 1.0), 90) > 0.1
