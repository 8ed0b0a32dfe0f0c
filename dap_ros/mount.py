"""How the camera sits in the levelled frame that the scan and the cloud's height band use.

The panorama frame is the camera's REP 103 frame (x forward, y left, z up *of the camera*). On a
robot the camera is tilted, upside down on a mast, or pitching with the robot, so "z up" of
the camera is not "up". The levelled frame is the frame whose z axis points against gravity and
whose origin and heading the user chooses (a base or mast frame); the camera's pose in it is

    p_level = R · p_camera + t

with R from `mount_rpy` (URDF convention, fixed-axis roll, pitch, yaw in radians: the camera's
orientation in the levelled frame) and t from `mount_xyz` (metres). With an IMU, R's roll and
pitch follow gravity instead (`GravityTracker`) and the mount's yaw stays.

`Mount` is hashable, so per-image-size tables (rotated rays, horizon taps) are cached per mount.
Geometry (rotations, ray <-> pixel) comes from dap_core.geometry; nothing here imports ROS.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import torch

from dap_core.geometry import pixel_lonlat, rotation_between, rpy_to_matrix

__all__ = ["LEVEL", "GravityTracker", "LevelRays", "Mount", "MountState", "level_rays"]

_IDENTITY_TOL = 1e-12  # a rotation this close to I is treated as exactly level (fast paths)


@dataclass(frozen=True)
class Mount:
    """The camera's pose in the levelled frame: rotation (row-major 3x3) and translation (m)."""

    rotation: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    translation: tuple[float, float, float] = (0.0, 0.0, 0.0)

    @classmethod
    def from_rpy(
        cls, rpy: tuple[float, float, float], xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ) -> Mount:
        """A mount from roll, pitch, yaw (radians) and translation (metres)."""
        return cls.from_matrix(rpy_to_matrix(*rpy), xyz)

    @classmethod
    def from_matrix(cls, rotation: np.ndarray, xyz=(0.0, 0.0, 0.0)) -> Mount:
        matrix = np.asarray(rotation, np.float64).reshape(3, 3)
        if not np.allclose(matrix @ matrix.T, np.eye(3), atol=1e-9):
            raise ValueError(f"mount rotation is not a rotation matrix: {matrix.tolist()}")
        if np.abs(matrix - np.eye(3)).max() < _IDENTITY_TOL:
            matrix = np.eye(3)
        x, y, z = (float(v) for v in xyz)
        return cls(tuple(float(v) for v in matrix.ravel()), (x, y, z))

    @property
    def matrix(self) -> np.ndarray:
        """float64 [3, 3] R (camera -> levelled frame)."""
        return np.array(self.rotation, np.float64).reshape(3, 3)

    @property
    def upright(self) -> bool:
        """True when R = I and the camera sits on the levelled frame's z axis: the scan and
        the band then need only the camera's own rows and columns (the fast path)."""
        return self.rotation == LEVEL.rotation and self.translation[:2] == (0.0, 0.0)

    @property
    def height(self) -> float:
        """z of the camera centre in the levelled frame, metres (where the horizon lies)."""
        return self.translation[2]

    def to_level(self, points: np.ndarray) -> np.ndarray:
        """Points [..., 3] of the camera frame in the levelled frame."""
        return points @ self.matrix.T + np.asarray(self.translation)

    def with_rotation(self, rotation: np.ndarray) -> Mount:
        return Mount.from_matrix(rotation, self.translation)


LEVEL = Mount()


@dataclass(frozen=True)
class LevelRays:
    """Camera rays of an ERP grid (every `stride` pixels) expressed in the levelled frame.

    x, y, z: float32 [h, w] components of R · ray; a pixel at range r sits at
    r · (x, y, z) + translation in the levelled frame.
    """

    x: np.ndarray
    y: np.ndarray
    z: np.ndarray


@functools.lru_cache(maxsize=8)
def level_rays(height: int, width: int, stride: int, mount: Mount) -> LevelRays:
    """Cached levelled-frame rays of an H x W panorama at `stride` for `mount`."""
    lon, lat = (t.numpy() for t in pixel_lonlat(height, width, dtype=torch.float64))
    lon, lat = lon[::stride][None, :], lat[::stride][:, None]
    rays = np.stack(
        np.broadcast_arrays(np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)),
        axis=-1,
    )  # [h, w, 3] camera frame
    level = rays @ mount.matrix.T
    planes = [np.ascontiguousarray(level[..., k], dtype=np.float32) for k in range(3)]
    for plane in planes:
        plane.setflags(write=False)
    return LevelRays(*planes)


class GravityTracker:
    """Roll and pitch of the camera from an accelerometer, low-pass filtered.

    An accelerometer at rest measures the specific force, which points *up* (away from the
    ground) with magnitude g. Each sample is rotated into the camera frame with `imu_to_camera`
    (the IMU's orientation on the camera), filtered with time constant `time_constant_s`
    (exponential, by stamp), and the mount's rotation becomes the smallest rotation taking the
    filtered up vector to +z, followed by the mount's yaw: heading is not observable from
    gravity and stays the user's choice. Samples whose magnitude is outside `accept_g`
    (fractions of 9.81 m/s²) are ignored: a bumping robot's acceleration is not gravity.
    """

    G = 9.80665

    def __init__(
        self,
        yaw: float,
        time_constant_s: float,
        imu_to_camera: np.ndarray | None = None,
        accept_g: tuple[float, float] = (0.8, 1.2),
    ) -> None:
        self._yaw = rpy_to_matrix(0.0, 0.0, yaw)
        self._tau = time_constant_s
        self._imu_to_camera = np.eye(3) if imu_to_camera is None else np.asarray(imu_to_camera)
        self._accept = accept_g
        self._up: np.ndarray | None = None
        self._last_stamp: float | None = None
        self.rejected = 0

    def update(self, acceleration: tuple[float, float, float], stamp_s: float) -> bool:
        """Feed one sample (m/s², IMU frame); False when it was rejected."""
        a = self._imu_to_camera @ np.asarray(acceleration, np.float64)
        norm = float(np.linalg.norm(a))
        if not (math.isfinite(norm) and self._accept[0] <= norm / self.G <= self._accept[1]):
            self.rejected += 1
            return False
        if self._up is None or self._last_stamp is None or self._tau <= 0.0:
            self._up = a / norm
        else:
            dt = max(0.0, stamp_s - self._last_stamp)
            alpha = 1.0 - math.exp(-dt / self._tau)
            self._up = (1.0 - alpha) * self._up + alpha * (a / norm)
        self._last_stamp = stamp_s
        return True

    @property
    def ready(self) -> bool:
        return self._up is not None

    def rotation(self) -> np.ndarray:
        """R (camera -> levelled frame) from the filtered gravity, float64 [3, 3]."""
        if self._up is None:
            raise RuntimeError("no accepted IMU sample yet")
        return self._yaw @ rotation_between(self._up, np.array([0.0, 0.0, 1.0]))


class MountState:
    """The node's current mount: from its settings, with roll and pitch from an IMU when one
    is configured (`imu_topic`) and has sent an accepted sample. Thread-safe by replacement:
    the IMU callback swaps the tracked rotation, the worker reads it."""

    def __init__(self, settings) -> None:
        self._tracker: GravityTracker | None = None
        self._tracked: np.ndarray | None = None
        if settings.imu_topic:
            self._tracker = GravityTracker(
                yaw=settings.mount_rpy[2],
                time_constant_s=settings.imu_time_constant,
                imu_to_camera=rpy_to_matrix(*settings.imu_rpy),
            )

    @staticmethod
    def levelled(settings) -> bool:
        """True when outputs in the levelled frame differ from the panorama frame."""
        return (
            bool(settings.imu_topic)
            or Mount.from_rpy(settings.mount_rpy, settings.mount_xyz) != LEVEL
        )

    @staticmethod
    def level_frame_id(settings, camera_frame: str) -> str:
        return settings.level_frame_id or f"{camera_frame}_level"

    def on_acceleration(self, acceleration: tuple[float, float, float], stamp_s: float) -> bool:
        """Feed one accelerometer sample (m/s², IMU frame); False when rejected or unused."""
        if self._tracker is None or not self._tracker.update(acceleration, stamp_s):
            return False
        self._tracked = self._tracker.rotation()
        return True

    @property
    def rejected(self) -> int:
        return 0 if self._tracker is None else self._tracker.rejected

    def mount(self, settings) -> Mount:
        """The mount to use for the next frame."""
        tracked = self._tracked
        if tracked is not None:
            return Mount.from_matrix(tracked, settings.mount_xyz)
        return Mount.from_rpy(settings.mount_rpy, settings.mount_xyz)
