"""A stand-in predictor whose range changes from frame to frame, for the `dap bag` tests.

Loaded by the node and by `dap bag` through the `predictor` parameter
("bag_oracles:jittery_room", with test/ on PYTHONPATH). The range is the box room of
ros_oracle, scaled by a factor read from the image (its mean brightness): every frame has its
own scale error, as a real model's output has, so the temporal filter has work to do and
its output depends on the order of the frames.
"""

from __future__ import annotations

import numpy as np
from ros_oracle import MASK_THRESHOLDS, RoomOracle

from dap_core.prediction import Prediction


class JitteryRoom(RoomOracle):
    def predict(self, rgb: np.ndarray) -> Prediction:
        room = super().predict(rgb)
        scale = np.float32(1.0 + (float(rgb.mean()) - 127.5) / 200.0)
        range_m = room.range_m * scale
        masks = {t: (range_m <= t).astype(np.float32) for t in MASK_THRESHOLDS}
        return Prediction(range_m, masks, room.timings, "oracle-jittery-room")


def jittery_room() -> JitteryRoom:
    return JitteryRoom()
