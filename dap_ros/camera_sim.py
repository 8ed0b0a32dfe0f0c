"""A simulated 360° camera: renders a procedural scene along a smooth path and publishes it.

Publishes, with one stamp per frame and frame_id `frame_id`:
  image                  sensor_msgs/Image rgb8 ERP (or image/compressed JPEG with `compressed`)
  ground_truth/depth     32FC1 true range in metres (+inf sky, NaN invalid; REP 117)
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

import numpy as np
from rclpy.exceptions import ParameterException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

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

    @property
    def height(self) -> int:
        return self.width // 2


@dataclass(frozen=True)
class Frame:
    """One rendered panorama: rgb uint8 [H, W, 3]; range_m float32 [H, W] (REP 117 coded)."""

    rgb: np.ndarray
    range_m: np.ndarray


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


def render_frame(scene, t_seconds: float, settings: SimSettings, noise_seed: int) -> Frame:
    """The scene seen from its camera path at time t (seconds)."""
    position, yaw = scene.trajectory(t_seconds)
    sample = scene.render(
        position, yaw, settings.height, settings.width, settings.domain, noise_seed
    )
    range_m = np.where(sample.valid, sample.range_m, np.float32(np.nan)).astype(np.float32)
    return Frame(np.ascontiguousarray(sample.rgb, dtype=np.uint8), range_m)


class CameraSim(Node):
    """Publishes rendered panoramas at `rate_hz`, stamped with the ROS clock."""

    def __init__(self, **node_kwargs) -> None:
        super().__init__("camera_sim", **node_kwargs)
        declare_all(self, SIM_PARAMETERS)
        values = {spec.name: self.get_parameter(spec.name).value for spec in SIM_PARAMETERS}
        self.settings = SimSettings(**values)
        if self.settings.width % 2:
            raise ValueError(f"width must be even (height = width / 2), got {self.settings.width}")
        self.tour = SceneTour(self.settings)
        self._frames = []
        loop = self.tour.loop(self.settings.precompute_frames)
        for k, (index, t) in enumerate(loop):
            self._frames.append(render_frame(self.tour.scene(index), t, self.settings, k))
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
            frame = render_frame(self.tour.scene(index), t, s, self._count)
        header = Header(stamp=self.get_clock().now().to_msg(), frame_id=s.frame_id)
        if s.compressed:
            image = conversions.rgb_to_compressed(frame.rgb, header, s.jpeg_quality)
        else:
            image = conversions.rgb_to_msg(frame.rgb, header)
        self._pub_image.publish(image)
        if s.publish_ground_truth:
            self._pub_truth.publish(conversions.depth_to_msg(frame.range_m, header))
        self._count += 1


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dap_camera_sim` and `python -m dap_ros.camera_sim`."""
    return spin_node(CameraSim, argv, "camera_sim", (ParameterException, ImportError, ValueError))


if __name__ == "__main__":
    sys.exit(main())
