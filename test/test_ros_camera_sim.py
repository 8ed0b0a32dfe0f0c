"""The simulated 360° camera publishes rendered panoramas with their true range, same stamp."""

from __future__ import annotations

import os

import numpy as np
import pytest
from ros_harness import NodeProcess, domain_id, ros_client
from sensor_msgs.msg import Image

from dap_ros import conversions as conv

pytestmark = pytest.mark.ros

WIDTH, HEIGHT = 256, 128
RATE_HZ, SEED, FRAMES = 5.0, 3, 2
WAIT_S = 60.0


def test_camera_sim_publishes_the_scene_and_its_ground_truth(tmp_path):
    from dap_core.data.synthetic import make_scene

    namespace = f"/sim{os.getpid()}"
    domain = domain_id(__name__)
    params = {
        "width": WIDTH,
        "rate_hz": RATE_HZ,
        "seed": SEED,
        "scene": "indoor",
        "precompute_frames": FRAMES,
    }
    node = NodeProcess(
        domain, tmp_path / "sim.log", params, module="dap_ros.camera_sim", namespace=namespace
    )
    with node, ros_client(domain) as client:
        images = client.inbox(Image, f"{namespace}/image")
        truths = client.inbox(Image, f"{namespace}/ground_truth/depth")
        assert images.wait_for(lambda m: len(m) >= 4, WAIT_S), node.log()
        assert truths.wait_for(lambda m: len(m) >= 4, WAIT_S), node.log()
        image = images.messages[1]
        truth = truths.with_stamp(image.header.stamp.sec, image.header.stamp.nanosec, WAIT_S)
        assert node.stop() == 0, node.log()

    assert (image.encoding, image.height, image.width) == ("rgb8", HEIGHT, WIDTH)
    assert image.header.frame_id == "camera_360"
    assert truth is not None, "no ground truth with the image's stamp"
    assert (truth.encoding, truth.height, truth.width) == ("32FC1", HEIGHT, WIDTH)
    # The frames are renders of the scene along its path at t = k / rate (noise seed k).
    scene = make_scene(SEED, "indoor")
    renders = []
    for k in range(FRAMES):
        position, yaw = scene.trajectory(k / RATE_HZ)
        renders.append(scene.render(position, yaw, HEIGHT, WIDTH, "sim", k))
    rgb, range_m = conv.image_to_rgb(image), conv.image_to_numpy(truth)
    matches = [k for k, r in enumerate(renders) if np.array_equal(r.rgb, rgb)]
    assert len(matches) == 1, "the image is not one of the scene's renders"
    expected = renders[matches[0]].range_m
    assert np.array_equal(range_m, expected, equal_nan=True)
    assert np.isfinite(range_m).mean() > 0.5  # indoors: mostly walls, floor, furniture
    assert not np.array_equal(renders[0].rgb, renders[1].rgb)  # the camera moves


def _sim_settings(**changes):
    from dap_ros.camera_sim import SIM_PARAMETERS, SimSettings

    values = {spec.name: spec.default for spec in SIM_PARAMETERS}
    return SimSettings(**{**values, **changes})


def test_the_default_scene_is_a_tour_of_indoor_and_outdoor_scenes():
    from dap_ros.camera_sim import SIM_PARAMETERS, tour_scene

    assert {spec.name: spec.default for spec in SIM_PARAMETERS}["scene"] == "tour"
    assert [tour_scene(7, k) for k in range(4)] == [
        (7, "indoor"),
        (8, "outdoor"),
        (9, "indoor"),
        (10, "outdoor"),
    ]


def test_a_live_tour_changes_scene_every_period_and_restarts_the_path():
    from dap_ros.camera_sim import SceneTour

    tour = SceneTour(_sim_settings(scene_period=10.0, speed=2.0))
    assert tour.at(0.0) == (0, 0.0)
    assert tour.at(9.5) == (0, 19.0)
    assert tour.at(10.5) == (1, 1.0)  # the next scene, from the start of its path
    assert tour.at(35.0) == (3, 10.0)
    fixed = SceneTour(_sim_settings(scene="outdoor", speed=2.0))
    assert fixed.at(35.0) == (0, 70.0) and fixed.seed_and_kind(0) == (0, "outdoor")


def test_a_pre_rendered_tour_loop_holds_both_kinds():
    from dap_ros.camera_sim import SceneTour

    short = SceneTour(_sim_settings(scene_period=10.0, rate_hz=5.0)).loop(4)
    assert short == [(0, 0.0), (0, 0.2), (1, 0.0), (1, 0.2)]  # period > loop: halves
    long = SceneTour(_sim_settings(scene_period=2.0, rate_hz=5.0)).loop(40)
    assert [index for index, _ in long[::10]] == [0, 1, 2, 3]  # 10 frames a scene
    assert long[9] == (0, pytest.approx(1.8)) and long[10] == (1, 0.0)
    assert [index for index, _ in SceneTour(_sim_settings()).loop(3)] == [0, 0, 1]
    single = SceneTour(_sim_settings(scene="indoor", rate_hz=5.0)).loop(3)
    assert single == [(0, 0.0), (0, 0.2), (0, 0.4)]


def test_the_tour_node_renders_an_indoor_then_an_outdoor_scene():
    import rclpy
    from rclpy.context import Context
    from rclpy.parameter import Parameter

    from dap_core.data.synthetic import make_scene
    from dap_ros.camera_sim import CameraSim

    context = Context()
    rclpy.init(context=context, domain_id=domain_id(__name__ + "tour"))
    width, height, rate = 64, 32, 5.0
    overrides = [
        Parameter("width", value=width),
        Parameter("rate_hz", value=rate),
        Parameter("seed", value=SEED),
        Parameter("precompute_frames", value=4),
    ]
    try:
        node = CameraSim(context=context, parameter_overrides=overrides)
        frames = list(node._frames)
        node.destroy_node()
    finally:
        rclpy.try_shutdown(context=context)
    expected = [(SEED, "indoor", 0.0), (SEED, "indoor", 0.2)]
    expected += [(SEED + 1, "outdoor", 0.0), (SEED + 1, "outdoor", 0.2)]
    for k, (frame, (seed, kind, t)) in enumerate(zip(frames, expected, strict=True)):
        scene = make_scene(seed, kind)
        assert scene.kind == kind
        position, yaw = scene.trajectory(t)
        truth = scene.render(position, yaw, height, width, "sim", k)
        assert np.array_equal(frame.rgb, truth.rgb), (k, kind)
        assert np.array_equal(frame.range_m, np.where(truth.valid, truth.range_m, np.nan), True)
    # Outdoors the sky is in view (+inf range); indoors the ceiling hides most of it.
    assert np.isposinf(frames[2].range_m).mean() > np.isposinf(frames[0].range_m).mean() + 0.1
