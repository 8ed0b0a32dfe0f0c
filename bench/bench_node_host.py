"""Host-side cost of one frame in the DAP node at 512x1024, as a ratio to a memcpy bound.

Runs the node's own per-frame path (`DapNode.process`: decode the Image, post-process the
prediction, build and publish every output: range image, mask, full-resolution cloud, scan,
coloured preview) with an injected predictor that returns a precomputed prediction, so no
model forward is timed. A subscriber in another process takes every output (best effort,
large-data profile on the node), so DDS really delivers. The bound is one memcpy of all the
bytes that go in and out (input image + every output payload), measured in the same run:
ratio = median frame time / memcpy time (target <= 2). A per-stage breakdown (same
functions the node calls, timed alone) and the time to publish the prebuilt messages of a
frame (rclpy + Fast DDS, which the node cannot make cheaper) show where the time goes.

Usage: .venv/bin/python bench/bench_node_host.py [--frames 40] [--stride 1] [--height 512]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SUBSCRIBER = """
import sys, threading, rclpy
from rclpy.qos import qos_profile_sensor_data as qos
from sensor_msgs.msg import Image, LaserScan, PointCloud2
rclpy.init()
node = rclpy.create_node("bench_subscriber")
count = {}
def counter(topic):
    return lambda msg: count.__setitem__(topic, count.get(topic, 0) + 1)
for topic, kind in [("depth/image", Image), ("range_mask/image", Image),
                    ("points", PointCloud2), ("scan", LaserScan), ("depth/colored", Image)]:
    node.create_subscription(kind, topic, counter(topic), qos)
done = threading.Event()
threading.Thread(target=lambda: (sys.stdin.read(), done.set()), daemon=True).start()
print("ready", flush=True)
while not done.is_set():  # until the benchmark closes our stdin
    rclpy.spin_once(node, timeout_sec=0.1)
print(" ".join(f"{k}={v}" for k, v in sorted(count.items())), flush=True)
"""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def best_ms(function, repeats: int) -> float:
    function()
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        function()
        best = min(best, time.perf_counter() - start)
    return best * 1e3


def median(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[len(ordered) // 2]


class FixedPredictor:
    """Returns one precomputed prediction: a room-like range with sky, all four mask heads."""

    backend = "fixed"

    def __init__(self, height: int, width: int) -> None:
        import numpy as np

        from dap_core.prediction import Prediction

        v = (np.arange(height) + 0.5) / height
        u = (np.arange(width) + 0.5) / width
        range_m = (3.0 + 2.0 * np.sin(2 * np.pi * u)[None, :] + 20.0 * v[:, None] ** 4).astype(
            np.float32
        )
        range_m[: height // 5] = 150.0  # sky band: beyond the 100 m head
        masks = {t: (range_m <= t).astype(np.float32) for t in (10, 20, 50, 100)}
        self.prediction = Prediction(range_m, masks, {}, self.backend)

    def predict(self, rgb):
        return self.prediction


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40)
    parser.add_argument("--height", type=int, default=512)
    parser.add_argument("--stride", type=int, default=1, help="cloud stride")
    args = parser.parse_args()
    height, width = args.height, 2 * args.height

    domain = 1 + os.getpid() % 100
    os.environ.update(
        ROS_DOMAIN_ID=str(domain),
        ROS_AUTOMATIC_DISCOVERY_RANGE="LOCALHOST",
        FASTDDS_DEFAULT_PROFILES_FILE=str(REPO / "config" / "fastdds_large_data.xml"),
    )
    import numpy as np
    import rclpy
    from rclpy.parameter import Parameter
    from std_msgs.msg import Header

    from dap_core.visualize import add_colorbar, colorize_range
    from dap_ros import conversions, projection
    from dap_ros.node import DapNode

    sub_env = {k: v for k, v in os.environ.items() if k != "FASTDDS_DEFAULT_PROFILES_FILE"}
    subscriber = subprocess.Popen(
        [sys.executable, "-c", SUBSCRIBER],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=sub_env,
    )
    try:
        assert subscriber.stdout.readline().strip() == "ready"
        rclpy.init()
        predictor = FixedPredictor(height, width)
        overrides = [
            Parameter("cloud_stride", value=args.stride),
            Parameter("scan_beams", value=360),
            Parameter("process_without_subscribers", value=True),
        ]
        node = DapNode(predictor=predictor, parameter_overrides=overrides)
        publishers = [node._pub_depth, node._pub_points, node._pub_scan]
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and not all(
            p.get_subscription_count() for p in publishers
        ):
            time.sleep(0.05)
        rgb = np.random.default_rng(0).integers(0, 256, (height, width, 3), dtype=np.uint8)
        header = Header(frame_id="camera_360")
        msg = conversions.rgb_to_msg(rgb, header)

        frame_ms = []
        for k in range(args.frames + 3):
            msg.header.stamp = node.get_clock().now().to_msg()
            start = time.perf_counter()
            assert node.process(msg), node.stats.last_problem
            if k >= 3:  # the first frames build the ray caches
                frame_ms.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.05)  # a camera-like pace; lets the subscriber drain

        # Stage breakdown: the node's functions, each timed alone (best of 10).
        s = node.settings
        prediction = predictor.prediction
        within = prediction.within(s.mask_threshold)
        gated = projection.range_image(prediction.range_m, within)
        limited = projection.limit_range(gated, s.min_range, s.max_range)
        cloud = projection.build_cloud(limited, rgb, args.stride, -100.0, 100.0, True)
        preview = add_colorbar(colorize_range(limited, 100.0), 100.0)
        stages = {
            "decode rgb8": lambda: conversions.image_to_rgb(msg),
            "mask + REP 117 range": lambda: projection.limit_range(
                projection.range_image(prediction.range_m, prediction.within(s.mask_threshold)),
                s.min_range,
                s.max_range,
            ),
            "cloud points": lambda: projection.build_cloud(
                limited, rgb, args.stride, -100.0, 100.0, True
            ),
            "scan": lambda: projection.build_scan(gated, 360, -0.2, 0.2, 0.0, 100.0),
            "preview colours": lambda: add_colorbar(colorize_range(limited, 100.0), 100.0),
            "depth+mask+preview msgs": lambda: (
                conversions.depth_to_msg(limited, header),
                conversions.mask_to_msg(within, header),
                conversions.rgb_to_msg(preview, header),
            ),
            "cloud msg": lambda: conversions.cloud_to_msg(cloud, header, True),
        }
        stage_ms = {name: best_ms(fn, 10) for name, fn in stages.items()}

        # Publishing floor: the five prebuilt messages of one frame, published as the node does
        # (rclpy converts, serializes and hands them to Fast DDS: several copies per message).
        built = [
            (node._pub_depth, conversions.depth_to_msg(limited, header)),
            (node._pub_mask, conversions.mask_to_msg(within, header)),
            (node._pub_points, conversions.cloud_to_msg(cloud, header, True)),
            (node._pub_colored, conversions.rgb_to_msg(preview, header)),
        ]
        publish_ms = []
        for _ in range(args.frames):
            start = time.perf_counter()
            for publisher, message in built:
                publisher.publish(message)
            publish_ms.append((time.perf_counter() - start) * 1e3)
            time.sleep(0.05)

        total_bytes = rgb.nbytes + limited.nbytes + within.size + cloud.nbytes + preview.nbytes
        source = np.random.default_rng(1).integers(0, 256, total_bytes, dtype=np.uint8)
        target = np.empty_like(source)
        memcpy_ms = best_ms(lambda: np.copyto(target, source), 20)
        received = subscriber.communicate(input="", timeout=30)[0].strip()
        node.destroy_node()
        rclpy.try_shutdown()
    finally:
        if subscriber.poll() is None:
            subscriber.kill()

    frame = median(frame_ms)
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores, Python {platform.python_version()}")
    print(f"frame {width}x{height}, cloud stride {args.stride}, {args.frames} frames")
    print(f"bytes in + out per frame: {total_bytes / 2**20:.1f} MiB")
    for name, ms in stage_ms.items():
        print(f"  {name:26s} {ms:7.2f} ms (best of 10)")
    print(f"  {'sum of stages':26s} {sum(stage_ms.values()):7.2f} ms")
    print(f"node.process per frame: median {frame:.2f} ms, min {min(frame_ms):.2f} ms")
    print(f"memcpy of the same bytes: {memcpy_ms:.2f} ms")
    publish = median(publish_ms)
    print(f"publishing the prebuilt messages alone: median {publish:.2f} ms")
    print(f"ratio (median frame / memcpy) = {frame / memcpy_ms:.2f}   (target <= 2.0)")
    own = (frame - publish) / memcpy_ms
    print(f"ratio without publishing ((frame - publish) / memcpy) = {own:.2f}")
    print(f"subscriber received: {received}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
