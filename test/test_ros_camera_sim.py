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
