"""A simulated 360° camera: renders a procedural scene along a smooth path and publishes it.

Publishes, with one stamp per frame and frame_id `frame_id`:
  image                  sensor_msgs/Image rgb8 ERP (or image/compressed JPEG with `compressed`)
  ground_truth/depth     32FC1 true range in metres (+inf sky, NaN invalid; REP 117)
Scenes come from dap_core.data.synthetic (make_scene, Scene.trajectory, Scene.render), so the
demo can compare the perception node's range with the truth. Rendering a 512x1024 frame takes
longer than a camera period on a CPU; `precompute_frames` renders that many frames of the path
at start-up and then replays them in a loop at `rate_hz`.

Run: `python -m dap_ros.camera_sim --ros-args -p width:=1024 -p rate_hz:=10.0` or
`dap_camera_sim`; `ros2 launch dap_ros dap.launch.py sim:=true` starts it beside the node.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass

import numpy as np
import rclpy
from rclpy.exceptions import ParameterException
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import CompressedImage, Image
from std_msgs.msg import Header

from dap_ros import conversions
from dap_ros.params import ParamSpec, declare_all

__all__ = ["SIM_PARAMETERS", "CameraSim", "main"]

SIM_PARAMETERS: tuple[ParamSpec, ...] = (
    ParamSpec("width", 1024, "panorama width in pixels (height = width / 2)", (16, 8192)),
    ParamSpec("rate_hz", 10.0, "frames per second", (0.1, 120.0)),
    ParamSpec("compressed", False, "publish image/compressed (JPEG) instead of raw rgb8"),
    ParamSpec("jpeg_quality", 90, "JPEG quality", (1, 100)),
    ParamSpec("scene", "indoor", "scene kind", choices=("indoor", "outdoor")),
    ParamSpec("seed", 0, "scene seed (same seed, same scene)", (0, 2**31 - 1)),
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
        from dap_core.data.synthetic import make_scene  # the renderer is only needed here

        self._scene = make_scene(self.settings.seed, self.settings.scene)
        self._frames = [
            render_frame(
                self._scene, k / self.settings.rate_hz * self.settings.speed, self.settings, k
            )
            for k in range(self.settings.precompute_frames)
        ]
        image_type = CompressedImage if self.settings.compressed else Image
        topic = "image/compressed" if self.settings.compressed else "image"
        self._pub_image = self.create_publisher(image_type, topic, qos_profile_sensor_data)
        self._pub_truth = self.create_publisher(
            Image, "ground_truth/depth", qos_profile_sensor_data
        )
        self._start = time.monotonic()
        self._count = 0
        self._timer = self.create_timer(1.0 / self.settings.rate_hz, self._tick)
        self.get_logger().info(
            f"publishing {self.settings.scene} scene {self.settings.seed} at "
            f"{self.settings.width}x{self.settings.height}, {self.settings.rate_hz} Hz on "
            f"'{self._pub_image.topic_name}'"
        )

    def _tick(self) -> None:
        s = self.settings
        if self._frames:
            frame = self._frames[self._count % len(self._frames)]
        else:
            frame = render_frame(
                self._scene, (time.monotonic() - self._start) * s.speed, s, self._count
            )
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
    rclpy.init(args=argv)
    node = None
    status = 0
    try:
        node = CameraSim()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ParameterException, ImportError, ValueError) as err:
        rclpy.logging.get_logger("camera_sim").fatal(f"cannot start: {type(err).__name__}: {err}")
        status = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return status


if __name__ == "__main__":
    sys.exit(main())
