"""The result of one inference: metric range, range-mask probabilities, timings.

Kept free of torch so that ROS-side code and tests can build predictions cheaply.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

MASK_DECISION = 0.5  # a pixel is "within T metres" when the mask probability is >= this


@dataclass
class Prediction:
    """Model output at camera resolution.

    range_m: float32 [H, W] or [B, H, W], Euclidean range along each pixel's ray, metres.
    masks:   threshold in metres -> float32 probability (same shape) that range <= threshold.
    timings: stage name -> milliseconds (preprocess, forward, postprocess, ...).
    backend: which backend produced it ("torch", "onnxruntime", "tensorrt", or a test stand-in).
    """

    range_m: np.ndarray
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    timings: dict[str, float] = field(default_factory=dict)
    backend: str = ""

    def within(self, threshold_m: int) -> np.ndarray:
        """Boolean map of pixels the model places within `threshold_m` metres.

        Uses the range-mask head when it ran, otherwise the range itself.
        """
        if threshold_m in self.masks:
            return self.masks[threshold_m] >= MASK_DECISION
        return self.range_m <= threshold_m

    def gated_range(self, threshold_m: int | None) -> np.ndarray:
        """Range with +inf where the pixel lies beyond `threshold_m` (REP 117: no return)."""
        if threshold_m is None:
            return self.range_m
        return np.where(self.within(threshold_m), self.range_m, np.float32(np.inf)).astype(
            np.float32, copy=False
        )
