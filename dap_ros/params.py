"""The node's parameters: one table (name, default, description, range), one frozen settings object.

The table is the single place a parameter is defined. `declare_all` declares it on a node with
a ParameterDescriptor (description, numeric range, read-only unless it may change at run time);
`Settings` holds the values the worker reads; `Settings.replaced` checks a change, so the
parameter callback can refuse a bad combination and swap the object atomically otherwise.
Distances are metres and heights are z in the panorama frame (REP 103, z up, origin at the
camera centre).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from dap_ros.decode import MAX_PANORAMA_WIDTH, MIN_PANORAMA_HEIGHT

__all__ = ["BACKENDS", "PARAMETERS", "ParamSpec", "Settings", "declare_all", "read_settings"]

BACKENDS = ("auto", "torch", "onnxruntime", "tensorrt")
DEFAULT_MAX_INPUT_WIDTH = 4096  # pixels; see the max_input_width description
PRECISIONS = ("fp32", "bf16", "fp16")


@dataclass(frozen=True)
class ParamSpec:
    """One parameter: `bounds` is an inclusive numeric range, `choices` the allowed strings;
    `dynamic` parameters may change while the node runs, the others are read-only."""

    name: str
    default: bool | int | float | str | tuple[float, ...]
    description: str
    bounds: tuple[float, float] | None = None
    _: dataclasses.KW_ONLY
    choices: tuple[str, ...] | None = None
    dynamic: bool = False


PARAMETERS: tuple[ParamSpec, ...] = (
    # Model
    ParamSpec(
        "weights",
        "",
        "DAP weights: a directory (model.safetensors + config.json), a .safetensors file or an"
        " official .pth; empty = the shipped weights/dap_small",
    ),
    ParamSpec("backend", "auto", "inference backend", choices=BACKENDS),
    ParamSpec("device", "cpu", "torch device for the torch backend, e.g. cpu, cuda, cuda:1"),
    ParamSpec("precision", "fp32", "inference precision", choices=PRECISIONS),
    ParamSpec(
        "input_height",
        0,
        "model input height in pixels (multiple of 16; width = 2 x height); 0 = the size in"
        " the weights' config. Smaller is faster and coarser",
        (0, 4096),
    ),
    ParamSpec("threads", 0, "CPU threads for inference; 0 = the library default", (0, 256)),
    ParamSpec(
        "predictor",
        "",
        "'module:factory' returning an object with .predict(rgb) -> Prediction and .backend,"
        " used instead of the DAP runtime (tests, custom backends); empty = dap_core.runtime",
    ),
    # Input and QoS
    ParamSpec(
        "image_topic",
        "image",
        "input topic (sensor_msgs/Image rgb8, bgr8, rgba8, bgra8 or mono8; ERP, width = 2 x"
        " height); with compressed_input the node subscribes to <image_topic>/compressed",
    ),
    ParamSpec("compressed_input", False, "subscribe to CompressedImage (JPEG/PNG) instead"),
    ParamSpec("input_reliable", False, "RELIABLE input QoS instead of best-effort, depth 1"),
    ParamSpec(
        "max_input_width",
        DEFAULT_MAX_INPUT_WIDTH,
        "widest input panorama in pixels (height = width / 2); a wider frame is refused with"
        " one warning and the node goes on. 4096 (4096x2048: 25 MB rgb8 in, a 34 MB range"
        " image out) is the largest whose outputs the shipped Fast DDS profile"
        " (config/fastdds_large_data.xml, 64 MB shared-memory segment) was measured to"
        " deliver; every live-stream size of today's 360 cameras fits. Raising it is allowed"
        " (up to 16384), but 8192x4096 outputs (134 MB range image) were not delivered even"
        " with a 512 MB segment: see README, 'Large frames'",
        (2 * MIN_PANORAMA_HEIGHT, MAX_PANORAMA_WIDTH),
        dynamic=True,
    ),
    ParamSpec("output_reliable", False, "RELIABLE output QoS instead of sensor data"),
    # Outputs
    ParamSpec(
        "frame_id",
        "",
        "frame_id of every output (the panorama frame, REP 103); empty = the input's",
        dynamic=True,
    ),
    ParamSpec(
        "mask_threshold",
        100,
        "range mask in metres: pixels the model places beyond it are +inf (no return) in the"
        " range image, and drop out of the cloud and the scan. Only this head runs; it must be"
        " one of the weights' heads (10, 20, 50, 100 m for the released DAP; the shipped"
        " dap_small has the 100 m head only); a threshold without a head is refused, never"
        " approximated. A change builds that head's model once, on the worker. A stand-in"
        " predictor without heads compares the range with the threshold itself.",
        (1, 1000),
        dynamic=True,
    ),
    ParamSpec(
        "min_range",
        0.0,
        "range below which a pixel is 'too close' (−inf in the range image and scan, no point)",
        (0.0, 1000.0),
        dynamic=True,
    ),
    ParamSpec(
        "max_range",
        100.0,
        "range above which a pixel is 'no return' (+inf in the range image and scan, no point);"
        " the scan compares horizontal distance against min_range and max_range",
        (0.01, 1000.0),
        dynamic=True,
    ),
    ParamSpec(
        "cloud_stride", 2, "keep every n-th row and column in the cloud", (1, 64), dynamic=True
    ),
    ParamSpec(
        "cloud_organized",
        True,
        "organized cloud (image grid, NaN where no point) instead of a dense list of points",
        dynamic=True,
    ),
    ParamSpec(
        "cloud_min_height", -100.0, "lowest z of cloud points", (-1000.0, 1000.0), dynamic=True
    ),
    ParamSpec(
        "cloud_max_height", 100.0, "highest z of cloud points", (-1000.0, 1000.0), dynamic=True
    ),
    ParamSpec(
        "cloud_clearing_range",
        0.0,
        "0 = off. Otherwise no-return (+inf) pixels become cloud points at this range, capped"
        " at mask_threshold and max_range (the free space the model vouches for), so that Nav2"
        " obstacle/voxel layers, which clear only along rays to real points, clear open space;"
        " set the layer's obstacle_max_range below it so these points are not marked",
        (0.0, 1000.0),
        dynamic=True,
    ),
    ParamSpec(
        "scan_beams",
        360,
        "beams of the 360° scan (equal azimuth sectors; at most the image width)",
        (1, 16384),
        dynamic=True,
    ),
    ParamSpec("scan_min_height", -0.2, "lowest z of scan points", (-100.0, 100.0), dynamic=True),
    ParamSpec("scan_max_height", 0.2, "highest z of scan points", (-100.0, 100.0), dynamic=True),
    ParamSpec(
        "process_without_subscribers",
        False,
        "run inference and publish every output even when nobody subscribes",
        dynamic=True,
    ),
    ParamSpec("diagnostics_period", 1.0, "seconds between /diagnostics messages", (0.1, 60.0)),
    # Camera mount (dap_ros.mount): the levelled frame of the scan and the cloud's height band
    ParamSpec(
        "mount_rpy",
        (0.0, 0.0, 0.0),
        "[roll, pitch, yaw] radians: the camera's orientation in the levelled frame (URDF"
        " fixed-axis, p_level = R p_camera + mount_xyz; pitch > 0 = tilted nose down, roll"
        " pi = upside down). Heights of the scan band and the cloud crop are z of that frame",
        (-2.0 * math.pi, 2.0 * math.pi),
        dynamic=True,
    ),
    ParamSpec(
        "mount_xyz",
        (0.0, 0.0, 0.0),
        "[x, y, z] metres: the camera centre in the levelled frame (z = its height, where the"
        " scan's horizon lies)",
        (-1000.0, 1000.0),
        dynamic=True,
    ),
    ParamSpec(
        "level_frame_id",
        "",
        "frame_id of the levelled frame (scan, and the cloud with cloud_in_level_frame) when a"
        " mount or an IMU is set; empty = '<panorama frame>_level'. Without either, the scan is"
        " in the panorama frame",
        dynamic=True,
    ),
    ParamSpec(
        "cloud_in_level_frame",
        False,
        "publish cloud points in the levelled frame (rotated and shifted by the mount) instead"
        " of the panorama frame",
        dynamic=True,
    ),
    ParamSpec(
        "imu_topic",
        "",
        "sensor_msgs/Imu whose linear_acceleration tracks gravity: the mount's roll and pitch"
        " follow it (its yaw and mount_xyz stay); empty = the fixed mount_rpy",
    ),
    ParamSpec(
        "imu_rpy",
        (0.0, 0.0, 0.0),
        "[roll, pitch, yaw] radians: the IMU's orientation in the panorama frame",
        (-2.0 * math.pi, 2.0 * math.pi),
    ),
    ParamSpec(
        "fisheye_calibration",
        "",
        "dual-fisheye calibration YAML (config/fisheye/): layout side_by_side = image_topic"
        " holds both lenses; two_images = the lenses arrive on lens0_topic and lens1_topic,"
        " paired by stamp. Remapped to ERP; pixels no lens sees get NaN range; empty = ERP input",
    ),
    ParamSpec(
        "fisheye_erp_height",
        512,
        "height of the ERP built from fisheye input (width = 2 x height)",
        (16, 4096),
    ),
    ParamSpec(
        "lens0_topic",
        "lens0",
        "lens 0 images of a two_images calibration (x5_ros_driver: /x5/lens0); with"
        " compressed_input <lens0_topic>/compressed",
    ),
    ParamSpec("lens1_topic", "lens1", "lens 1 images of a two_images calibration (/x5/lens1)"),
    ParamSpec(
        "pair_tolerance_s",
        0.01,
        "two lens topics: largest stamp difference of a pair, seconds (0 = exact stamps; keep"
        " it below half the frame period). The outputs carry lens 0's stamp",
        (0.0, 1.0),
    ),
    ParamSpec(
        "max_pair_wait_s",
        0.2,
        "two lens topics: longest a lens frame waits for its partner before it is dropped and"
        " counted as unmatched (/diagnostics frames_unmatched)",
        (0.001, 10.0),
    ),
    ParamSpec(
        "imu_time_constant",
        0.5,
        "seconds: low-pass time constant of the gravity estimate (0 = newest sample only)",
        (0.0, 60.0),
    ),
    # Temporal stabilisation (dap_core.temporal)
    ParamSpec(
        "temporal_stabilization",
        False,
        "filter the range over time: align each frame's scale to a running reference and"
        " smooth per pixel, restarting where the change is real; off = every frame alone",
        dynamic=True,
    ),
    ParamSpec(
        "temporal_smoothing",
        0.3,
        "weight of a new frame where the range changed only by model jitter (1 = no smoothing)",
        (0.01, 1.0),
        dynamic=True,
    ),
    ParamSpec(
        "temporal_change_threshold",
        0.15,
        "change of log range (0.15 = 16 %) from which a pixel takes the new frame at once"
        " (motion, a new obstacle)",
        (0.05, 2.0),
        dynamic=True,
    ),
)


@dataclass(frozen=True)
class Settings:
    """Values of every parameter in PARAMETERS (same names); immutable, swapped as a whole."""

    weights: str
    backend: str
    device: str
    precision: str
    input_height: int
    threads: int
    predictor: str
    image_topic: str
    compressed_input: bool
    input_reliable: bool
    max_input_width: int
    output_reliable: bool
    frame_id: str
    mask_threshold: int
    min_range: float
    max_range: float
    cloud_stride: int
    cloud_organized: bool
    cloud_min_height: float
    cloud_max_height: float
    cloud_clearing_range: float
    scan_beams: int
    scan_min_height: float
    scan_max_height: float
    process_without_subscribers: bool
    diagnostics_period: float
    mount_rpy: tuple[float, ...]
    mount_xyz: tuple[float, ...]
    level_frame_id: str
    cloud_in_level_frame: bool
    imu_topic: str
    imu_rpy: tuple[float, ...]
    fisheye_calibration: str
    fisheye_erp_height: int
    lens0_topic: str
    lens1_topic: str
    pair_tolerance_s: float
    max_pair_wait_s: float
    imu_time_constant: float
    temporal_stabilization: bool
    temporal_smoothing: float
    temporal_change_threshold: float

    @classmethod
    def defaults(cls) -> Settings:
        return cls.from_mapping({spec.name: spec.default for spec in PARAMETERS})

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any]) -> Settings:
        """Settings from name -> value; raises ValueError naming the first bad value."""
        missing = [spec.name for spec in PARAMETERS if spec.name not in values]
        if missing:
            raise ValueError(f"missing parameters: {', '.join(missing)}")
        settings = cls(**{spec.name: _checked(spec, values[spec.name]) for spec in PARAMETERS})
        settings.check()
        return settings

    def replaced(self, changes: Mapping[str, Any]) -> Settings:
        """A copy with `changes` applied and checked (ValueError names the problem)."""
        unknown = sorted(set(changes) - set(_SPECS))
        if unknown:
            raise ValueError(f"unknown parameters: {', '.join(unknown)}")
        return Settings.from_mapping({**dataclasses.asdict(self), **changes})

    def check(self) -> None:
        """Cross-parameter rules; raises ValueError naming the problem."""
        for low, high in (
            ("min_range", "max_range"),
            ("cloud_min_height", "cloud_max_height"),
            ("scan_min_height", "scan_max_height"),
        ):
            if not getattr(self, low) < getattr(self, high):
                raise ValueError(
                    f"{low} ({getattr(self, low)}) must be below {high} ({getattr(self, high)})"
                )
        if self.input_height % 16:
            raise ValueError(f"input_height must be a multiple of 16, got {self.input_height}")
        if self.predictor and ":" not in self.predictor:
            raise ValueError(f"predictor must be 'module:factory', got '{self.predictor}'")

    @property
    def input_topic(self) -> str:
        return f"{self.image_topic}/compressed" if self.compressed_input else self.image_topic


_SPECS = {spec.name: spec for spec in PARAMETERS}


def _checked(spec: ParamSpec, value: Any) -> bool | int | float | str | tuple[float, ...]:
    """`value` converted to the spec's type and checked against its range or choices."""
    kind = type(spec.default)
    if kind is tuple:
        return _checked_vector(spec, value)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value = float(value)  # YAML "2" for a float parameter
    if type(value) is not kind:
        raise ValueError(f"{spec.name} must be {kind.__name__}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise ValueError(f"{spec.name} must be finite, got {value}")
    if spec.bounds is not None and not spec.bounds[0] <= value <= spec.bounds[1]:
        raise ValueError(
            f"{spec.name} must be in [{spec.bounds[0]}, {spec.bounds[1]}], got {value}"
        )
    if spec.choices is not None and value not in spec.choices:
        raise ValueError(f"{spec.name} must be one of {', '.join(spec.choices)}, got '{value}'")
    return value


def _checked_vector(spec: ParamSpec, value: Any) -> tuple[float, ...]:
    """A float array parameter (list, tuple or array.array) as a tuple of checked floats."""
    if isinstance(value, (str, bytes)) or not hasattr(value, "__len__"):
        raise ValueError(
            f"{spec.name} must be a list of {len(spec.default)} numbers, got {value!r}"
        )
    items = list(value)
    if len(items) != len(spec.default) or not all(
        isinstance(v, (int, float)) and not isinstance(v, bool) for v in items
    ):
        raise ValueError(
            f"{spec.name} must be a list of {len(spec.default)} numbers, got {value!r}"
        )
    element = dataclasses.replace(spec, default=0.0)
    return tuple(_checked(element, float(v)) for v in items)


def _descriptor(spec: ParamSpec):
    from rcl_interfaces.msg import (
        FloatingPointRange,
        IntegerRange,
        ParameterDescriptor,
        ParameterType,
    )

    types = {
        bool: ParameterType.PARAMETER_BOOL,
        int: ParameterType.PARAMETER_INTEGER,
        float: ParameterType.PARAMETER_DOUBLE,
        str: ParameterType.PARAMETER_STRING,
        tuple: ParameterType.PARAMETER_DOUBLE_ARRAY,
    }
    descriptor = ParameterDescriptor(
        name=spec.name,
        type=types[type(spec.default)],
        description=spec.description,
        read_only=not spec.dynamic,
    )
    if spec.bounds is not None and isinstance(spec.default, (float, tuple)):
        low, high = spec.bounds
        descriptor.floating_point_range = [FloatingPointRange(from_value=low, to_value=high)]
    elif spec.bounds is not None:
        low, high = (int(b) for b in spec.bounds)
        descriptor.integer_range = [IntegerRange(from_value=low, to_value=high, step=1)]
    if spec.choices is not None:
        descriptor.additional_constraints = "one of: " + ", ".join(spec.choices)
    return descriptor


def declare_all(node, specs: Iterable[ParamSpec] = PARAMETERS) -> None:
    """Declare every parameter on an rclpy node, with its descriptor."""
    for spec in specs:
        default = list(spec.default) if isinstance(spec.default, tuple) else spec.default
        node.declare_parameter(spec.name, default, _descriptor(spec))


def read_settings(node) -> Settings:
    """Settings from a node's declared parameters (ValueError names a bad value)."""
    return Settings.from_mapping(
        {spec.name: node.get_parameter(spec.name).value for spec in PARAMETERS}
    )
