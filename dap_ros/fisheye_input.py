"""The node's dual-fisheye input: side-by-side frames or lens pairs remapped to ERP.

Wraps dap_core.fisheye for the node: the calibration is read at start (a bad file stops the
start with one line), the remapper is built for the first frame size and kept (rebuilt only if
the camera changes resolution), and each frame returns the ERP and the mask of pixels no lens
sees, whose range the node publishes as NaN (REP 117: invalid). Layout side_by_side takes one
image; two_images takes the two lens images of a stamp-matched pair (dap_ros.lens_pairing).
"""

from __future__ import annotations

import numpy as np

from dap_core.fisheye import FisheyeRemapper, load_calibration

__all__ = ["FisheyeInput"]


class FisheyeInput:
    """Dual-fisheye RGB (one side-by-side image or two lens images) -> (ERP RGB [h, 2h, 3],
    unseen bool [h, 2h])."""

    def __init__(self, path: str, erp_height: int) -> None:
        self.calibration = load_calibration(path)
        self.erp_height = erp_height
        self._remapper: FisheyeRemapper | None = None
        self._size: tuple[int, int] | None = None

    @property
    def two_images(self) -> bool:
        """True when the lenses arrive as two images (two topics)."""
        return self.calibration.layout == "two_images"

    def to_erp(self, *rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ERP of one frame; ValueError (CalibrationError) for a size the file cannot serve."""
        wanted = 2 if self.two_images else 1
        if len(rgb) != wanted:
            raise ValueError(f"{self.calibration.layout} takes {wanted} image(s), got {len(rgb)}")
        sizes = {(image.shape[1], image.shape[0]) for image in rgb}
        if len(sizes) > 1:
            a, b = ((image.shape[1], image.shape[0]) for image in rgb)
            raise ValueError(f"lens images differ in size: {a[0]}x{a[1]} and {b[0]}x{b[1]}")
        size = sizes.pop()
        if size != self._size:
            calibration = self.calibration.for_image(*size)
            self._remapper = FisheyeRemapper(calibration, self.erp_height, 2 * self.erp_height)
            self._size = size
        return self._remapper.remap(*rgb), self._remapper.unseen
