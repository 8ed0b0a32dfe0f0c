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


def wall_distance(azimuth: np.ndarray) -> np.ndarray:
    """Horizontal distance (metres) from the camera to the room's walls along azimuth (rad)."""
    c, s = np.cos(azimuth), np.sin(azimuth)
    with np.errstate(divide="ignore"):
        candidates = np.stack(
            [
                np.where(c > 0, FRONT_X / c, np.inf),
                np.where(c < 0, BACK_X / -c, np.inf),
                np.where(s > 0, LEFT_Y / s, np.inf),
                np.where(s < 0, RIGHT_Y / -s, np.inf),
            ]
        )
    return candidates.min(axis=0)


def room_truth(height: int, width: int) -> np.ndarray:
    """float64 [H, W] true range: +inf for sky, NaN below NADIR_INVALID_LAT."""
    lon, lat = closed_form_lonlat(height, width)
    horizontal = wall_distance(lon)[None, :]  # [1, W]
    cos_lat, sin_lat = np.cos(lat)[:, None], np.sin(lat)[:, None]
    to_wall = horizontal / cos_lat  # range along the ray to the wall plane
    with np.errstate(divide="ignore"):
        to_floor = np.where(sin_lat < 0, FLOOR_Z / -sin_lat, np.inf)
    hits_wall = to_wall <= to_floor
    truth = np.where(hits_wall, to_wall, to_floor)
    truth = np.where(hits_wall & (to_wall * sin_lat > WALL_TOP_Z), np.inf, truth)
    truth[lat < NADIR_INVALID_LAT, :] = np.nan
    return truth


@functools.lru_cache(maxsize=4)
def _room_prediction(height: int, width: int) -> tuple[np.ndarray, dict[int, np.ndarray]]:
    truth = room_truth(height, width)
    predicted = np.where(np.isinf(truth), SKY_RANGE_M, truth).astype(np.float32)
    masks = {t: (predicted <= t).astype(np.float32) for t in MASK_THRESHOLDS}  # NaN -> 0
    return predicted, masks


class RoomOracle:
    """Predicts the room's true range for any image size; optionally slow (seconds per frame)."""

    def __init__(self, delay_s: float = 0.0) -> None:
        self.backend = "oracle-room"
        self.delay_s = delay_s
        self.calls = 0

    def predict(self, rgb: np.ndarray) -> Prediction:
        self.calls += 1
        if self.delay_s:
            time.sleep(self.delay_s)
        range_m, masks = _room_prediction(*rgb.shape[:2])
        return Prediction(range_m, dict(masks), {"forward": self.delay_s * 1e3}, self.backend)


def room() -> RoomOracle:
    return RoomOracle()


def slow_room() -> RoomOracle:
    """An oracle that takes 0.25 s a frame: 4 Hz, far below a 30 Hz camera."""
    return RoomOracle(delay_s=0.25)
