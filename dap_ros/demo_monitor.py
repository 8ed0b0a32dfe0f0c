"""The demo's monitor node: watches every DAP output and scores it against the simulator.

It subscribes to the camera, the simulator's ground-truth range and every output of the DAP
node, pairs predictions with ground truth by header stamp, and keeps the numbers the demo
prints (rates, latency percentiles, AbsRel / δ1, points per cloud) plus the latest frames
for the pictures it writes.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque
from dataclasses import dataclass, field

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, LaserScan, PointCloud2

from dap_core.metrics import depth_metrics
from dap_ros.conversions import cloud_to_numpy, image_to_numpy, image_to_rgb

# Output topics of the DAP node and the simulator, relative to the demo's namespace.
CAMERA_TOPIC = "image"
GROUND_TRUTH_TOPIC = "ground_truth/depth"
DAP_OUTPUTS: dict[str, type] = {
    "depth/image": Image,
    "range_mask/image": Image,
    "points": PointCloud2,
    "scan": LaserScan,
    "depth/colored": Image,
}
RATE_WINDOW_S = 5.0  # rates are counted over the last few seconds
GROUND_TRUTH_BUFFER = 64  # frames of ground truth kept while waiting for the prediction


def stamp_ns(msg) -> int:
    return msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec


@dataclass
class TopicStats:
    """Arrival times and counts of one topic."""

    count: int = 0
    arrivals: deque = field(default_factory=lambda: deque(maxlen=512))

    def add(self, now: float) -> None:
        self.count += 1
        self.arrivals.append(now)

    def rate_hz(self, now: float) -> float:
        recent = [t for t in self.arrivals if now - t <= RATE_WINDOW_S]
        if len(recent) < 2:
            return 0.0
        return (len(recent) - 1) / max(recent[-1] - recent[0], 1e-9)


@dataclass
class FrameScore:
    """Accuracy of one predicted range image against the simulator's ground truth."""

    abs_rel: float
    delta1: float
    coverage: float  # fraction of finite ground-truth pixels that also have a finite prediction


def score_frame(pred_m: np.ndarray, gt_m: np.ndarray, max_range_m: float) -> FrameScore | None:
    """AbsRel and δ1 on pixels where the ground truth is a finite range within `max_range_m`.

    The published range is gated by the range mask (+inf beyond it); pixels the node gated away
    but that have a finite ground truth are reported as lost coverage, not folded into AbsRel.
    """
    if pred_m.shape != gt_m.shape:
        return None
    gt_valid = np.isfinite(gt_m) & (gt_m > 0) & (gt_m <= max_range_m)
    both = gt_valid & np.isfinite(pred_m) & (pred_m > 0)
    if not both.any():
        return None
    metrics = depth_metrics(pred_m, gt_m, both)
    coverage = float(both.sum()) / float(gt_valid.sum())
    return FrameScore(float(metrics["abs_rel"]), float(metrics["delta1"]), coverage)


class DemoMonitor(Node):
    """Subscribes to camera, ground truth and every DAP output; thread-safe accessors."""

    def __init__(self, max_range_m: float = 100.0) -> None:
        super().__init__("dap_demo_monitor")
        self.max_range_m = max_range_m
        self._lock = threading.Lock()
        self.stats: dict[str, TopicStats] = {
            name: TopicStats() for name in (CAMERA_TOPIC, GROUND_TRUTH_TOPIC, *DAP_OUTPUTS)
        }
        self.latencies_ms: deque = deque(maxlen=1000)
        self.scores: list[FrameScore] = []
        self.points_per_cloud: deque = deque(maxlen=100)
        self.backend = ""
        self._ground_truth: OrderedDict[int, np.ndarray] = OrderedDict()
        self._camera: OrderedDict[int, np.ndarray] = OrderedDict()
        self.latest: dict[str, object] = {}

        qos = qos_profile_sensor_data
        self.create_subscription(Image, CAMERA_TOPIC, self._on_camera, qos)
        self.create_subscription(Image, GROUND_TRUTH_TOPIC, self._on_ground_truth, qos)
        for topic, msg_type in DAP_OUTPUTS.items():
            self.create_subscription(msg_type, topic, self._make_output_callback(topic), qos)
        self.create_subscription(DiagnosticArray, "/diagnostics", self._on_diagnostics, 10)

    # -- callbacks ---------------------------------------------------------------------------
    def _remember(self, store: OrderedDict, key: int, value: np.ndarray) -> None:
        store[key] = value
        while len(store) > GROUND_TRUTH_BUFFER:
            store.popitem(last=False)

    def _on_camera(self, msg: Image) -> None:
        with self._lock:
            self.stats[CAMERA_TOPIC].add(time.monotonic())
            self._remember(self._camera, stamp_ns(msg), image_to_rgb(msg))

    def _on_ground_truth(self, msg: Image) -> None:
        with self._lock:
            self.stats[GROUND_TRUTH_TOPIC].add(time.monotonic())
            self._remember(self._ground_truth, stamp_ns(msg), image_to_numpy(msg).copy())

    def _make_output_callback(self, topic: str):
        def callback(msg) -> None:
            now = time.monotonic()
            with self._lock:
                self.stats[topic].add(now)
                if topic == "depth/image":
                    self._on_depth(msg)
                elif topic == "points":
                    cloud = cloud_to_numpy(msg)
                    self.points_per_cloud.append(int(np.isfinite(cloud["x"]).sum()))
                elif topic == "range_mask/image":
                    self.latest["mask"] = image_to_numpy(msg).copy()
                elif topic == "scan":
                    self.latest["scan"] = msg

        return callback

    def _on_depth(self, msg: Image) -> None:
        key = stamp_ns(msg)
        self.latencies_ms.append((self.get_clock().now().nanoseconds - key) / 1e6)
        pred = image_to_numpy(msg).copy()
        self.latest["depth"] = pred
        gt = self._ground_truth.get(key)
        if gt is None:
            return
        self.latest["ground_truth"] = gt
        self.latest["rgb"] = self._camera.get(key)
        score = score_frame(pred, gt, self.max_range_m)
        if score is not None:
            self.scores.append(score)

    def _on_diagnostics(self, msg: DiagnosticArray) -> None:
        for status in msg.status:
            for item in status.values:
                if item.key == "backend":
                    with self._lock:
                        self.backend = item.value

    # -- summaries ---------------------------------------------------------------------------
    def snapshot(self) -> dict:
        """Current numbers, as plain Python values (for the table and the summary JSON)."""
        now = time.monotonic()
        with self._lock:
            latencies = np.asarray(self.latencies_ms, dtype=np.float64)
            scores = list(self.scores)
            return {
                "input_hz": self.stats[CAMERA_TOPIC].rate_hz(now),
                "output_hz": self.stats["depth/image"].rate_hz(now),
                "latency_p50_ms": float(np.percentile(latencies, 50)) if latencies.size else None,
                "latency_p95_ms": float(np.percentile(latencies, 95)) if latencies.size else None,
                "abs_rel": float(np.mean([s.abs_rel for s in scores])) if scores else None,
                "delta1": float(np.mean([s.delta1 for s in scores])) if scores else None,
                "coverage": float(np.mean([s.coverage for s in scores])) if scores else None,
                "frames_scored": len(scores),
                "points_per_cloud": (
                    int(np.mean(self.points_per_cloud)) if self.points_per_cloud else None
                ),
                "messages": {name: s.count for name, s in self.stats.items()},
                "backend": self.backend,
            }

    def latest_frames(self) -> dict[str, object]:
        with self._lock:
            return dict(self.latest)
