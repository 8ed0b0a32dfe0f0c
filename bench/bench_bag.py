"""Frames per second of `dap bag` (offline) against the live node, same model, same frames.

Both run the shipped weights at the same model input size on the same N panoramas with every
output enabled. Live: the node in its own process (`python -m dap_ros.node`), frames
published one at a time (reliable), each waiting for the frame's last output before the next
is sent: the node's best sequential throughput, DDS transport included. Offline: `dap bag`
on a bag of the same frames, run as a subprocess; its own processing time (printed in its
summary: reading, inference, outputs, writing; the model load excluded as in the node) gives
its frames/s. Printed: both rates and offline / live (target >= 1: offline must not be
slower than replaying the recording through the node).

Usage: .venv/bin/python bench/bench_bag.py [--frames 12] [--height 256] [--input-height 128]
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "test"))


def offline_rate(bag: Path, out: Path, params: dict, batch: int) -> float:
    from bag_helpers import panorama_frames  # noqa: F401  (test helpers on the path)
    from ros_harness import ros_env

    args = [f"{k}:={v}" for k, v in params.items()]
    command = [sys.executable, "-m", "dap_core.cli", "bag", str(bag), str(out), "--no-progress"]
    command += ["--batch", str(batch)]
    for arg in args:
        command += ["-p", arg]
    done = subprocess.run(command, capture_output=True, text=True, env=ros_env(0), cwd=REPO)
    if done.returncode != 0:
        raise SystemExit(f"dap bag failed: {done.stderr.strip().splitlines()[-1]}")
    match = re.search(r"\(([\d.]+) frames/s", done.stdout)
    return float(match.group(1))


def live_rate(frames, params: dict, logs: Path) -> float:
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from ros_harness import NodeProcess, domain_id, ros_client, stamped
    from sensor_msgs.msg import Image, LaserScan, PointCloud2

    from dap_ros import conversions as conv

    reliable = QoSProfile(
        depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
    )
    node_params = {**params, "input_reliable": True, "output_reliable": True}
    domain = domain_id("bench_bag")
    kinds = {
        "depth/image": Image,
        "range_mask/image": Image,
        "points": PointCloud2,
        "scan": LaserScan,
        "depth/colored": Image,
    }
    with (
        NodeProcess(domain, logs / "node.log", node_params, namespace="/cam") as node,
        ros_client(domain) as client,
    ):
        if not node.wait_for_log("ready:", 300):
            raise SystemExit(f"node did not start:\n{node.log()}")
        pub = client.publisher(Image, "/cam/image", reliable)
        boxes = {t: client.inbox(k, f"/cam/{t}", reliable) for t, k in kinds.items()}
        client.wait_until(
            lambda: (
                pub.get_subscription_count() > 0
                and all(b.subscription.get_publisher_count() > 0 for b in boxes.values())
            ),
            30,
        )

        def send(sec: int) -> None:
            pub.publish(
                stamped(conv.rgb_to_msg(frames[sec % len(frames)], stamped(Image(), 0).header), sec)
            )
            for box in boxes.values():
                if box.with_stamp(sec, 0, 120) is None:
                    raise SystemExit(f"no output for frame {sec}")

        send(10_000)  # warm-up frame (first inference, first messages)
        started = time.perf_counter()
        for index in range(len(frames)):
            send(index + 1)
        return len(frames) / (time.perf_counter() - started)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=12)
    parser.add_argument("--height", type=int, default=256, help="panorama height (W = 2H)")
    parser.add_argument("--input-height", type=int, default=128, help="model input height")
    parser.add_argument("--backend", default="torch")
    parser.add_argument("--batch", type=int, default=1)
    args = parser.parse_args()
    from bag_helpers import panorama_frames, write_bag

    frames = panorama_frames(args.frames, args.height)
    params = {"input_height": args.input_height, "backend": args.backend}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        bag = write_bag(tmp / "in", frames, topic="/cam/image", extra_topic=False)
        offline_rate(bag, tmp / "warm", params, args.batch)  # exports / caches, then measure
        offline = offline_rate(bag, tmp / "out", params, args.batch)
        live = live_rate(frames, params, tmp)
    print(
        f"{args.frames} frames {2 * args.height}x{args.height}, model input "
        f"{2 * args.input_height}x{args.input_height}, backend {args.backend}, batch "
        f"{args.batch}: offline {offline:.2f} frames/s, live node {live:.2f} frames/s, "
        f"offline / live = {offline / live:.2f} (target >= 1)"
    )
    return 0 if offline / live >= 1.0 else 1


if __name__ == "__main__":
    sys.exit(main())
