"""Temporal stabilisation of a stream of range maps: less frame-to-frame jitter, real change kept.

Owns the per-stream filter the node and `dap bag` apply (off by default) between the model and
the outputs. Pure numpy; one `TemporalStabilizer` per image stream, fed frames in time order.

Design (log-range, where a scale error is an offset):
1. Global scale. The offset d between the new frame and the running reference is the median
   of their per-pixel log differences, refitted on the pixels within `change_threshold` of the
   first median (robust to an object that moves or appears). A part (1 - scale_rate) of d is
   removed, so the output's overall scale follows the model's slowly instead of jumping with
   each frame's scale error (and is never frozen to the first frame's scale).
2. Per-pixel smoothing with a soft reset. The residual e = aligned − reference of each pixel
   sets its gain: at most `noise_floor` (typical model jitter) the pixel moves by `smoothing`
   x e (an exponential average); at `change_threshold` and beyond it takes the new value at
   once (a real change: motion, a new obstacle); linear in between. A new obstacle therefore
   appears in the first frame that sees it, as soon as it changes the range by more than
   change_threshold (log units: 0.15 = 16 %).
3. Resets. Pixels without a finite positive range (sky +inf, NaN) pass through unchanged and
   restart their history. A frame overlapping the reference on fewer than `min_overlap` of its
   pixels, one whose scale offset exceeds `max_scale_step` (a cut, another camera, a resize)
   restarts the whole filter.

Failure modes (documented in the README):
- Slow real change below change_threshold per frame (camera moving slowly past a near
  surface) is smoothed like noise, so the output lags it by up to (1 - smoothing) /
  smoothing frames' worth of change (about 2 frames at the default 0.3... see the README
  measurement for the moving camera).
- A change of a whole frame's scale (zoom, a new lens) that is not a cut is followed at
  `scale_rate` per frame, not at once.
- The filter assumes the camera pose changes little between frames; fast rotation makes most
  pixels "real change" and the filter passes frames through (safe, but no smoothing).
- Range masks are not filtered: the mask head's decisions stay per frame.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from dap_core.prediction import Prediction

__all__ = ["StabilizerConfig", "TemporalStabilizer"]


@dataclass(frozen=True)
class StabilizerConfig:
    """Parameters of the filter (log-range units: 0.1 is about 10 %)."""

    smoothing: float = 0.3  # gain of a pixel whose change is at the noise floor (1 = no filter)
    noise_floor: float = 0.04  # |Δ log range| treated as model jitter
    change_threshold: float = 0.15  # |Δ log range| from which a change is real (reset)
    scale_rate: float = 0.3  # fraction of a frame's scale offset the output follows
    min_overlap: float = 0.2  # fraction of pixels valid in both frames needed to align
    max_scale_step: float = 0.5  # |scale offset| beyond which the frame is a cut

    def __post_init__(self) -> None:
        for name in ("smoothing", "scale_rate", "min_overlap"):
            value = getattr(self, name)
            if not 0.0 < value <= 1.0:
                raise ValueError(f"{name} must be in (0, 1], got {value}")
        if not 0.0 <= self.noise_floor < self.change_threshold:
            raise ValueError(
                f"need 0 <= noise_floor ({self.noise_floor}) < change_threshold "
                f"({self.change_threshold})"
            )
        if not self.max_scale_step > 0.0:
            raise ValueError(f"max_scale_step must be > 0, got {self.max_scale_step}")


class TemporalStabilizer:
    """Filters range maps of one stream in time order; see the module docstring."""

    def __init__(self, config: StabilizerConfig | None = None) -> None:
        self.config = config or StabilizerConfig()
        self._reference: np.ndarray | None = None  # float32 log range, NaN where none
        self.last_scale_offset = 0.0  # the fitted offset d of the last frame
        self.last_reset_fraction = 0.0  # fraction of valid pixels taken as real change
        self.resets = 0  # whole-filter restarts (first frame included)

    def reset(self) -> None:
        self._reference = None

    def __call__(self, range_m: np.ndarray) -> np.ndarray:
        """The stabilised float32 [H, W] range (metres) of the next frame (a new array)."""
        c = self.config
        range_m = np.asarray(range_m, dtype=np.float32)
        valid = np.isfinite(range_m) & (range_m > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            log_range = np.where(valid, np.log(np.where(valid, range_m, 1.0)), np.nan)
        ref = self._reference
        if ref is None or ref.shape != range_m.shape:
            return self._restart(range_m, log_range)
        both = valid & np.isfinite(ref)
        if both.mean() < c.min_overlap:
            return self._restart(range_m, log_range)
        diff = log_range[both] - ref[both]
        offset = float(np.median(diff))
        inliers = np.abs(diff - offset) < c.change_threshold
        if inliers.any():
            offset = float(np.median(diff[inliers]))
        if abs(offset) > c.max_scale_step:
            return self._restart(range_m, log_range)
        self.last_scale_offset = offset
        aligned = log_range - np.float32((1.0 - c.scale_rate) * offset)
        residual = aligned - ref
        magnitude = np.abs(residual)
        span = c.change_threshold - c.noise_floor
        ramp = np.clip((magnitude - c.noise_floor) / span, 0.0, 1.0)
        gain = np.float32(c.smoothing) + np.float32(1.0 - c.smoothing) * ramp
        out = np.where(both, ref + gain * residual, aligned).astype(np.float32)
        out[~valid] = np.nan
        self.last_reset_fraction = float((magnitude[both] >= c.change_threshold).mean())
        self._reference = out
        result = np.exp(out, where=valid, out=np.empty_like(out))
        result[~valid] = range_m[~valid]  # +inf, NaN and <= 0 pass through unchanged
        return result

    def _restart(self, range_m: np.ndarray, log_range: np.ndarray) -> np.ndarray:
        self._reference = log_range.astype(np.float32)
        self.last_scale_offset = 0.0
        self.last_reset_fraction = 1.0
        self.resets += 1
        return range_m.copy()

    def apply(self, prediction: Prediction) -> Prediction:
        """`prediction` with its range stabilised (masks and timings kept)."""
        return dataclasses.replace(prediction, range_m=self(prediction.range_m))
