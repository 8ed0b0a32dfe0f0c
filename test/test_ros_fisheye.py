"""Dual-fisheye input on the running node: remapped to ERP, unseen pixels NaN.

Side by side (one image) and two lens topics (x5_ros_driver's lens0 / lens1, paired by stamp).
The predictor is the room oracle (test/ros_oracle.py), so the published range is the room's
true range wherever a lens sees, and NaN (REP 117 invalid) where no lens does.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
from ros_harness import NodeProcess, diagnostics_values, domain_id, ros_client, stamped
from ros_oracle import room_truth
from sensor_msgs.msg import Image

from dap_core.fisheye import FisheyeRemapper, load_calibration
from dap_ros import conversions as conv

pytestmark = pytest.mark.ros

REPO = Path(__file__).resolve().parents[1]
SIDE_BY_SIDE = REPO / "config" / "fisheye" / "insta360_side_by_side.yaml"
TWO_TOPICS = REPO / "config" / "fisheye" / "x5_two_topics.yaml"
LENS = 270  # x5 lens images of 1080x1080 scaled by 1/4
ERP_H = 64
WAIT_S = 20.0


def _narrow_calibration(tmp_path: Path, shipped: Path = SIDE_BY_SIDE) -> Path:
    """A shipped file with 170° lenses: a band around ±90° is nobody's."""
    text = shipped.read_text().replace("fov_deg: 195.0", "fov_deg: 170.0")
    path = tmp_path / f"narrow_{shipped.name}"
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


def _check_range(range_m: np.ndarray, calibration_path: Path, size: tuple[int, int]) -> None:
    unseen = FisheyeRemapper(
        load_calibration(calibration_path).for_image(*size), ERP_H, 2 * ERP_H
    ).unseen
    assert range_m.shape == (ERP_H, 2 * ERP_H)
    assert unseen.any() and np.isnan(range_m[unseen]).all()
    truth = room_truth(ERP_H, 2 * ERP_H)
    seen = ~unseen & np.isfinite(truth)
    assert np.allclose(range_m[seen], truth[seen], rtol=1e-5)


def _two_topic_node(tmp_path: Path, tag: str, **extra):
    calibration_path = _narrow_calibration(tmp_path, TWO_TOPICS)
    domain = domain_id(f"{__name__}.{tag}")
    ns = f"/x5_{tag}{os.getpid()}"
    parameters = {
        "predictor": "ros_oracle:room",
        "fisheye_calibration": str(calibration_path),
        "fisheye_erp_height": ERP_H,
        "diagnostics_period": 0.2,
        **extra,
    }
    node = NodeProcess(domain, tmp_path / "node.log", parameters, namespace=ns)
    return node, domain, ns, calibration_path


def _lens_frame(value: int, sec: int, nanosec: int) -> Image:
    pixels = np.full((LENS, LENS, 3), value, np.uint8)
    return conv.rgb_to_msg(pixels, stamped(Image(), sec, nanosec).header)


def test_two_lens_topics_pair_by_stamp_and_publish_lens0s_stamp(tmp_path):
    node, domain, ns, calibration_path = _two_topic_node(tmp_path, "pair", pair_tolerance_s=0.005)
    with node, ros_client(domain) as client:
        lens0 = client.publisher(Image, f"{ns}/lens0")
        lens1 = client.publisher(Image, f"{ns}/lens1")
        depth = client.inbox(Image, f"{ns}/depth/image")
        assert node.wait_for_log("ready:", WAIT_S * 2), node.log()
        assert f"{ns}/lens0" in node.log() and f"{ns}/lens1" in node.log()
        for pub in (lens0, lens1):
            assert client.wait_until(lambda p=pub: p.get_subscription_count() > 0, WAIT_S)
        out = None
        for attempt in range(3):  # best effort: a lost frame is sent again, later stamps
            sec = 7 + attempt
            lens1.publish(_lens_frame(90, sec, 3_000_000))  # 3 ms after lens 0: jitter
            lens0.publish(_lens_frame(90, sec, 0))
            out = depth.with_stamp(sec, 0, timeout=WAIT_S / 3)
            if out is not None:
                break
        assert out is not None, node.log()
        _check_range(conv.image_to_numpy(out), calibration_path, (LENS, LENS))


def test_an_unpaired_lens_is_counted_in_diagnostics_and_logged(tmp_path):
    node, domain, ns, _ = _two_topic_node(tmp_path, "silent", max_pair_wait_s=0.05)
    with node, ros_client(domain) as client:
        lens0 = client.publisher(Image, f"{ns}/lens0")
        lens1 = client.publisher(Image, f"{ns}/lens1")
        depth = client.inbox(Image, f"{ns}/depth/image")
        diagnostics = client.inbox(DiagnosticArray, "/diagnostics")
        assert node.wait_for_log("ready:", WAIT_S * 2), node.log()
        assert client.wait_until(lambda: lens0.get_subscription_count() > 0, WAIT_S)
        # Lens 1 sends a frame 20 ms off (beyond the default 10 ms tolerance), then is silent.
        lens1.publish(_lens_frame(90, 5, 20_000_000))
        for k in range(5):
            lens0.publish(_lens_frame(90, 5 + k, 0))
            time.sleep(0.1)

        def unmatched(messages):
            for msg in reversed(messages):
                values = diagnostics_values(msg)
                if int(values.get("frames_unmatched", 0)) >= 3:
                    return msg
            return None

        report = diagnostics.wait_for(unmatched, WAIT_S)
        assert report is not None, node.log()
        assert report.status[0].level == DiagnosticStatus.WARN
        assert "unmatched" in report.status[0].message
        values = diagnostics_values(report)
        assert values["frames_received"] == "0" and int(values["frames_lens_received"]) >= 3
        assert depth.messages == []
        assert node.wait_for_log("lens0 frame unmatched: no lens1 frame", WAIT_S), node.log()
        # Throttled: the repeated problem is logged once per period, not once per frame.
        assert node.log().count("lens0 frame unmatched: no lens1 frame") == 1
