"""The perception node in a real ROS 2 process, fed a panorama of a room with known geometry.

The node's predictor is an oracle (test/ros_oracle.py) that returns the room's true range, so
every published range, point and beam is checked against closed-form geometry: centre column
along +x, left quarter along +y, REP 117 special values, stamps and frame_ids.
Two nodes share the module: one on raw Image input, one on CompressedImage (JPEG/PNG).
"""

from __future__ import annotations

import math
import os
import time

import cv2
import numpy as np
import pytest
from diagnostic_msgs.msg import DiagnosticArray
from ros_harness import NodeProcess, diagnostics_values, domain_id, ros_client, stamped
from ros_oracle import (
    FRONT_X,
    LEFT_Y,
    closed_form_lonlat,
    closed_form_rays,
    room_truth,
    wall_distance,
)
from sensor_msgs.msg import CompressedImage, Image, LaserScan, PointCloud2

from dap_ros import conversions as conv

pytestmark = pytest.mark.ros

H, W = 128, 256
STRIDE = 2
BEAMS = 64
WAIT_S = 20.0  # generous: two nodes and the test share two cores with whatever else runs
RAW_NS = f"/raw{os.getpid()}"
JPEG_NS = f"/jpeg{os.getpid()}"
OUTPUTS = {
    "depth/image": Image,
    "range_mask/image": Image,
    "points": PointCloud2,
    "scan": LaserScan,
    "depth/colored": Image,
}


class Rig:
    """The two nodes, the test's client, its publishers and one inbox per output topic."""

    def __init__(self, client, raw, jpeg):
        self.client, self.raw, self.jpeg = client, raw, jpeg
        self.image_pub = client.publisher(Image, f"{RAW_NS}/image")
        self.jpeg_pub = client.publisher(CompressedImage, f"{JPEG_NS}/image/compressed")
        self.inbox = {
            name: client.inbox(kind, f"{RAW_NS}/{name}") for name, kind in OUTPUTS.items()
        }
        self.jpeg_depth = client.inbox(Image, f"{JPEG_NS}/depth/image")
        self.diagnostics = client.inbox(DiagnosticArray, "/diagnostics", qos=10)
        self.rgb = np.random.default_rng(7).integers(0, 256, (H, W, 3), dtype=np.uint8)
        self.next_sec = 1000

    def connected(self) -> bool:
        return (
            self.image_pub.get_subscription_count() > 0
            and self.jpeg_pub.get_subscription_count() > 0
            and self.jpeg_depth.subscription.get_publisher_count() > 0
            and all(box.subscription.get_publisher_count() > 0 for box in self.inbox.values())
        )

    def stamp(self) -> int:
        self.next_sec += 1
        return self.next_sec

    def send(self, msg, publisher=None, wait_topic: str | None = "depth/image"):
        """Publish a good frame with a fresh stamp; return the wait_topic output for it."""
        sec = self.stamp()
        publisher = publisher or self.image_pub
        inbox = self.jpeg_depth if publisher is self.jpeg_pub else self.inbox.get(wait_topic)
        for _ in range(3):  # best effort: resend if a frame was lost on the way
            publisher.publish(stamped(msg, sec, 42))
            if inbox is None:
                return sec
            out = inbox.with_stamp(sec, 42, timeout=WAIT_S / 3)
            if out is not None:
                return out
        raise AssertionError(f"no output for the frame stamped {sec}")

    def outputs_for(self, sec: int) -> dict:
        found = {name: box.with_stamp(sec, 42, WAIT_S) for name, box in self.inbox.items()}
        missing = [name for name, msg in found.items() if msg is None]
        assert not missing, f"no {missing} for the frame stamped {sec}"
        return found

    def diagnostics_of(self, namespace: str, after: int = 0) -> dict[str, str]:
        """Values of the newest /diagnostics status of the node in `namespace`."""

        def newest(messages):
            for msg in reversed(messages[after:]):
                if msg.status and msg.status[0].name.startswith(f"{namespace}/dap"):
                    return msg
            return None

        msg = self.diagnostics.wait_for(newest, WAIT_S)
        assert msg is not None, f"no diagnostics from {namespace}"
        return diagnostics_values(msg)


@pytest.fixture(scope="module")
def rig(tmp_path_factory):
    logs = tmp_path_factory.mktemp("ros_node")
    domain = domain_id(__name__)
    common = {"predictor": "ros_oracle:room", "cloud_stride": STRIDE, "scan_beams": BEAMS}
    with (
        NodeProcess(domain, logs / "raw.log", common, namespace=RAW_NS) as raw,
        NodeProcess(
            domain, logs / "jpeg.log", {**common, "compressed_input": True}, namespace=JPEG_NS
        ) as jpeg,
        ros_client(domain) as client,
    ):
        rig = Rig(client, raw, jpeg)
        for node in (raw, jpeg):
            assert node.wait_for_log("ready:", WAIT_S * 2), node.log()
        assert client.wait_until(rig.connected, WAIT_S), "test client and nodes did not match"
        yield rig


@pytest.fixture(scope="module")
def room_frame(rig):
    """The outputs of one good raw frame (sec, outputs by topic)."""
    first = rig.send(conv.rgb_to_msg(rig.rgb, stamped(Image(), 0).header))
    sec = first.header.stamp.sec
    return sec, rig.outputs_for(sec)


def test_every_output_carries_the_input_stamp_and_frame_id(room_frame):
    sec, outputs = room_frame
    for name, msg in outputs.items():
        assert (msg.header.stamp.sec, msg.header.stamp.nanosec) == (sec, 42), name
        assert msg.header.frame_id == "pano_link", name
    depth, mask, colored = (
        outputs["depth/image"],
        outputs["range_mask/image"],
        outputs["depth/colored"],
    )
    assert (depth.encoding, depth.height, depth.width) == ("32FC1", H, W)
    assert (mask.encoding, mask.height, mask.width) == ("mono8", H, W)
    assert (colored.encoding, colored.width) == ("rgb8", W) and colored.height > H
    cloud = outputs["points"]
    assert (cloud.height, cloud.width) == (H // STRIDE, W // STRIDE) and not cloud.is_dense
    assert len(outputs["scan"].ranges) == BEAMS


def test_range_image_is_the_true_range_with_rep117_special_values(room_frame):
    depth = conv.image_to_numpy(room_frame[1]["depth/image"])
    truth = room_truth(H, W)
    finite = np.isfinite(truth)
    assert np.allclose(depth[finite], truth[finite], rtol=1e-6)
    assert np.isposinf(depth[np.isposinf(truth)]).all()  # sky: no return
    assert np.isnan(depth[np.isnan(truth)]).all()  # the oracle's invalid nadir
    assert np.isposinf(truth).any() and np.isnan(truth).any()  # both cases were exercised


def test_range_mask_marks_pixels_within_the_threshold(room_frame):
    mask = conv.image_to_numpy(room_frame[1]["range_mask/image"])
    assert set(np.unique(mask)) <= {0, 255}
    truth = room_truth(H, W)
    assert np.array_equal(mask == 255, truth <= 100.0)  # default threshold 100 m; sky is out


def test_cloud_points_lie_on_the_room_along_closed_form_rays(rig, room_frame):
    cloud = conv.cloud_to_numpy(room_frame[1]["points"])
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1)
    truth = room_truth(H, W)[::STRIDE, ::STRIDE]
    expected = truth[..., None] * closed_form_rays(H, W)[::STRIDE, ::STRIDE]
    finite = np.isfinite(truth)
    assert np.array_equal(np.isfinite(xyz[..., 0]), finite)  # sky and invalid: NaN points
    assert np.allclose(xyz[finite], expected[finite], rtol=1e-5, atol=1e-5)
    # The colour of each point is the input pixel it came from, packed 0x00RRGGBB.
    rgb = rig.rgb[::STRIDE, ::STRIDE].astype(np.uint32)
    assert np.array_equal(cloud["rgb"], (rgb[..., 0] << 16) | (rgb[..., 1] << 8) | rgb[..., 2])


def test_centre_column_sees_the_front_wall_and_left_quarter_the_left_wall(room_frame):
    cloud = conv.cloud_to_numpy(room_frame[1]["points"])
    row = (H // 2) // STRIDE  # just below the horizon
    ahead = cloud[row, (W // 2) // STRIDE]
    assert ahead["x"] == pytest.approx(FRONT_X, abs=1e-4) and abs(ahead["y"]) < 0.2
    left = cloud[row, (W // 4) // STRIDE]
    assert left["y"] == pytest.approx(LEFT_Y, abs=1e-4) and abs(left["x"]) < 0.2


def test_scan_beams_are_the_nearest_wall_distances(room_frame):
    scan = room_frame[1]["scan"]
    assert scan.angle_min == pytest.approx(-math.pi + math.pi / BEAMS, abs=1e-6)
    assert scan.angle_increment == pytest.approx(2 * math.pi / BEAMS, abs=1e-6)
    ranges = np.asarray(scan.ranges)
    lon = closed_form_lonlat(H, W)[0][::-1]
    sector = np.floor((lon + math.pi) / (2 * math.pi) * BEAMS).astype(int)
    expected = [wall_distance(lon[sector == b]).min() for b in range(BEAMS)]
    assert np.allclose(ranges, expected, rtol=1e-5)
    # Beam k looks along angle_min + k * increment: the beam around 0 rad sees the front wall.
    ahead = round((0.0 - scan.angle_min) / scan.angle_increment)
    assert ranges[ahead] == pytest.approx(FRONT_X, rel=1e-3)


def test_parameters_change_at_run_time(rig):
    node = f"{RAW_NS}/dap"
    results = rig.client.set_parameters(
        node,
        {"mask_threshold": 5, "frame_id": "override", "cloud_stride": 4, "cloud_organized": False},
    )
    assert all(r.successful for r in results), [r.reason for r in results]
    try:
        sec = rig.send(conv.rgb_to_msg(rig.rgb, stamped(Image(), 0).header)).header.stamp.sec
        outputs = rig.outputs_for(sec)
        truth = room_truth(H, W)
        depth = conv.image_to_numpy(outputs["depth/image"])
        near = truth <= 5.0
        assert np.allclose(depth[near], truth[near], rtol=1e-6)
        assert np.isposinf(depth[(truth > 5.0) & np.isfinite(truth)]).all()  # gated: no return
        assert outputs["depth/image"].header.frame_id == "override"
        cloud = outputs["points"]
        assert cloud.height == 1 and cloud.is_dense
        assert cloud.width == int((truth[::4, ::4] <= 5.0).sum())
        ranges = np.asarray(outputs["scan"].ranges)
        beyond = np.array([d > 5.05 for d in _beam_walls()])
        assert np.isposinf(ranges[beyond]).all() and np.isfinite(ranges[~beyond]).any()
        refused = rig.client.set_parameters(node, {"min_range": 500.0})
        assert not refused[0].successful and "must be below max_range" in refused[0].reason
        read_only = rig.client.set_parameters(node, {"weights": "/elsewhere"})
        assert not read_only[0].successful
        # Parameters of rclpy itself stay settable.
        assert rig.client.set_parameters(node, {"use_sim_time": False})[0].successful
    finally:
        restored = rig.client.set_parameters(
            node,
            {
                "mask_threshold": 100,
                "frame_id": "",
                "cloud_stride": STRIDE,
                "cloud_organized": True,
            },
        )
        assert all(r.successful for r in restored)


def _beam_walls() -> list[float]:
    lon = closed_form_lonlat(H, W)[0][::-1]
    sector = np.floor((lon + math.pi) / (2 * math.pi) * BEAMS).astype(int)
    return [wall_distance(lon[sector == b]).min() for b in range(BEAMS)]


def test_compressed_input_gives_the_same_range(rig):
    ok, jpeg = cv2.imencode(".jpg", rig.rgb[..., ::-1])
    assert ok
    out = rig.send(CompressedImage(format="jpeg", data=jpeg.tobytes()), publisher=rig.jpeg_pub)
    truth = room_truth(H, W)
    depth = conv.image_to_numpy(out)
    assert np.allclose(depth[np.isfinite(truth)], truth[np.isfinite(truth)], rtol=1e-6)


def _raw(**fields) -> Image:
    msg = conv.rgb_to_msg(np.zeros((H, W, 3), np.uint8), stamped(Image(), 0).header)
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


BAD_RAW = [
    ("wrong encoding", _raw(encoding="16UC1"), "unsupported encoding '16UC1'"),
    ("not 2:1", _raw(width=200, step=600), "not a 2:1 equirectangular panorama"),
    ("zero size", _raw(height=0, width=0, step=0, data=b""), "zero size"),
    ("short data", _raw(data=bytes(W * 3 * H // 2)), "shorter than step x height"),
    ("short step", _raw(step=W * 3 - 3), "is shorter than a row"),
    ("absurd size", _raw(height=30000, width=60000, step=180000), "absurdly large"),
]


def test_every_bad_raw_input_is_skipped_and_the_next_frame_is_processed(rig):
    before = rig.diagnostics_of(RAW_NS, after=len(rig.diagnostics.messages))
    bad_before = int(before["frames_bad_input"])
    for problem, msg, text in BAD_RAW:
        rig.image_pub.publish(stamped(msg, rig.stamp()))
        assert rig.raw.wait_for_log(text, WAIT_S), f"{problem}: no warning '{text}'"
        good = rig.send(conv.rgb_to_msg(rig.rgb, stamped(Image(), 0).header))
        assert good.height == H, problem  # the next good frame comes out
    assert rig.raw.alive()
    count = len(rig.diagnostics.messages)
    values = rig.diagnostics_of(RAW_NS, after=count)
    assert int(values["frames_bad_input"]) - bad_before == len(BAD_RAW)
    assert "Traceback" not in rig.raw.log()


def _png_header_only(width: int, height: int) -> bytes:
    _, png = cv2.imencode(".png", np.zeros((8, 16, 3), np.uint8))
    data = bytearray(png.tobytes())
    data[16:24] = width.to_bytes(4, "big") + height.to_bytes(4, "big")
    return bytes(data[:33])  # signature + IHDR, no pixels


BAD_COMPRESSED = [
    ("empty", b"", "compressed image is empty"),
    ("corrupt jpeg", b"\xff\xd8\xff\xe0" + bytes(100), "corrupt JPEG"),
    ("not an image", b"RIFF0000WEBPVP8 ", "neither JPEG nor PNG"),
    ("absurd png", _png_header_only(1 << 20, 1 << 19), "absurdly large"),
    ("4:3 png", _png_header_only(640, 480), "not a 2:1"),
    ("png without pixels", _png_header_only(W, H), "corrupt PNG"),
]


def test_every_bad_compressed_input_is_skipped_and_the_next_frame_is_processed(rig):
    _, png = cv2.imencode(".png", rig.rgb[..., ::-1])
    good = CompressedImage(format="png", data=png.tobytes())
    for problem, data, text in BAD_COMPRESSED:
        rig.jpeg_pub.publish(stamped(CompressedImage(format="jpeg", data=data), rig.stamp()))
        assert rig.jpeg.wait_for_log(text, WAIT_S), f"{problem}: no warning '{text}'"
        assert rig.send(good, publisher=rig.jpeg_pub).height == H, problem
    assert rig.jpeg.alive() and "Traceback" not in rig.jpeg.log()


def test_diagnostics_report_backend_rates_and_counts(rig):
    values = rig.diagnostics_of(RAW_NS)
    assert values["backend"] == "oracle-room"
    assert int(values["frames_processed"]) >= 3
    assert int(values["frames_received"]) >= int(values["frames_processed"])
    for key in ("input_rate_hz", "output_rate_hz", "latency_ms", "frames_dropped", "frames_idle"):
        assert key in values


def test_no_inference_when_nobody_subscribes(rig):
    for inbox in rig.inbox.values():
        rig.client.drop(inbox)
    time.sleep(1.0)  # the node learns through discovery that its subscribers left
    count = len(rig.diagnostics.messages)
    before = rig.diagnostics_of(RAW_NS, after=count)
    for _ in range(5):
        rig.image_pub.publish(conv.rgb_to_msg(rig.rgb, stamped(Image(), rig.stamp()).header))
        time.sleep(0.2)
    count = len(rig.diagnostics.messages)
    after = rig.diagnostics_of(RAW_NS, after=count)
    assert int(after["frames_idle"]) - int(before["frames_idle"]) >= 4
    assert after["frames_processed"] == before["frames_processed"]


def test_sigint_stops_the_node_cleanly(rig):
    for node in (rig.raw, rig.jpeg):
        assert node.stop() == 0
        assert "Traceback" not in node.log(), node.log()


def test_a_broken_predictor_stops_startup_with_one_clear_line(tmp_path):
    params = {"predictor": "no_such_module:factory"}
    with NodeProcess(domain_id(__name__ + "broken"), tmp_path / "broken.log", params) as node:
        node.process.wait(timeout=WAIT_S * 2)
        assert node.process.returncode == 1
        log = node.log()
    assert "cannot start" in log and "no_such_module" in log
    assert "Traceback" not in log
