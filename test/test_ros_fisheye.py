"""Side-by-side dual-fisheye input on the running node: remapped to ERP, unseen pixels NaN.

The predictor is the room oracle (test/ros_oracle.py), so the published range is the room's
true range wherever a lens sees, and NaN (REP 117 invalid) where no lens does.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from ros_harness import NodeProcess, domain_id, ros_client, stamped
from ros_oracle import room_truth
from sensor_msgs.msg import Image

from dap_core.fisheye import FisheyeRemapper, load_calibration
from dap_ros import conversions as conv

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
SIDE_BY_SIDE = REPO / "config" / "fisheye" / "insta360_side_by_side.yaml"
ERP_H = 64
WAIT_S = 20.0


def _narrow_calibration(tmp_path: Path) -> Path:
    """The shipped side-by-side file with 170° lenses: a band around ±90° is nobody's."""
    text = SIDE_BY_SIDE.read_text().replace("fov_deg: 195.0", "fov_deg: 170.0")
    path = tmp_path / "narrow.yaml"
    path.write_text(text)
    return path


def test_side_by_side_frames_give_range_with_nan_where_no_lens_sees(tmp_path):
    calibration_path = _narrow_calibration(tmp_path)
    domain = domain_id(__name__)
    ns = f"/fisheye{os.getpid()}"
    parameters = {
        "predictor": "ros_oracle:room",
        "fisheye_calibration": str(calibration_path),
        "fisheye_erp_height": ERP_H,
    }
    with (
        NodeProcess(domain, tmp_path / "node.log", parameters, namespace=ns) as node,
        ros_client(domain) as client,
    ):
        pub = client.publisher(Image, f"{ns}/image")
        depth = client.inbox(Image, f"{ns}/depth/image")
        assert node.wait_for_log("ready:", WAIT_S * 2), node.log()
        assert client.wait_until(lambda: pub.get_subscription_count() > 0, WAIT_S)
        frame = np.full((576, 1152, 3), 90, np.uint8)  # 2304x1152 scaled by 1/2
        msg = conv.rgb_to_msg(frame, stamped(Image(), 7).header)
        out = None
        for _ in range(3):
            pub.publish(stamped(msg, 7))
            out = depth.with_stamp(7, 0, timeout=WAIT_S / 3)
            if out is not None:
                break
        assert out is not None, node.log()
        range_m = conv.image_to_numpy(out)
        assert range_m.shape == (ERP_H, 2 * ERP_H)
        unseen = FisheyeRemapper(
            load_calibration(calibration_path).for_image(1152, 576), ERP_H, 2 * ERP_H
        ).unseen
        assert unseen.any() and np.isnan(range_m[unseen]).all()
        truth = room_truth(ERP_H, 2 * ERP_H)
        seen = ~unseen & np.isfinite(truth)
        assert np.allclose(range_m[seen], truth[seen], rtol=1e-5)


def test_a_two_topic_calibration_stops_the_start_with_one_line(tmp_path):
    domain = domain_id(f"{__name__}.two")
    parameters = {
        "predictor": "ros_oracle:room",
        "fisheye_calibration": str(REPO / "config" / "fisheye" / "x5_two_topics.yaml"),
    }
    with NodeProcess(domain, tmp_path / "node.log", parameters) as node:
        node.process.wait(timeout=WAIT_S * 2)
        assert node.process.returncode == 1
        assert "two lens topics are not supported yet" in node.log()
        assert "Traceback" not in node.log()
