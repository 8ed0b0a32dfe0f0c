"""The DAP perception node: one 360° ERP image in; range, range mask, cloud, scan and preview out.

Topics (relative names, so a namespace or remapping places them):
  in   image (sensor_msgs/Image) or image/compressed (CompressedImage), ERP, width = 2 x height;
       with `fisheye_calibration` a dual-fisheye image (side_by_side) or, for a two_images
       calibration, lens0 and lens1 (image_topic unused), paired by stamp within
       pair_tolerance_s, a frame waiting at most max_pair_wait_s (dap_ros.lens_pairing)
  out  depth/image       32FC1 range in metres along each pixel's ray (not REP 118 z-depth);
                         +inf beyond the range mask / max_range (no return), −inf closer than
                         min_range, NaN invalid (REP 117)
       range_mask/image  mono8, 255 where the model places the pixel within mask_threshold
       points            PointCloud2 x, y, z, rgb in the panorama frame (REP 103)
       scan              LaserScan, 360°, from the points inside a height band
       depth/colored     rgb8 preview with a colour bar
       /diagnostics      rates, latency, dropped frames, backend
Every output carries the input's stamp (of lens 0 for a lens pair); frame_id is the `frame_id`
parameter or the input's.

Threads: the subscription callback only stores the newest frame (FrameSlot); a worker thread
decodes, runs the predictor and publishes; frames replaced while it works are dropped and
counted. With nobody subscribed to any output no inference runs (unless
process_without_subscribers), and only outputs with subscribers are built. The model computes
depth and the one range-mask head of `mask_threshold` (dap_ros.predictors); a new threshold's
predictor is built by the worker when first needed, then kept. Full-size outputs are written
in place into messages kept between frames (rclpy copies a message while publishing it).
Bad input is logged (throttled, naming the problem) and skipped.

Run: `python -m dap_ros.node --ros-args --params-file config/dap.yaml`, `dap_node`, or
`ros2 launch dap_ros dap.launch.py`.
"""

from __future__ import annotations

import dataclasses
import math
import sys
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rcl_interfaces.msg import SetParametersResult
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.node import Node
from rclpy.qos import (
    HistoryPolicy,
    QoSProfile,
    ReliabilityPolicy,
    qos_profile_sensor_data,
)
from sensor_msgs.msg import CompressedImage, Image, Imu, LaserScan, PointCloud2
from std_msgs.msg import Header

from dap_core.fisheye import FisheyeFrames
from dap_core.prediction import Prediction
from dap_core.visualize import add_colorbar, colorize_range
from dap_ros import conversions, projection
from dap_ros.diagnostics import FrameStats, diagnostic_array
from dap_ros.frame_slot import FrameSlot
from dap_ros.lens_pairing import LensPair, LensPairer
from dap_ros.mount import MountState
from dap_ros.params import PARAMETERS, Settings, declare_all, read_settings
from dap_ros.predictors import HeadPredictors, PredictorLike, head_predictors
from dap_ros.run import spin_node
from dap_ros.temporal_filter import TemporalFilter

__all__ = ["NODE_NAME", "DapNode", "PredictorLike", "main"]

NODE_NAME = "dap"
PARAMETER_NAMES = frozenset(spec.name for spec in PARAMETERS)
WARN_EVERY_S = 5.0  # a repeated problem is logged at most once per this many seconds
_WORKER_POLL_S = 0.1
_FRAME_TIMEOUT_S = 60.0  # longest wait for the frame in flight when topics are removed
_LENS_QUEUE = 8  # lens frames waiting for a partner, per lens (a memory bound; the wait rules)


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
    """Panoramic depth node.

    Models: `predictor` injects one object that serves every mask threshold;
    `predictor_factory(threshold)` builds a predictor for one range-mask head, called once
    per threshold in use, with `mask_heads` the thresholds it accepts (None: any). Without
    either, the `predictor` / `weights` parameters decide (see dap_ros.predictors).
    """

    def __init__(
        self,
        predictor: PredictorLike | None = None,
        *,
        predictor_factory: Callable[[int], PredictorLike] | None = None,
        mask_heads: Sequence[int] | None = None,
        **node_kwargs: Any,
    ) -> None:
        super().__init__(NODE_NAME, **node_kwargs)
        self._init_pipeline()
        self._load_models(predictor, predictor_factory, mask_heads)
        self._open_io()

    # -- the pieces a managed node (dap_ros.lifecycle_node) calls from its transitions ----

    def _init_pipeline(self) -> None:
        """Parameters, counters and the buffers kept between frames; no model, no topics."""
        declare_all(self)
        self._settings = read_settings(self)
        self._heads: HeadPredictors | None = None
        self._predictor: PredictorLike | None = None
        self._head = self._settings.mask_threshold
        self._failed_heads: dict[int, str] = {}  # threshold -> why its predictor did not build
        self.backend = "none"
        self.stats = FrameStats()
        self._slot: FrameSlot[Image | CompressedImage | LensPair] = FrameSlot()
        self._slot.close()  # opened by _open_io
        self._worker: threading.Thread | None = None
        self._subscription = None
        self._outputs: tuple = ()
        self._throttle = _Throttle(WARN_EVERY_S)
        self._logged_first_frame = False
        self._workspace = projection.Workspace()  # the worker's scratch arrays
        self._temporal = TemporalFilter()  # temporal_stabilization (worker thread only)
        self._depth_out = conversions.ImageBuffer("32FC1")
        self._mask_out = conversions.ImageBuffer("mono8")
        self._cloud_out = conversions.CloudBuffer()
        self._preview_out = conversions.ImageBuffer("rgb8")
        self._preview_bar: tuple | None = None  # (height, width, scale) of the bar drawn
        self._publish_s = 0.0  # time in publish() during the current frame
        # Milliseconds of the last processed frame: decode, inference, outputs (building the
        # messages), publish (rclpy + DDS). Read by bench/bench_node_host.py.
        self.last_frame_ms: dict[str, float] = {}
        self._mounting = MountState(self._settings)  # camera pose in the levelled frame
        self._fisheye = None  # side-by-side dual-fisheye input, remapped to ERP
        if self._settings.fisheye_calibration:
            self._fisheye = FisheyeFrames(
                self._settings.fisheye_calibration, self._settings.fisheye_erp_height
            )
        self._imu_subscription = None
        self._lens_subscriptions: tuple = ()
        self._pairer: LensPairer | None = None  # two lens topics: stamp matching
        self._pair_lock = threading.Lock()  # lens callbacks and the diagnostics timer
        self.add_on_set_parameters_callback(self._on_set_parameters)

    def _load_models(
        self,
        predictor: PredictorLike | None = None,
        predictor_factory: Callable[[int], PredictorLike] | None = None,
        mask_heads: Sequence[int] | None = None,
    ) -> None:
        """Build the predictors (load the weights); raises on bad weights or arguments."""
        if predictor is not None and predictor_factory is not None:
            raise ValueError("give a predictor or a predictor_factory, not both")
        if predictor is not None:
            heads = HeadPredictors.fixed(predictor)
        elif predictor_factory is not None:
            heads = HeadPredictors(predictor_factory, mask_heads)
        else:
            heads = head_predictors(self._settings)
        # The first head is built now, so that bad weights stop the start with a clear error.
        self._head = self._settings.mask_threshold
        self._predictor = heads.get(self._head)
        self._heads = heads
        self._failed_heads = {}
        self.backend = str(self._predictor.backend)

    def _unload_models(self) -> None:
        """Drop the predictors (the model's memory goes with the last reference)."""
        self._heads = self._predictor = None
        self.backend = "none"

    def _open_io(self) -> None:
        """Create publishers, the subscription, the diagnostics timer; start the worker."""
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
        self._slot = FrameSlot()
        in_type = CompressedImage if s.compressed_input else Image
        if self._fisheye is not None and self._fisheye.two_images:
            self._open_lenses(s, in_type, in_qos)
            listening = " and ".join(f"'{sub.topic_name}'" for sub in self._lens_subscriptions)
        else:
            self._subscription = self.create_subscription(
                in_type, s.input_topic, self._on_image, in_qos
            )
            listening = f"'{self._subscription.topic_name}'"
        if s.imu_topic:
            self._imu_subscription = self.create_subscription(
                Imu, s.imu_topic, self._on_imu, qos_profile_sensor_data
            )
        self._diagnostics_timer = self.create_timer(s.diagnostics_period, self._publish_diagnostics)
        self._worker = threading.Thread(target=self._work, name="dap-worker", daemon=True)
        self._worker.start()
        self.get_logger().info(
            f"ready: {in_type.__name__} on {listening}, backend "
            f"{self.backend}, running {self._heads.describe(s.mask_threshold)}, cloud stride "
            f"{s.cloud_stride}"
        )

    def _open_lenses(self, s: Settings, in_type: type, in_qos: QoSProfile) -> None:
        """Subscribe to both lens topics; their frames meet in a fresh LensPairer."""
        suffix = "/compressed" if s.compressed_input else ""
        self._pairer = LensPairer(
            round(s.pair_tolerance_s * 1e9),
            s.max_pair_wait_s,
            _LENS_QUEUE,
            on_unmatched=self._on_unmatched,
        )
        # Depth 2: the partner of a frame must not be pushed out by the next one of its lens.
        lens_qos = QoSProfile(depth=2, history=in_qos.history, reliability=in_qos.reliability)
        self._lens_subscriptions = tuple(
            self.create_subscription(
                in_type, topic + suffix, lambda msg, lens=lens: self._on_lens(lens, msg), lens_qos
            )
            for lens, topic in enumerate((s.lens0_topic, s.lens1_topic))
        )
        self._subscription = self._lens_subscriptions[0]

    def _close_io(self) -> None:
        """Stop the worker (after its current frame) and remove every topic and the timer."""
        self._slot.close()
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=_FRAME_TIMEOUT_S)
        self._worker = None
        if self._subscription is None:
            return
        for subscription in self._lens_subscriptions or (self._subscription,):
            self.destroy_subscription(subscription)
        self._lens_subscriptions, self._pairer = (), None
        if self._imu_subscription is not None:
            self.destroy_subscription(self._imu_subscription)
            self._imu_subscription = None
        self.destroy_timer(self._diagnostics_timer)
        for publisher in (*self._outputs, self._pub_diagnostics):
            self.destroy_publisher(publisher)
        self._subscription, self._outputs = None, ()

    # -- parameters -----------------------------------------------------------------------

    @property
    def settings(self) -> Settings:
        return self._settings

    def _on_set_parameters(self, parameters):
        # Parameters rclpy declares itself (use_sim_time, ...) pass through untouched.
        changes = {p.name: p.value for p in parameters if p.name in PARAMETER_NAMES}
        try:
            updated = self._settings.replaced(changes)
            if "mask_threshold" in changes and self._heads is not None:
                self._heads.check(updated.mask_threshold)  # the weights must have that head
        except ValueError as err:
            return SetParametersResult(successful=False, reason=str(err))
        if "mask_threshold" in changes:
            self._failed_heads.pop(updated.mask_threshold, None)  # asked again: try again
        self._settings = updated  # one reference swap: the worker sees old or new, never a mix
        return SetParametersResult(successful=True)

    def _predictor_for(self, threshold: int) -> PredictorLike:
        """The predictor of `threshold`'s head; built here (worker thread) on first use."""
        if threshold == self._head:
            return self._predictor
        if threshold in self._failed_heads:
            raise RuntimeError(self._failed_heads[threshold])
        fresh = not self._heads.built(threshold)
        if fresh:
            self.get_logger().info(f"mask_threshold {threshold} m: building its predictor")
        started = time.monotonic()
        try:
            predictor = self._heads.get(threshold)
        except Exception as err:  # e.g. an export or a backend that fails for this head
            reason = f"no predictor for mask_threshold {threshold} m: {type(err).__name__}: {err}"
            self._failed_heads[threshold] = reason
            raise RuntimeError(reason) from err
        self._predictor, self._head = predictor, threshold
        self.backend = str(predictor.backend)
        built = f" (built in {time.monotonic() - started:.1f} s)" if fresh else ""
        self.get_logger().info(f"running {self._heads.describe(threshold)}{built}")
        return predictor

    # -- input ----------------------------------------------------------------------------

    def _on_image(self, msg: Image | CompressedImage | LensPair) -> None:
        self.stats.count("received")
        if not self._settings.process_without_subscribers and not self._anyone_listens():
            self.stats.count("idle")
            return
        if self._slot.put(msg):
            self.stats.count("dropped")

    def _on_lens(self, lens: int, msg: Image | CompressedImage) -> None:
        """A frame of one lens topic: the pair it completes goes to the worker."""
        self.stats.count("lens_received")
        if not self._settings.process_without_subscribers and not self._anyone_listens():
            self.stats.count("idle")
            return
        with self._pair_lock:
            pairer = self._pairer
            if pairer is None:  # topics being removed
                return
            pair = pairer.add(lens, _stamp_ns(msg.header), msg, time.monotonic())
        if pair is not None:
            self._on_image(pair)

    def _on_unmatched(self, lens: int, reason: str) -> None:
        other = 1 - lens
        why = {
            "expired": f"no lens{other} frame within pair_tolerance_s came in max_pair_wait_s",
            "overflow": f"{_LENS_QUEUE} lens{lens} frames were already waiting",
            "stale": "a newer pair was published first",
            "late": "it is older than the last pair published",
            "rewind": "the stamps went back (bag loop, restarted clock): pairing restarted",
        }[reason]
        self._problem("unmatched", f"lens{lens} frame unmatched: {why}")

    def _on_imu(self, msg: Imu) -> None:
        a = msg.linear_acceleration
        if not self._mounting.on_acceleration((a.x, a.y, a.z), _stamp_ns(msg.header) / 1e9):
            self.stats.count("imu_rejected")

    def _level_header(self, s: Settings, header: Header) -> Header:
        """The header of an output in the levelled frame (the input's when nothing levels)."""
        if not MountState.levelled(s):
            return header
        return Header(stamp=header.stamp, frame_id=MountState.level_frame_id(s, header.frame_id))

    def _anyone_listens(self) -> bool:
        return any(pub.get_subscription_count() > 0 for pub in self._outputs)

    def _work(self) -> None:
        while not self._slot.closed:
            taken = self._slot.take(_WORKER_POLL_S)
            if taken is not None:
                self.process(*taken)

    # -- one frame ------------------------------------------------------------------------

    def process(
        self, msg: Image | CompressedImage | LensPair, arrived: float | None = None
    ) -> bool:
        """Decode, infer and publish one frame (an image or a lens pair); True when its
        outputs were published.

        Never raises: bad input and failures are counted and logged (throttled). Stage times
        of the frame are left in `last_frame_ms`.
        """
        started = time.monotonic() if arrived is None else arrived
        taken = time.perf_counter()
        s = self._settings
        images = (msg.lens0, msg.lens1) if isinstance(msg, LensPair) else (msg,)
        msg = images[0]  # its header is the frame's (lens 0's for a pair)
        try:
            erp = len(images) == 1  # lens images of a pair have their own aspect
            decoded = [
                conversions.compressed_to_rgb(image, s.max_input_width, erp=erp)
                if isinstance(image, CompressedImage)
                else conversions.image_to_rgb(image, s.max_input_width, erp=erp)
                for image in images
            ]
        except conversions.FrameTooLargeError as err:
            self._problem(
                "bad_input", f"refused input: {err} (the parameter max_input_width raises it)"
            )
            return False
        except conversions.InputError as err:
            self._problem("bad_input", f"bad input image: {err}")
            return False
        rgb = decoded[0]
        unseen = None
        if self._fisheye is not None:
            try:
                rgb, unseen = self._fisheye.to_erp(*decoded)
            except ValueError as err:
                self._problem("bad_input", f"bad fisheye image: {err}")
                return False
        try:
            predictor = self._predictor_for(s.mask_threshold)
            before = time.perf_counter()
            prediction = predictor.predict(rgb)
            if unseen is not None:  # no lens sees these pixels: invalid (REP 117 NaN)
                range_m = np.where(unseen, np.float32(np.nan), prediction.range_m)
                prediction = dataclasses.replace(prediction, range_m=range_m)
            after = time.perf_counter()
            if prediction.range_m.shape != rgb.shape[:2]:
                raise RuntimeError(
                    f"predictor returned range {prediction.range_m.shape} for an image "
                    f"{rgb.shape[:2]}"
                )
            prediction = self._temporal(s, prediction)
            header = Header(stamp=msg.header.stamp, frame_id=s.frame_id or msg.header.frame_id)
            self._publish(s, header, rgb, prediction)
        except Exception as err:  # the node must outlive any model or DDS error
            self._problem("failed", f"frame failed: {type(err).__name__}: {err}")
            return False
        done = time.perf_counter()
        inference_ms = (after - before) * 1e3
        self.last_frame_ms = {
            "decode": (before - taken) * 1e3,
            "inference": inference_ms,
            "outputs": (done - after - self._publish_s) * 1e3,
            "publish": self._publish_s * 1e3,
        }
        latency_ms = (time.time_ns() - _stamp_ns(msg.header)) / 1e6
        self.stats.processed_frame(latency_ms, (done - taken) * 1e3, inference_ms)
        if not self._logged_first_frame:
            self._logged_first_frame = True
            self.get_logger().info(
                f"first frame {rgb.shape[1]}x{rgb.shape[0]} processed in "
                f"{(time.monotonic() - started) * 1e3:.0f} ms (inference {inference_ms:.0f} ms)"
            )
        return True

    def _problem(self, counter: str, text: str) -> None:
        self.stats.count(counter, text)
        if self._throttle(text):
            self.get_logger().warning(text)

    def _wanted(self, publisher, s: Settings) -> bool:
        return s.process_without_subscribers or publisher.get_subscription_count() > 0

    def _publish(self, s: Settings, header: Header, rgb, prediction: Prediction) -> None:
        """Build every wanted output, then publish them all, timing the publish() calls.

        Building first keeps subscribers (woken by the first message) from competing with the
        building for the CPU and memory bandwidth.
        """
        built = self._build_outputs(s, header, rgb, prediction)
        start = time.perf_counter()
        for publisher, msg in built:
            publisher.publish(msg)
        self._publish_s = time.perf_counter() - start  # rclpy + DDS: copying, serializing

    def _build_outputs(self, s: Settings, header: Header, rgb, prediction: Prediction) -> list:
        """(publisher, message) for each output that has a subscriber (all of them with
        process_without_subscribers). Full-size outputs are written in place into messages
        kept between frames; the range image is computed once and shared by cloud and preview.
        """
        depth, mask, points, scan, colored = (self._wanted(p, s) for p in self._outputs)
        height, width = prediction.range_m.shape
        ws = self._workspace
        built = []
        within = projection.within_mask(
            prediction, s.mask_threshold, out=ws.get("within", (height, width), bool)
        )
        if mask:
            pixels = self._mask_out.frame(header, height, width)
            np.multiply(within.view(np.uint8), np.uint8(255), out=pixels)
            built.append((self._pub_mask, self._mask_out.msg))
        if scan:
            built.append((self._pub_scan, self._scan_message(s, header, prediction, within)))
        if not (depth or points or colored):
            return built
        range_img = projection.range_image(
            prediction.range_m,
            within,
            s.min_range,
            s.max_range,
            out=self._depth_out.frame(header, height, width),
            workspace=ws,
        )
        if depth:
            built.append((self._pub_depth, self._depth_out.msg))
        if points:
            built.append((self._pub_points, self._cloud_message(s, header, range_img, rgb)))
        if colored:
            built.append((self._pub_colored, self._preview_message(s, header, range_img)))
        return built

    def _scan_message(self, s: Settings, header: Header, prediction, within) -> LaserScan:
        width = prediction.range_m.shape[1]
        beams = min(s.scan_beams, width)
        if beams < s.scan_beams and self._throttle(f"scan_beams {s.scan_beams} > {width}"):
            self.get_logger().warning(
                f"scan_beams {s.scan_beams} exceeds the image width {width}; using {width}"
            )
        ranges, layout = projection.build_scan(
            prediction.range_m,
            beams,
            s.scan_min_height,
            s.scan_max_height,
            s.min_range,
            s.max_range,
            within=within,
            mount=self._mounting.mount(s),
        )
        return conversions.scan_to_msg(
            ranges,
            layout.angle_min,
            layout.angle_increment,
            s.min_range,
            s.max_range,
            self._level_header(s, header),
        )

    def _cloud_message(self, s: Settings, header: Header, range_img, rgb) -> PointCloud2:
        stride = s.cloud_stride
        band = (s.cloud_min_height, s.cloud_max_height)
        # A no-return pixel is free space only up to the mask threshold (beyond-mask pixels)
        # or max_range (cut pixels): clearing points never go farther than the model vouches.
        clearing = min(s.cloud_clearing_range, float(s.mask_threshold), s.max_range)
        options = {
            "clearing_range": clearing,
            "workspace": self._workspace,
            "mount": self._mounting.mount(s),
            "in_level_frame": s.cloud_in_level_frame,
        }
        if s.cloud_in_level_frame:
            header = self._level_header(s, header)
        if not s.cloud_organized:  # the point count changes every frame: a new message
            cloud = projection.build_cloud(range_img, rgb, stride, *band, False, **options)
            return conversions.cloud_to_msg(cloud, header, False)
        height, width = (-(-n // stride) for n in range_img.shape)  # ceil(n / stride)
        out = self._cloud_out.frame(header, height, width)
        projection.build_cloud(range_img, rgb, stride, *band, True, out=out, **options)
        return self._cloud_out.msg

    def _preview_message(self, s: Settings, header: Header, range_img) -> Image:
        height, width = range_img.shape
        scale = min(float(s.mask_threshold), s.max_range)
        key = (height, width, scale)
        if key != self._preview_bar:  # the colour bar changes only with the size or scale
            framed = add_colorbar(np.zeros((height, width, 3), np.uint8), scale)
            self._preview_out.frame(header, *framed.shape[:2])[height:] = framed[height:]
            self._preview_bar = key
        pixels = self._preview_out.frame(header, self._preview_out.pixels.shape[0], width)
        colorize_range(range_img, scale, out=pixels[:height])
        return self._preview_out.msg

    # -- diagnostics and shutdown ---------------------------------------------------------

    def _publish_diagnostics(self) -> None:
        with self._pair_lock:
            if self._pairer is not None:  # a silent lens: its partner's frames expire here
                self._pairer.expire(time.monotonic())
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
        if self._worker is not None and self._worker.is_alive():
            self._worker.join(timeout=5.0)
        super().destroy_node()


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dap_node` and `python -m dap_ros.node`; returns the exit status."""
    startup_errors = (ParameterException, NameValidationException, ImportError, ValueError, OSError)
    return spin_node(DapNode, argv, NODE_NAME, startup_errors)


if __name__ == "__main__":
    sys.exit(main())
