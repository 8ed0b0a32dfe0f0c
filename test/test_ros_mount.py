"""A tilted camera on the running node: mount_rpy (and an IMU) give the level camera's scan.

The node's predictor is the room seen by a camera tilted by PITCHED_RPY (test/ros_oracle.py);
told the tilt by `mount_rpy`, or left to find it from gravity on an Imu topic, the node must
publish the scan a level camera in the middle of the room would give, in the levelled frame.
"""

from __future__ import annotations

import math
import os
import time

import numpy as np
import pytest
from ros_harness import NodeProcess, domain_id, ros_client, stamped
from ros_oracle import PITCHED_RPY, closed_form_lonlat, rpy_matrix, wall_distance
from sensor_msgs.msg import Image, Imu, LaserScan

from dap_ros import conversions as conv

pytestmark = pytest.mark.ros

H, W = 64, 128
BEAMS = 32
WAIT_S = 20.0
G = 9.80665


def _level_scan() -> np.ndarray:
    lon = closed_form_lonlat(H, W)[0][::-1]
    sector = np.floor((lon + math.pi) / (2 * math.pi) * BEAMS).astype(int)
    return np.array([wall_distance(lon[sector == b]).min() for b in range(BEAMS)])


def _scan_for_a_frame(client, pub, inbox, sec: int) -> LaserScan:
    msg = conv.rgb_to_msg(np.zeros((H, W, 3), np.uint8), stamped(Image(), sec).header)
    for _ in range(3):
        pub.publish(stamped(msg, sec))
        scan = inbox.with_stamp(sec, 0, timeout=WAIT_S / 3)
        if scan is not None:
            return scan
    raise AssertionError(f"no scan for the frame stamped {sec}")


@pytest.mark.parametrize("source", ["mount_rpy", "imu"])
def test_tilted_camera_publishes_the_level_scan_in_the_level_frame(tmp_path, source):
    domain = domain_id(f"{__name__}.{source}")
    ns = f"/mount_{source}{os.getpid()}"
    parameters = {"predictor": "ros_oracle:pitched_room", "scan_beams": BEAMS}
    if source == "mount_rpy":
        parameters["mount_rpy"] = "[" + ", ".join(f"{a:.12f}" for a in PITCHED_RPY) + "]"
    else:
        parameters.update(imu_topic="imu", imu_time_constant=0.0, level_frame_id="base_level")
    with (
        NodeProcess(domain, tmp_path / "node.log", parameters, namespace=ns) as node,
        ros_client(domain) as client,
    ):
        pub = client.publisher(Image, f"{ns}/image")
        imu_pub = client.publisher(Imu, f"{ns}/imu")
        inbox = client.inbox(LaserScan, f"{ns}/scan")
        assert node.wait_for_log("ready:", WAIT_S * 2), node.log()
        assert client.wait_until(lambda: pub.get_subscription_count() > 0, WAIT_S)
        if source == "imu":
            assert client.wait_until(lambda: imu_pub.get_subscription_count() > 0, WAIT_S)
            up = rpy_matrix(*PITCHED_RPY).T @ [0.0, 0.0, G]  # what the camera's IMU measures
            imu = Imu()
            imu.linear_acceleration.x, imu.linear_acceleration.y, imu.linear_acceleration.z = up
            for k in range(5):
                imu_pub.publish(stamped(imu, 50, k, "pano_link"))
            time.sleep(1.0)  # the node shows no sign of a sample: give them time to arrive
        scan = _scan_for_a_frame(client, pub, inbox, 101)
        # On a loaded machine the IMU samples may reach the node after the first frame: keep
        # sending them, one more frame each time, until the scan is levelled (or time is up).
        for attempt in range(5 if source == "imu" else 0):
            if np.allclose(np.array(scan.ranges), _level_scan(), rtol=0.025):
                break
            imu_pub.publish(stamped(imu, 51 + attempt, 0, "pano_link"))
            time.sleep(1.0)
            scan = _scan_for_a_frame(client, pub, inbox, 110 + attempt)
        expected_frame = "pano_link_level" if source == "mount_rpy" else "base_level"
        assert scan.header.frame_id == expected_frame
        # Tolerance as in test_mount: a tilted camera samples other azimuths (~2.5 % at most).
        assert np.allclose(np.array(scan.ranges), _level_scan(), rtol=0.025)
        if source == "mount_rpy":  # the mount changes at run time
            result = client.set_parameters(f"{ns}/dap", {"mount_rpy": [0.0, 0.0, 0.0]})
            assert result[0].successful, result[0].reason
            plain = _scan_for_a_frame(client, pub, inbox, 102)
            assert plain.header.frame_id == "pano_link"  # nothing levels it any more
            assert not np.allclose(np.array(plain.ranges), _level_scan(), rtol=0.025)
