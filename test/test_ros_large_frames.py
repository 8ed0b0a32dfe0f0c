"""Frames wider than `max_input_width` are refused in one warning line; the node goes on.

Real nodes in subprocesses with the shipped Fast DDS large-data profile (as the launch file
sets it) and the room oracle as predictor; the test's publisher and subscribers are its own
rclpy node in this process.
"""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from ros_harness import NodeProcess, domain_id, ros_client, stamped
from sensor_msgs.msg import CompressedImage, Image

from dap_ros import conversions as conv

pytestmark = pytest.mark.ros

LIMIT = 256  # a small max_input_width, so the frames of the test are small too
WAIT_S = 30.0  # the test, the node and whatever else runs share two cores


def _frame(width: int, sec: int) -> Image:
    rgb = np.random.default_rng(width).integers(0, 256, (width // 2, width, 3), dtype=np.uint8)
    return conv.rgb_to_msg(rgb, stamped(Image(), sec).header)


def _send_until_output(publisher, inbox, msg, sec: int):
    """Publish `msg` (best effort: resend up to 3 times) until its depth image comes out."""
    for _ in range(3):
        publisher.publish(msg)
        out = inbox.with_stamp(sec, 0, timeout=WAIT_S / 3)
        if out is not None:
            return out
    return None


def _connected(client, publisher, inbox) -> bool:
    """The node subscribes to our input and publishes the output we listen to."""
    return client.wait_until(
        lambda: (
            publisher.get_subscription_count() > 0 and inbox.subscription.get_publisher_count() > 0
        ),
        WAIT_S,
    )


def _send_until_logged(publisher, node, msg, text: str) -> bool:
    """Publish `msg` (best effort: resend up to 5 times) until the node logs `text`."""
    for _ in range(5):
        publisher.publish(msg)
        if node.wait_for_log(text, WAIT_S / 5):
            return True
    return False


def test_a_frame_above_the_limit_is_refused_in_one_line_and_one_at_it_is_processed(tmp_path):
    domain = domain_id(__name__)
    ns = f"/large{os.getpid()}"
    params = {"predictor": "ros_oracle:room", "max_input_width": LIMIT, "scan_beams": 64}
    with (
        NodeProcess(domain, tmp_path / "node.log", params, namespace=ns) as node,
        ros_client(domain) as client,
    ):
        raw = client.publisher(Image, f"{ns}/image")
        depth = client.inbox(Image, f"{ns}/depth/image")
        assert _connected(client, raw, depth), node.log()
        warning = (
            f"refused input: frame {2 * LIMIT}x{LIMIT} (0.4 MB as rgb8) is larger than the largest"
            f" supported {LIMIT}x{LIMIT // 2} (the parameter max_input_width raises it)"
        )
        assert _send_until_logged(raw, node, _frame(2 * LIMIT, 100), warning), node.log()
        at_limit = _send_until_output(raw, depth, _frame(LIMIT, 101), 101)
        assert at_limit is not None and (at_limit.width, at_limit.height) == (LIMIT, LIMIT // 2)
        assert not [m for m in depth.messages if m.header.stamp.sec == 100]  # none for it
        lines = [line for line in node.log().splitlines() if "refused input" in line]
        assert lines and all(line.endswith(warning) for line in lines), node.log()
        assert node.alive() and "Traceback" not in node.log()


def test_a_compressed_frame_above_the_limit_is_refused_before_decoding(tmp_path):
    domain = domain_id(__name__) + 1
    ns = f"/large_jpeg{os.getpid()}"
    params = {
        "predictor": "ros_oracle:room",
        "max_input_width": LIMIT,
        "compressed_input": True,
        "scan_beams": 64,
    }
    with (
        NodeProcess(domain, tmp_path / "node.log", params, namespace=ns) as node,
        ros_client(domain) as client,
    ):
        pub = client.publisher(CompressedImage, f"{ns}/image/compressed")
        depth = client.inbox(Image, f"{ns}/depth/image")
        assert _connected(client, pub, depth), node.log()
        _, jpeg = cv2.imencode(".jpg", np.zeros((LIMIT, 2 * LIMIT, 3), np.uint8))
        too_large = stamped(CompressedImage(format="jpeg", data=jpeg.tobytes()), 200)
        refused = f"refused input: frame {2 * LIMIT}x{LIMIT}"
        assert _send_until_logged(pub, node, too_large, refused), node.log()
        _, ok = cv2.imencode(".jpg", np.zeros((LIMIT // 2, LIMIT, 3), np.uint8))
        msg = stamped(CompressedImage(format="jpeg", data=ok.tobytes()), 201)
        out = _send_until_output(pub, depth, msg, 201)
        assert out is not None and out.width == LIMIT
        assert node.alive() and "Traceback" not in node.log()


def test_at_the_default_limit_the_shipped_profile_delivers_the_outputs(tmp_path):
    """4096x2048 (the default max_input_width): 25 MB in, a 34 MB range image out, both
    through the shipped profile to default-configured endpoints."""
    domain = domain_id(__name__) + 2
    ns = f"/large_default{os.getpid()}"
    params = {"predictor": "ros_oracle:room", "cloud_stride": 8, "scan_beams": 64}
    with (
        NodeProcess(domain, tmp_path / "node.log", params, namespace=ns) as node,
        ros_client(domain) as client,
    ):
        raw = client.publisher(Image, f"{ns}/image")
        depth = client.inbox(Image, f"{ns}/depth/image")
        assert _connected(client, raw, depth), node.log()
        out = _send_until_output(raw, depth, _frame(4096, 300), 300)
        assert out is not None, node.log()
        assert (out.width, out.height, out.encoding) == (4096, 2048, "32FC1")
        assert len(out.data) == 4096 * 2048 * 4
        assert node.alive() and "refused input" not in node.log()
