"""The DAP perception node: one 360° ERP image in; range, range mask, cloud, scan and preview out.

Topics (relative names, so a namespace or remapping places them):
  in   image (sensor_msgs/Image) or image/compressed (CompressedImage), ERP, width = 2 x height
  out  depth/image       32FC1 range in metres along each pixel's ray (not REP 118 z-depth);
                         +inf beyond the range mask / max_range (no return), −inf closer than
                         min_range, NaN invalid (REP 117)
       range_mask/image  mono8, 255 where the model places the pixel within mask_threshold
       points            PointCloud2 x, y, z, rgb in the panorama frame (REP 103)
       scan              LaserScan, 360°, from the points inside a height band
       depth/colored     rgb8 preview with a colour bar
       /diagnostics      rates, latency, dropped frames, backend
Every output carries the input's stamp; frame_id is the `frame_id` parameter or the input's.

Threads: the subscription callback only stores the newest frame (FrameSlot); a worker thread
decodes, runs the predictor and publishes; frames replaced while it works are dropped and
counted. With nobody subscribed to any output no inference runs (unless
process_without_subscribers). Bad input is logged (throttled, naming the problem) and skipped.

Run: `python -m dap_ros.node --ros-args --params-file config/dap.yaml`, `dap_node`, or
`ros2 launch dap_ros dap.launch.py`.
"""

from __future__ import annotations

import importlib
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any, Protocol

import rclpy
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image, LaserScan, PointCloud2
from std_msgs.msg import Header

from dap_core.prediction import Prediction
from dap_core.visualize import add_colorbar, colorize_range
from dap_ros import conversions, projection
from dap_ros.diagnostics import FrameStats, diagnostic_array
from dap_ros.frame_slot import FrameSlot
from dap_ros.params import PARAMETERS, Settings, declare_all, read_settings

__all__ = ["NODE_NAME", "DapNode", "load_predictor", "main"]

NODE_NAME = "dap"
PARAMETER_NAMES = frozenset(spec.name for spec in PARAMETERS)
WARN_EVERY_S = 5.0  # a repeated problem is logged at most once per this many seconds
_WORKER_POLL_S = 0.1
_DEFAULT_WEIGHTS = Path("weights") / "dap_small"


class PredictorLike(Protocol):
    """What the node needs from a model: dap_core.runtime.Predictor or a stand-in."""

    backend: str

    def predict(self, rgb: Any) -> Prediction: ...


def _default_weights() -> Path:
    """The shipped weights: share/dap_ros/weights/dap_small, or weights/dap_small in a checkout."""
    candidates = [Path(__file__).resolve().parents[1] / _DEFAULT_WEIGHTS]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.insert(0, Path(get_package_share_directory("dap_ros")) / _DEFAULT_WEIGHTS)
    except (ImportError, LookupError, ValueError, OSError):
        pass  # not installed through ament: the checkout path is the only candidate
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(
        "no 'weights' parameter given and the shipped weights were not found at "
        + " or ".join(str(c) for c in candidates)
    )


def _input_size(height: int) -> tuple[int, int] | None:
    return (height, 2 * height) if height else None  # 0: keep the weights' own input size


def load_predictor(settings: Settings) -> PredictorLike:
    """The model the node serves: `settings.predictor` ('module:factory') or a DAP Predictor."""
    if settings.predictor:
        module_name, _, factory_name = settings.predictor.partition(":")
        factory = getattr(importlib.import_module(module_name), factory_name, None)
        if factory is None:
            raise ValueError(f"predictor factory '{settings.predictor}' does not exist")
        predictor = factory()
    else:
        from dap_core.runtime import Predictor  # torch and the model load only here

        predictor = Predictor(
            settings.weights or _default_weights(),
            backend=settings.backend,
            device=settings.device,
            precision=settings.precision,
            input_size=_input_size(settings.input_height),
            threads=settings.threads or None,
        )
    if not callable(getattr(predictor, "predict", None)) or not hasattr(predictor, "backend"):
        raise ValueError(f"{predictor!r} has no .predict(rgb) and .backend")
    return predictor


class _Throttle:
    """Lets each distinct message through at most once per `period` seconds."""

    _MAX_KEYS = 256  # distinct texts remembered; the table restarts beyond that

    def __init__(self, period: float) -> None:
        self._period = period
        self._last: dict[str, float] = {}

    def __call__(self, text: str) -> bool:
        now = time.monotonic()
        if now - self._last.get(text, -math.inf) < self._period:
            return False
        if len(self._last) >= self._MAX_KEYS:
            self._last.clear()
        self._last[text] = now
        return True


def _qos(reliable: bool) -> QoSProfile:
    if not reliable:
        return qos_profile_sensor_data
    return QoSProfile(
        depth=5, history=HistoryPolicy.KEEP_LAST, reliability=ReliabilityPolicy.RELIABLE
    )


def _stamp_ns(header: Header) -> int:
    return header.stamp.sec * 1_000_000_000 + header.stamp.nanosec


class DapNode(Node):
    """Panoramic depth node; `predictor` injects a model object (else the `predictor`/`weights`
    parameters decide)."""

    def __init__(self, predictor: PredictorLike | None = None, **node_kwargs: Any) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        declare_all(self)
        self._settings = read_settings(self)
        self._predictor = predictor if predictor is not None else load_predictor(self._settings)
        self.backend = str(self._predictor.backend)
        self.stats = FrameStats()
        self._slot: FrameSlot[Image | CompressedImage] = FrameSlot()
        self._throttle = _Throttle(WARN_EVERY_S)
        self._logged_first_frame = False

        s = self._settings
        out_qos = _qos(s.output_reliable)
        self._pub_depth = self.create_publisher(Image, "depth/image", out_qos)
        self._pub_mask = self.create_publisher(Image, "range_mask/image", out_qos)
        self._pub_points = self.create_publisher(PointCloud2, "points", out_qos)
        self._pub_scan = self.create_publisher(LaserScan, "scan", out_qos)
        self._pub_colored = self.create_publisher(Image, "depth/colored", out_qos)
        self._outputs = (
            self._pub_depth,
            self._pub_mask,
            self._pub_points,
            self._pub_scan,
            self._pub_colored,
        )
        self._pub_diagnostics = self.create_publisher(DiagnosticArray, "/diagnostics", 10)
        in_qos = QoSProfile(
            depth=1,
            history=HistoryPolicy.KEEP_LAST,
            reliability=ReliabilityPolicy.RELIABLE
            if s.input_reliable
            else ReliabilityPolicy.BEST_EFFORT,
        )
        in_type = CompressedImage if s.compressed_input else Image
        self._subscription = self.create_subscription(
            in_type, s.input_topic, self._on_image, in_qos
        )
        self.add_on_set_parameters_callback(self._on_set_parameters)
        self._diagnostics_timer = self.create_timer(s.diagnostics_period, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="dap-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: {in_type.__name__} on '{self._subscription.topic_name}', backend "
            f"{self.backend}, mask {s.mask_threshold} m, cloud stride {s.cloud_stride}"
        )

    # -- parameters -----------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    def _on_set_parameters(self, parameters):
        # Parameters rclpy declares itself (use_sim_time, ...) pass through untouched.
        changes = {p.name: p.value for p in parameters if p.name in PARAMETER_NAMES}
        try:
            updated = self._settings.replaced(changes)
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        self._settings = updated  # one reference swap: the worker sees old or new, never a mix
        return SetParametersResult(successful=True)

    # -- input ----------------------------------------------------------------------------

    def _on_image(self, msg: Image | CompressedImage) -> None:
        self.stats.count("received")
        if not self._settings.process_without_subscribers and not self._anyone_listens():
            self.stats.count("idle")
            return
        if self._slot.put(msg):
            self.stats.count("dropped")

    def _anyone_listens(self) -> bool:
        return any(pub.get_subscription_count() > 0 for pub in self._outputs)

    def _work(self) -> None:
        while not self._slot.closed:
            taken = self._slot.take(_WORKER_POLL_S)
            if taken is not None:
                self.process(*taken)

    # -- one frame ------------------------------------------------------------------------

    def process(self, msg: Image | CompressedImage, arrived: float | None = None) -> bool:
        """Decode, infer and publish one frame; True when its outputs were published.

        Never raises: bad input and failures are counted and logged (throttled).
        """
        started = time.monotonic() if arrived is None else arrived
        taken = time.monotonic()
        s = self._settings
        try:
            if isinstance(msg, CompressedImage):
                rgb = conversions.compressed_to_rgb(msg)
            else:
                rgb = conversions.image_to_rgb(msg)
        except conversions.InputError as err:
            self._problem("bad_input", f"bad input image: {err}")
            return False
        try:
            before = time.monotonic()
            prediction = self._predictor.predict(rgb)
            inference_ms = (time.monotonic() - before) * 1e3
            if prediction.range_m.shape != rgb.shape[:2]:
                raise RuntimeError(
                    f"predictor returned range {prediction.range_m.shape} for an image "
                    f"{rgb.shape[:2]}"
                )
            header = Header(stamp=msg.header.stamp, frame_id=s.frame_id or msg.header.frame_id)
            self._publish(s, header, rgb, prediction)
        except Exception as err:  # the node must outlive any model or DDS error
            self._problem("failed", f"frame failed: {type(err).__name__}: {err}")
            return False
        done = time.monotonic()
        latency_ms = (time.time_ns() - _stamp_ns(msg.header)) / 1e6
        self.stats.processed_frame(latency_ms, (done - taken) * 1e3, inference_ms)
        if not self._logged_first_frame:
            self._logged_first_frame = True
            self.get_logger().info(
                f"first frame {rgb.shape[1]}x{rgb.shape[0]} processed in "
                f"{(done - started) * 1e3:.0f} ms (inference {inference_ms:.0f} ms)"
            )
        return True

    def _problem(self, counter: str, text: str) -> None:
        self.stats.count(counter, text)
        if self._throttle(text):
            self.get_logger().warning(text)

    def _wanted(self, publisher, s: Settings) -> bool:
        return s.process_without_subscribers or publisher.get_subscription_count() > 0

    def _publish(self, s: Settings, header: Header, rgb, prediction: Prediction) -> None:
        width = prediction.range_m.shape[1]
        within = prediction.within(s.mask_threshold)
        gated = projection.range_image(prediction.range_m, within)
        limited = projection.limit_range(gated, s.min_range, s.max_range)
        if self._wanted(self._pub_depth, s):
            self._pub_depth.publish(conversions.depth_to_msg(limited, header))
        if self._wanted(self._pub_mask, s):
            self._pub_mask.publish(conversions.mask_to_msg(within, header))
        if self._wanted(self._pub_points, s):
            cloud = projection.build_cloud(
                limited,
                rgb,
                s.cloud_stride,
                s.cloud_min_height,
                s.cloud_max_height,
                s.cloud_organized,
            )
            self._pub_points.publish(conversions.cloud_to_msg(cloud, header, s.cloud_organized))
        if self._wanted(self._pub_scan, s):
            beams = min(s.scan_beams, width)
            if beams < s.scan_beams and self._throttle(f"scan_beams {s.scan_beams} > {width}"):
                self.get_logger().warning(
                    f"scan_beams {s.scan_beams} exceeds the image width {width}; using {width}"
                )
            ranges, layout = projection.build_scan(
                gated, beams, s.scan_min_height, s.scan_max_height, s.min_range, s.max_range
            )
            self._pub_scan.publish(
                conversions.scan_to_msg(
                    ranges,
                    layout.angle_min,
                    layout.angle_increment,
                    s.min_range,
                    s.max_range,
                    header,
                )
            )
        if self._wanted(self._pub_colored, s):
            scale = min(float(s.mask_threshold), s.max_range)
            preview = add_colorbar(colorize_range(limited, scale), scale)
            self._pub_colored.publish(conversions.rgb_to_msg(preview, header))

    # -- diagnostics and shutdown ---------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        report = self.stats.report()
        msg = diagnostic_array(
            report,
            f"{self.get_fully_qualified_name()}: panoramic depth",
            self.backend,
            self.get_clock().now().to_msg(),
            idle=not self._settings.process_without_subscribers and not self._anyone_listens(),
        )
        try:
            self._pub_diagnostics.publish(msg)
        except Exception as err:  # during shutdown the context may be gone
            self.get_logger().debug(f"diagnostics not published: {err}")

    def destroy_node(self) -> None:
        self._slot.close()
        if self._worker.is_alive():
            self._worker.join(timeout=5.0)
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dap_node` and `python -m dap_ros.node`; returns the exit status."""
    rclpy.init(args=argv)
    node = None
    status = 0
    try:
        node = DapNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT / SIGTERM (e.g. from launch) are the normal ways to stop
    except (ParameterException, NameValidationException, ImportError, ValueError, OSError) as err:
        # Startup problems (bad parameter, missing weights, broken predictor): one clear line.
        rclpy.logging.get_logger(NODE_NAME).fatal(f"cannot start: {type(err).__name__}: {err}")
        status = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
