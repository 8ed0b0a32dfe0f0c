"""Colour pictures of range maps: a colourised range image, a labelled colour bar, side by side.

Used by the ROS node's `depth/colored` preview, `dap predict` and the demo. Near is warm (red),
far is cool (blue), on the Turbo colour map; the scale is linear from 0 to `max_range_m` metres
and clipped there. Non-finite pixels (sky / no return +inf, too close −inf, invalid NaN) are
black, so "no data" never looks like a distance.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["add_colorbar", "colorize_range", "side_by_side"]

NO_DATA_RGB = (0, 0, 0)
_LEVELS = 255  # finite ranges map to LUT entries 1..255; entry 0 is reserved for "no data"
_TURBO_FAR_START = 24
_BAR_LABEL_RGB = (255, 255, 255)
_BAR_BACKGROUND_RGB = (32, 32, 32)
_BAR_MIN_HEIGHT = 24  # pixels: room for one line of 0.4-scale text
_BAR_TICKS = 5  # labels at 0, 1/4, 1/2, 3/4 and 1 of the scale


@functools.cache
def _lut() -> np.ndarray:
    """[256, 1, 3] uint8 RGB lookup: entry 0 black, 1..255 Turbo from near (red) to far (blue)."""
    # Turbo runs dark blue (0) to dark red (255); its first tenth is so dark that far points
    # would read as "no data", so the far end stops at _TURBO_FAR_START.
    turbo_index = np.round(np.linspace(255, _TURBO_FAR_START, _LEVELS)).astype(np.uint8)
    turbo_bgr = cv2.applyColorMap(turbo_index[:, None], cv2.COLORMAP_TURBO)  # [255, 1, 3] BGR
    lut = np.empty((256, 1, 3), dtype=np.uint8)
    lut[0, 0] = NO_DATA_RGB
    lut[1:, 0] = turbo_bgr[:, 0, ::-1]  # level 1 = near (red) ... level 255 = far (blue)
    lut.setflags(write=False)
    return lut


def _check_max_range(max_range_m: float) -> float:
    max_range_m = float(max_range_m)
    if not np.isfinite(max_range_m) or max_range_m <= 0.0:
        raise ValueError(
            f"max_range_m must be a positive finite number of metres, got {max_range_m}"
        )
    return max_range_m


def colorize_range(
    range_m: np.ndarray, max_range_m: float, out: np.ndarray | None = None
) -> np.ndarray:
    """Colour image of a range map.

    range_m: [H, W] metres (any float dtype); max_range_m: metres at the far end of the scale.
    Returns uint8 [H, W, 3] RGB: 0 m red, `max_range_m` and beyond blue, non-finite black.
    out: a C-contiguous uint8 [H, W, 3] array to write into (e.g. a message buffer kept
    between frames), returned; saves allocating and copying a frame.
    """
    range_m = np.asarray(range_m)
    if range_m.ndim != 2:
        raise ValueError(f"range_m must be a 2-D [H, W] array, got shape {range_m.shape}")
    max_range_m = _check_max_range(max_range_m)
    if range_m.dtype not in (np.float32, np.float64):
        range_m = range_m.astype(np.float32)
    no_data = ~np.isfinite(range_m)  # NaN, ±inf -> level 0 (black)
    with np.errstate(invalid="ignore"):  # NaN compares False; it is black anyway
        if (range_m < 0).any():
            range_m = np.maximum(range_m, 0)  # negative "ranges" draw as 0 m
    # round(r * 254 / max) + 1, saturated to 255 beyond max_range_m: levels 1..255 in one
    # OpenCV pass (several times faster than the numpy chain).
    index = cv2.convertScaleAbs(range_m, alpha=(_LEVELS - 1) / max_range_m, beta=1.0)
    np.putmask(index, no_data, 0)
    if out is None:
        return cv2.applyColorMap(index, _lut())
    if out.shape != (*range_m.shape, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(
            f"out must be a C-contiguous uint8 array of shape {(*range_m.shape, 3)}, got "
            f"{out.dtype} {out.shape}"
        )
    cv2.applyColorMap(index, _lut(), dst=out)
    return out


def _bar_height(width: int, height: int) -> int:
    return max(_BAR_MIN_HEIGHT, min(height // 6, width // 12))


def _format_metres(value: float) -> str:
    return f"{value:.0f} m" if value >= 10 or value == int(value) else f"{value:.1f} m"


def add_colorbar(image: np.ndarray, max_range_m: float) -> np.ndarray:
    """`image` with a labelled colour bar appended below it.

    image: uint8 [H, W, 3] RGB (e.g. from `colorize_range`), or [H, W] grey.
    The bar's upper half is the colour scale, left 0 m to right `max_range_m`; the lower half
    carries tick labels in metres. Returns uint8 [H + bar, W, 3] RGB.
    """
    image = _as_rgb(image)
    height, width = image.shape[:2]
    bar = _colorbar(width, _bar_height(width, height), _check_max_range(max_range_m))
    out = np.empty((height + bar.shape[0], width, 3), dtype=np.uint8)
    out[:height] = image
    out[height:] = bar
    return out


@functools.lru_cache(maxsize=16)
def _colorbar(width: int, bar_h: int, max_range_m: float) -> np.ndarray:
    """The bar of `add_colorbar`, uint8 [bar_h, width, 3]; cached (the node draws it per frame)."""
    ramp_h = bar_h // 2
    bar = np.empty((bar_h, width, 3), dtype=np.uint8)
    bar[:] = _BAR_BACKGROUND_RGB
    centres = (np.arange(width, dtype=np.float64) + 0.5) / width * max_range_m  # metres
    bar[:ramp_h] = colorize_range(centres[None, :], max_range_m)
    font_scale = max(0.3, min(1.0, (bar_h - ramp_h) / 30.0))
    for k in range(_BAR_TICKS):
        fraction = k / (_BAR_TICKS - 1)
        text = _format_metres(fraction * max_range_m)
        (text_w, text_h), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        x = round(fraction * (width - 1) - fraction * text_w)  # keep the text inside
        x = min(max(x, 0), max(width - text_w, 0))
        y = ramp_h + (bar_h - ramp_h + text_h) // 2
        tick_x = round(fraction * (width - 1))
        cv2.line(bar, (tick_x, ramp_h), (tick_x, ramp_h + 2), _BAR_LABEL_RGB, 1)
        cv2.putText(
            bar, text, (x, y), cv2.FONT_HERSHEY_SIMPLEX, font_scale, _BAR_LABEL_RGB, 1, cv2.LINE_AA
        )
    bar.setflags(write=False)
    return bar


def _as_rgb(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8:
        raise ValueError(f"images must be uint8, got {image.dtype}")
    if image.ndim == 2:
        return np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim == 3 and image.shape[2] == 3:
        return image
    raise ValueError(f"images must be [H, W] grey or [H, W, 3] RGB, got shape {image.shape}")


def side_by_side(images: Sequence[np.ndarray]) -> np.ndarray:
    """Images placed left to right, each scaled (aspect kept) to the height of the first.

    images: uint8 [H, W, 3] RGB or [H, W] grey (grey becomes RGB). Returns uint8 [H, ΣW', 3].
    """
    if len(images) == 0:
        raise ValueError("side_by_side needs at least one image")
    rgb = [_as_rgb(image) for image in images]
    height = rgb[0].shape[0]
    if height == 0 or any(image.shape[0] == 0 or image.shape[1] == 0 for image in rgb):
        raise ValueError("side_by_side got an empty image")
    row = []
    for image in rgb:
        if image.shape[0] != height:
            new_w = max(1, round(image.shape[1] * height / image.shape[0]))
            image = cv2.resize(image, (new_w, height), interpolation=cv2.INTER_AREA)
        row.append(image)
    return np.concatenate(row, axis=1)
