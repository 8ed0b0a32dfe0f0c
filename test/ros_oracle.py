"""Stand-in predictors whose output is a closed-form ground truth, for the ROS node tests.

The node loads them through its `predictor` parameter ("ros_oracle:room"), with test/ on
PYTHONPATH. The scene is a box room around the camera: four vertical walls of finite height,
a floor, and open sky above the walls. Its range is computed here from the pixel-to-ray formula
of shared/DESIGN.md, written out independently of dap_core.geometry, so that the node's clouds
and scans can be checked against geometry the node did not compute.
"""

from __future__ import annotations

import functools
import time

import numpy as np

from dap_core.prediction import Prediction

# Room around the camera, metres, panorama frame (x forward, y left, z up).
FRONT_X = 4.0  # wall x = +4
BACK_X = 6.0  # wall x = -6
LEFT_Y = 3.0  # wall y = +3
RIGHT_Y = 5.0  # wall y = -5
FLOOR_Z = 1.5  # floor z = -1.5
WALL_TOP_Z = 2.0  # walls end at z = +2; above that the ray sees sky
SKY_RANGE_M = 200.0  # what the oracle "predicts" for sky: beyond every mask head
NADIR_INVALID_LAT = np.deg2rad(-80.0)  # below this latitude the oracle returns NaN (a tripod)
MASK_THRESHOLDS = (10, 20, 50, 100)
# A hall with far walls: beyond ~33 m the rows next to the horizon of a 512x256 panorama leave a
# ±0.2 m band, so only the horizon itself can see these walls.
FAR_WALLS = (64.0, 70.0, 66.0, 68.0)  # front x, back x, left y, right y
FAR_WALL_TOP_Z = 30.0


def closed_form_lonlat(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(lon [W], lat [H]) radians of pixel centres: λ = π(1 − 2(u+½)/W), φ = π(½ − (v+½)/H)."""
    lon = np.pi * (1.0 - 2.0 * (np.arange(width) + 0.5) / width)
    lat = np.pi * (0.5 - (np.arange(height) + 0.5) / height)
    return lon, lat


def closed_form_rays(height: int, width: int) -> np.ndarray:
    """float64 [H, W, 3] unit rays (cos φ cos λ, cos φ sin λ, sin φ)."""
    lon, lat = closed_form_lonlat(height, width)
    lon, lat = np.meshgrid(lon, lat)
    return np.stack([np.cos(lat) * np.cos(lon), np.cos(lat) * np.sin(lon), np.sin(lat)], axis=-1)


def wall_distance(
    azimuth: np.ndarray,
    walls: tuple[float, float, float, float] = (FRONT_X, BACK_X, LEFT_Y, RIGHT_Y),
) -> np.ndarray:
    """Horizontal distance (metres) from the camera to the room's walls along azimuth (rad)."""
    front, back, left, right = walls
    c, s = np.cos(azimuth), np.sin(azimuth)
    with np.errstate(divide="ignore"):
        candidates = np.stack(
            [
                np.where(c > 0, front / c, np.inf),
                np.where(c < 0, back / -c, np.inf),
                np.where(s > 0, left / s, np.inf),
                np.where(s < 0, right / -s, np.inf),
            ]
        )
    return candidates.min(axis=0)


def room_truth(
    height: int,
    width: int,
    walls: tuple[float, float, float, float] = (FRONT_X, BACK_X, LEFT_Y, RIGHT_Y),
    wall_top_z: float = WALL_TOP_Z,
) -> np.ndarray:
    """float64 [H, W] true range: +inf for sky, NaN below NADIR_INVALID_LAT."""
    lon, lat = closed_form_lonlat(height, width)
    horizontal = wall_distance(lon, walls)[None, :]  # [1, W]
    cos_lat, sin_lat = np.cos(lat)[:, None], np.sin(lat)[:, None]
    to_wall = horizontal / cos_lat  # range along the ray to the wall plane
    with np.errstate(divide="ignore"):
        to_floor = np.where(sin_lat < 0, FLOOR_Z / -sin_lat, np.inf)
    hits_wall = to_wall <= to_floor
    truth = np.where(hits_wall, to_wall, to_floor)
    truth = np.where(hits_wall & (to_wall * sin_lat > wall_top_z), np.inf, truth)
    truth[lat < NADIR_INVALID_LAT, :] = np.nan
    return truth


def room_range(
    directions: np.ndarray,
    walls: tuple[float, float, float, float] = (FRONT_X, BACK_X, LEFT_Y, RIGHT_Y),
    wall_top_z: float = WALL_TOP_Z,
    floor_z: float = FLOOR_Z,
) -> np.ndarray:
    """float64 [...] range from the room's centre along unit `directions` [..., 3] (room
    frame: z up): the nearest of the four walls (below their top) and the floor; +inf sky."""
    x, y, z = (directions[..., k] for k in range(3))
    horizontal = np.hypot(x, y)
    with np.errstate(divide="ignore", invalid="ignore"):
        to_wall = wall_distance(np.arctan2(y, x), walls) / horizontal
        to_floor = np.where(z < 0, floor_z / -z, np.inf)
    hits_wall = to_wall <= to_floor
    truth = np.where(hits_wall, to_wall, to_floor)
    return np.where(hits_wall & (to_wall * z > wall_top_z), np.inf, truth)


def tilted_room_truth(height: int, width: int, rotation: np.ndarray) -> np.ndarray:
    """float64 [H, W] true range of the room seen by a camera whose rays turn into the room
    frame by `rotation` (p_room = R p_camera; the camera at the room's centre)."""
    return room_range(closed_form_rays(height, width) @ np.asarray(rotation).T)


# A tilted camera for the node tests: roll 6°, pitch 12° (nose down), yaw 0.
PITCHED_RPY = (np.deg2rad(6.0), np.deg2rad(12.0), 0.0)


def rpy_matrix(roll: float, pitch: float, yaw: float) -> np.ndarray:
    """Rz(yaw) Ry(pitch) Rx(roll), written out here (URDF fixed-axis convention)."""
    cr, sr, cp, sp, cy, sy = (f(a) for a in (roll, pitch, yaw) for f in (np.cos, np.sin))
    return np.array(
        [
            [cy * cp, cy * sp * sr - sy * cr, cy * sp * cr + sy * sr],
            [sy * cp, sy * sp * sr + cy * cr, sy * sp * cr - cy * sr],
            [-sp, cp * sr, cp * cr],
        ]
    )


def far_hall_truth(height: int, width: int) -> np.ndarray:
    """float64 [H, W] true range of the far hall (walls 64-70 m away, 30 m high)."""
    return room_truth(height, width, FAR_WALLS, FAR_WALL_TOP_Z)


def horizon_samples(range_m: np.ndarray) -> np.ndarray:
    """float64 [W] range at elevation 0 of a level camera, from the rows whose latitudes
    straddle 0, interpolated linearly in latitude; where one of them is no return (non-finite,
    negative), the other one; where both are, +inf. Written from the latitude formula alone.
    """
    height = range_m.shape[0]
    lat = closed_form_lonlat(height, 2)[1]
    below = int(np.flatnonzero(lat > 0).max())  # last row above the horizon
    above_lat, below_lat = lat[below], lat[below + 1]
    t = above_lat / (above_lat - below_lat)  # share of the lower row
    upper = range_m[below].astype(np.float64)
    lower = range_m[below + 1].astype(np.float64)
    with np.errstate(invalid="ignore"):
        upper = np.where(np.isfinite(upper) & (upper >= 0), upper, np.inf)
        lower = np.where(np.isfinite(lower) & (lower >= 0), lower, np.inf)
    both = np.isfinite(upper) & np.isfinite(lower)
    with np.errstate(invalid="ignore"):
        blended = (1 - t) * upper + t * lower
    return np.where(both, blended, np.minimum(upper, lower))


@functools.lru_cache(maxsize=4)
def _room_prediction(
    height: int, width: int, far: bool = False
) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    truth = far_hall_truth(height, width) if far else room_truth(height, width)
    predicted = np.where(np.isinf(truth), SKY_RANGE_M, truth).astype(np.float32)
    masks = {t: (predicted <= t).astype(np.float32) for t in MASK_THRESHOLDS}  # NaN -> 0
    return predicted, masks


class RoomOracle:
    """Predicts the room's true range for any image size; optionally slow (seconds per frame)."""

    def __init__(self, delay_s: float = 0.0, far: bool = False) -> None:
        self.backend = "oracle-far-hall" if far else "oracle-room"
        self.delay_s = delay_s
        self.far = far
        self.calls = 0

    def predict(self, rgb: np.ndarray) -> Prediction:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        range_m, masks = _room_prediction(*rgb.shape[:2], self.far)
        return Prediction(range_m, dict(masks), {"forward": self.delay_s * 1e3}, self.backend)


def room() -> RoomOracle:
    return RoomOracle()


def far_hall() -> RoomOracle:
    """The hall whose walls stand 64-70 m away (beyond the scan band's reach off the horizon)."""
    return RoomOracle(far=True)


class PitchedRoomOracle(RoomOracle):
    """The room as seen by a camera tilted by PITCHED_RPY (the node is told so by mount_rpy)."""

    def __init__(self) -> None:
        super().__init__()
        self.backend = "oracle-pitched-room"

    def predict(self, rgb: np.ndarray) -> Prediction:
        self.calls += 1
        truth = tilted_room_truth(*rgb.shape[:2], rpy_matrix(*PITCHED_RPY))
        predicted = np.where(np.isinf(truth), SKY_RANGE_M, truth).astype(np.float32)
        masks = {t: (predicted <= t).astype(np.float32) for t in MASK_THRESHOLDS}
        return Prediction(predicted, masks, {"forward": 0.0}, self.backend)


def pitched_room() -> RoomOracle:
    return PitchedRoomOracle()


def slow_room() -> RoomOracle:
    """An oracle that takes 0.25 s a frame: 4 Hz, far below a 30 Hz camera."""
    return RoomOracle(delay_s=0.25)
