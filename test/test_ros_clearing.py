"""Clearing points: no-return rays of the cloud end at a range the model vouches for.

Nav2's obstacle and voxel layers clear free space only along rays to cloud points, so with
`cloud_clearing_range` the node puts a point on every no-return (+inf) ray. The node runs in
this process on the analytic room of test/ros_oracle.py (walls, floor, open sky above).
"""

from __future__ import annotations

import numpy as np
import pytest
from rclpy.parameter import Parameter
from ros_harness import domain_id, local_context
from ros_oracle import RoomOracle, closed_form_rays, room_truth
from std_msgs.msg import Header

from dap_ros import conversions as conv

pytestmark = pytest.mark.ros

H, W = 32, 64


def cloud_of(node) -> np.ndarray:
    rgb = np.zeros((H, W, 3), np.uint8)
    assert node.process(conv.rgb_to_msg(rgb, Header(frame_id="pano")))
    return conv.cloud_to_numpy(node._cloud_out.msg).copy()  # the node reuses the message


def test_sky_rays_get_points_at_the_clearing_range_capped_by_the_mask():
    from dap_ros.node import DapNode

    overrides = [
        Parameter("process_without_subscribers", value=True),
        Parameter("cloud_stride", value=1),
        Parameter("mask_threshold", value=20),
    ]
    truth = room_truth(H, W)
    sky, invalid = np.isposinf(truth), np.isnan(truth)
    with local_context(domain_id(__name__)) as context:
        node = DapNode(predictor=RoomOracle(), context=context, parameter_overrides=overrides)
        try:
            plain = cloud_of(node)
            assert np.isnan(plain["x"][sky]).all()  # off by default: no point on sky rays
            node.set_parameters([Parameter("cloud_clearing_range", value=8.0)])
            cleared = cloud_of(node)
            node.set_parameters([Parameter("cloud_clearing_range", value=500.0)])
            capped = cloud_of(node)
        finally:
            node.destroy_node()
    rays = closed_form_rays(H, W)
    for cloud, distance in ((cleared, 8.0), (capped, 20.0)):  # capped at mask_threshold 20 m
        xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1).astype(np.float64)
        assert np.allclose(xyz[sky], distance * rays[sky], rtol=1e-5, atol=1e-5)
        assert np.isnan(xyz[invalid]).all()  # invalid pixels clear nothing
        walls = np.isfinite(truth)
        assert np.allclose(xyz[walls], truth[walls][:, None] * rays[walls], rtol=1e-5, atol=1e-5)
    assert sky.any() and invalid.any()


def test_the_clearing_range_parameter_is_declared_with_a_range():
    from dap_ros.params import Settings

    assert Settings.defaults().cloud_clearing_range == 0.0
    with pytest.raises(ValueError, match="cloud_clearing_range must be in"):
        Settings.defaults().replaced({"cloud_clearing_range": -1.0})
