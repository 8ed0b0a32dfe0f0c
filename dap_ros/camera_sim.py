"""A simulated 360° camera: renders a procedural scene along a smooth path and publishes it.

Publishes, with one stamp per frame and frame_id `frame_id`:
  image                  sensor_msgs/Image rgb8 ERP (or image/compressed JPEG with `compressed`);
                         with `fisheye_calibration` of layout side_by_side: the dual-fisheye
                         image instead
  lens0, lens1           with a two_images calibration: the two lens images (same stamp)
  ground_truth/depth     32FC1 true range in metres of the ERP (+inf sky, NaN invalid; REP 117)
A tilted camera (`mount_rpy`, the camera's orientation in the level world, URDF convention) and
the dual-fisheye lenses are rendered by resampling a level render `supersample` times finer
(dap_core.fisheye.erp_to_fisheye; colours bilinear, range nearest: a range then belongs to a
ray at most half a fine pixel away), so both views come from the same scene as the ERP.
Scenes come from dap_core.data.synthetic (make_scene, Scene.trajectory, Scene.render), so the
demo can compare the perception node's range with the truth. With `scene` "tour" (the
default) the camera visits indoor and outdoor scenes in turn, a new one every `scene_period`
seconds: scene k is make_scene(seed + k, "indoor" for even k, "outdoor" for odd k), and the
camera follows its path from the start. Rendering a 512x1024 frame takes longer than a camera
period on a CPU; `precompute_frames` renders that many frames at start-up and then replays
them in a loop at `rate_hz`. In a tour each scene of the loop gets scene_period x rate_hz
frames, but at most half of them, so that a loop of two frames or more holds both kinds.

Run: `python -m dap_ros.camera_sim --ros-args -p width:=1024 -p rate_hz:=10.0` or
`dap_camera_sim`; `ros2 launch dap_ros dap.launch.py sim:=true` starts it beside the node.
"""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import cv2
import numpy as np
import torch
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from dap_core.fisheye import CalibrationError, erp_to_fisheye, load_calibration
from dap_core.geometry import pixel_rays, rays_to_pixel, rpy_to_matrix
from dap_ros import conversions
from dap_ros.params import ParamSpec, declare_all
from dap_ros.run import spin_node

__all__ = ["SCENE_KINDS", "SIM_PARAMETERS", "CameraSim", "SceneTour", "main", "tour_scene"]

SCENE_KINDS = ("indoor", "outdoor")  # a tour alternates them, indoor first

SIM_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("width", 1024, "panorama width in pixels (height = width / 2)", (16, 8192)),
    ParamSpec("rate_hz", 10.0, "frames per second", (0.1, 120.0)),
    ParamSpec("compressed", False, "publish image/compressed (JPEG) instead of raw rgb8"),
    ParamSpec("jpeg_quality", 90, "JPEG quality", (1, 100)),
    ParamSpec(
        "scene",
        "tour",
        "scene kind; tour = indoor and outdoor scenes in turn, a new one every scene_period",
        choices=("tour", *SCENE_KINDS),
    ),
    ParamSpec("scene_period", 10.0, "seconds in each scene of a tour (wall clock)", (0.1, 86400.0)),
    ParamSpec(
        "seed", 0, "scene seed (same seed, same scene); tour scene k uses seed + k", (0, 2**31 - 1)
    ),
    ParamSpec("domain", "sim", "appearance domain", choices=("sim", "real_like")),
    ParamSpec("speed", 1.0, "time scale of the camera path (1 = real time)", (0.0, 100.0)),
    ParamSpec("frame_id", "camera_360", "frame_id of the panorama frame (REP 103)"),
    ParamSpec(
        "precompute_frames",
        0,
        "render this many frames at start and replay them in a loop; 0 = render live",
        (0, 10000),
    ),
    ParamSpec("publish_ground_truth", True, "also publish ground_truth/depth"),
    ParamSpec(
        "mount_rpy",
        (0.0, 0.0, 0.0),
        "[roll, pitch, yaw] radians: the camera's tilt in the level world (URDF convention)",
        (-2.0 * math.pi, 2.0 * math.pi),
    ),
    ParamSpec(
        "fisheye_calibration",
        "",
        "dual-fisheye calibration YAML (config/fisheye/): publish what its two lenses see"
        " instead of the ERP; empty = ERP",
    ),
    ParamSpec(
        "fisheye_width",
        0,
        "width of the (side-by-side or per-lens) fisheye image; 0 = the calibration's size",
        (0, 8192),
    ),
    ParamSpec("supersample", 2, "finer level render for tilted and fisheye views", (1, 4)),
)


@dataclass(frozen=True)
class SimSettings:
    width: int
    rate_hz: float
    compressed: bool
    jpeg_quality: int
    scene: str
    scene_period: float
    seed: int
    domain: str
    speed: float
    frame_id: str
    precompute_frames: int
    publish_ground_truth: bool
    mount_rpy: tuple[float, ...] = (0.0, 0.0, 0.0)
    fisheye_calibration: str = ""
    fisheye_width: int = 0
    supersample: int = 2

    @property
    def height(self) -> int:
        return self.width // 2


@dataclass(frozen=True)
class Frame:
    """One rendered panorama: rgb uint8 [H, W, 3]; range_m float32 [H, W] (REP 117 coded);
    fisheye: the lens image(s) of the same view when a calibration is given, else ()."""

    rgb: np.ndarray
    range_m: np.ndarray
    fisheye: tuple[np.ndarray, ...] = ()


def tour_scene(seed: int, index: int) -> tuple[int, str]:
    """(seed, kind) of scene `index` (0, 1, ...) of a tour: indoor and outdoor in turn."""
    return seed + index, SCENE_KINDS[index % len(SCENE_KINDS)]


class SceneTour:
    """Which scene the camera is in, and the time (seconds) along that scene's path.

    settings.scene "tour": scene k (see `tour_scene`) for wall-clock seconds
    [k, k + 1) x scene_period, its path starting at 0 each time; "indoor" / "outdoor": one scene
    for ever. Path time runs `speed` times faster than wall-clock time.
    """

    def __init__(self, settings: SimSettings) -> None:
        self.settings = settings
        self._scenes: dict[int, object] = {}

    def describe(self, index: int) -> str:
        seed, kind = self.seed_and_kind(index)
        return f"{kind} scene (seed {seed})"

    def seed_and_kind(self, index: int) -> tuple[int, str]:
        s = self.settings
        return tour_scene(s.seed, index) if s.scene == "tour" else (s.seed, s.scene)

    def scene(self, index: int):
        """The Scene of `index`, built on first use; only the newest two are kept."""
        if index not in self._scenes:
            from dap_core.data.synthetic import make_scene  # the renderer is only needed here

            self._scenes[index] = make_scene(*self.seed_and_kind(index))
            for old in [k for k in self._scenes if k < index - 1]:
                del self._scenes[old]
        return self._scenes[index]

    def at(self, elapsed_s: float) -> tuple[int, float]:
        """(scene index, path time) at wall-clock `elapsed_s` seconds since the start."""
        s = self.settings
        if s.scene != "tour":
            return 0, elapsed_s * s.speed
        index = int(elapsed_s // s.scene_period)
        return index, (elapsed_s - index * s.scene_period) * s.speed

    def loop(self, frames: int) -> list[tuple[int, float]]:
        """(scene index, path time) of each frame of a pre-rendered loop of `frames` frames."""
        s = self.settings
        if s.scene != "tour":
            return [(0, k / s.rate_hz * s.speed) for k in range(frames)]
        per_scene = max(1, min(round(s.scene_period * s.rate_hz), math.ceil(frames / 2)))
        return [(k // per_scene, (k % per_scene) / s.rate_hz * s.speed) for k in range(frames)]


def render_frame(
    scene, t_seconds: float, settings: SimSettings, noise_seed: int, calibration=None
) -> Frame:
    """The scene seen from its camera path at time t (seconds), tilted by the settings'
    mount_rpy, with the lens images of `calibration` (dap_core.fisheye) when given."""
    position, yaw = scene.trajectory(t_seconds)
    tilt = rpy_to_matrix(*settings.mount_rpy)
    if calibration is None and np.array_equal(tilt, np.eye(3)):
        sample = scene.render(
            position, yaw, settings.height, settings.width, settings.domain, noise_seed
        )
        range_m = np.where(sample.valid, sample.range_m, np.float32(np.nan)).astype(np.float32)
        return Frame(np.ascontiguousarray(sample.rgb, dtype=np.uint8), range_m)
    fine = settings.supersample
    sample = scene.render(
        position, yaw, fine * settings.height, fine * settings.width, settings.domain, noise_seed
    )
    fine_range = np.where(sample.valid, sample.range_m, np.float32(np.nan)).astype(np.float32)
    fine_rgb = np.ascontiguousarray(sample.rgb, dtype=np.uint8)
    if not np.array_equal(tilt, np.eye(3)):  # the tilted camera's view, still fine
        map_x, map_y = _tilted_maps(fine * settings.height, fine * settings.width, tilt)
        fine_rgb = cv2.remap(fine_rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
        fine_range = cv2.remap(
            fine_range, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_WRAP
        )
    map_x, map_y = _tilted_maps(settings.height, settings.width, np.eye(3), fine)
    rgb = cv2.remap(fine_rgb, map_x, map_y, cv2.INTER_LINEAR, borderMode=cv2.BORDER_WRAP)
    range_m = cv2.remap(fine_range, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_WRAP)
    views = () if calibration is None else erp_to_fisheye(fine_rgb, calibration)
    return Frame(rgb, range_m, views)


def _tilted_maps(height: int, width: int, tilt: np.ndarray, fine: int = 1):
    """cv2.remap maps reading, for each pixel of an H x W camera ERP, the level ERP of
    `fine` times the size: the camera's ray turned into the level world (p = R p_camera)."""
    rays = pixel_rays(height, width, dtype=torch.float64).numpy() @ tilt.T
    uv = rays_to_pixel(rays, fine * height, fine * width)  # centres on k + 0.5
    map_x = (uv[..., 0] - 0.5).astype(np.float32)
    map_y = np.clip(uv[..., 1] - 0.5, 0.0, fine * height - 1.0).astype(np.float32)
    return map_x, map_y


class CameraSim(Node):
    """Publishes rendered panoramas at `rate_hz`, stamped with the ROS clock."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("camera_sim", **node_kwargs)
        declare_all(self, SIM_PARAMETERS)
        values = {spec.name: self.get_parameter(spec.name).value for spec in SIM_PARAMETERS}
        values["mount_rpy"] = tuple(float(v) for v in values["mount_rpy"])
        self.settings = SimSettings(**values)
        if self.settings.width % 2:
            raise ValueError(f"width must be even (height = width / 2), got {self.settings.width}")
        self.tour = SceneTour(self.settings)
        self.calibration = None
        if self.settings.fisheye_calibration:
            calibration = load_calibration(self.settings.fisheye_calibration)
            if self.settings.fisheye_width:
                width = self.settings.fisheye_width
                ref_w, ref_h = calibration.image_size
                calibration = calibration.for_image(width, width * ref_h // ref_w)
            self.calibration = calibration
        self._frames = []
        loop = self.tour.loop(self.settings.precompute_frames)
        for k, (index, t) in enumerate(loop):
            frame = render_frame(self.tour.scene(index), t, self.settings, k, self.calibration)
            self._frames.append(frame)
        if loop:
            counts: dict[int, int] = {}
            for index, _ in loop:
                counts[index] = counts.get(index, 0) + 1
            parts = ", ".join(f"{self.tour.describe(i)}: {n}" for i, n in counts.items())
            self.get_logger().info(f"pre-rendered {len(loop)} frames ({parts})")
        self._scene_index: int | None = None
        image_type = CompressedImage if self.settings.compressed else Image
        topic = "image/compressed" if self.settings.compressed else "image"
        self._pub_image = self.create_publisher(image_type, topic, qos_profile_sensor_data)
        self._pub_lenses = ()
        if self.calibration is not None and self.calibration.layout == "two_images":
            suffix = "/compressed" if self.settings.compressed else ""
            self._pub_lenses = tuple(
                self.create_publisher(image_type, f"lens{k}{suffix}", qos_profile_sensor_data)
                for k in range(2)
            )
        self._pub_truth = self.create_publisher(
            Image, "ground_truth/depth", qos_profile_sensor_data
        )
        self._start = time.monotonic()
        self._count = 0
        self._timer = self.create_timer(1.0 / self.settings.rate_hz, self._tick)
        what = (
            f"a tour of indoor and outdoor scenes ({self.settings.scene_period:g} s each)"
            if self.settings.scene == "tour"
            else self.tour.describe(0)
        )
        self.get_logger().info(
            f"publishing {what} at {self.settings.width}x{self.settings.height}, "
            f"{self.settings.rate_hz} Hz on '{self._pub_image.topic_name}'"
        )

    def _tick(self) -> None:
        s = self.settings
        if self._frames:
            frame = self._frames[self._count % len(self._frames)]
        else:
            index, t = self.tour.at(time.monotonic() - self._start)
            if index != self._scene_index:
                self._scene_index = index
                self.get_logger().info(f"scene {index}: {self.tour.describe(index)}")
            frame = render_frame(self.tour.scene(index), t, s, self._count, self.calibration)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=s.frame_id)
        images = frame.fisheye or (frame.rgb,)
        publishers = self._pub_lenses or (self._pub_image,)
        for publisher, pixels in zip(publishers, images, strict=True):
            if s.compressed:
                publisher.publish(conversions.rgb_to_compressed(pixels, header, s.jpeg_quality))
            else:
                publisher.publish(conversions.rgb_to_msg(pixels, header))
        if s.publish_ground_truth:
            self._pub_truth.publish(conversions.depth_to_msg(frame.range_m, header))
        self._count += 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dap_camera_sim` and `python -m dap_ros.camera_sim`."""
    errors = (ParameterException, ImportError, ValueError, CalibrationError)
    return spin_node(CameraSim, argv, "camera_sim", errors)


if __name__ == "__main__":
    sys.exit(main())
