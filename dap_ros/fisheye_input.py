"""The node's dual-fisheye input: side-by-side frames remapped to ERP before inference.

Wraps dap_core.fisheye for the node: the calibration is read at start (a bad file stops the
start with one line), the remapper is built for the first frame size and kept (rebuilt only if
the camera changes resolution), and each frame returns the ERP and the mask of pixels no lens
sees, whose range the node publishes as NaN (REP 117: invalid). Only the side_by_side layout
is served here; two lens topics need stamp pairing, which the node does not do yet.
"""

from __future__ import annotations

import numpy as np

from dap_core.fisheye import CalibrationError, FisheyeRemapper, load_calibration

__all__ = ["FisheyeInput"]


class FisheyeInput:
    """Side-by-side dual-fisheye RGB -> (ERP RGB [h, 2h, 3], unseen bool [h, 2h])."""

    def __init__(self, path: str, erp_height: int) -> None:
        self.calibration = load_calibration(path)
        if self.calibration.layout != "side_by_side":
            raise CalibrationError(
                f"{path}: layout {self.calibration.layout}: the node takes side_by_side"
                " fisheye images only (two lens topics are not supported yet)"
            )
        self.erp_height = erp_height
        self._remapper: FisheyeRemapper | None = None
        self._size: tuple[int, int] | None = None

    def to_erp(self, rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ERP of one frame; ValueError (CalibrationError) for a size the file cannot serve."""
        size = (rgb.shape[1], rgb.shape[0])
        if size != self._size:
            calibration = self.calibration.for_image(*size)
            self._remapper = FisheyeRemapper(calibration, self.erp_height, 2 * self.erp_height)
            self._size = size
        return self._remapper.remap(rgb), self._remapper.unseen
