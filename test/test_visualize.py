"""Colourised range images, the colour bar and side-by-side panels."""

from __future__ import annotations

import cv2
import numpy as np
import pytest

from dap_core.visualize import add_colorbar, colorize_range, side_by_side


def ramp(width: int = 256, max_range: float = 10.0) -> np.ndarray:
    return np.tile(np.linspace(0.0, max_range, width, dtype=np.float32), (8, 1))


def test_non_finite_pixels_are_black_and_finite_ones_are_not():
    range_m = np.full((4, 5), 3.0, np.float32)
    range_m[0, :3] = [np.nan, np.inf, -np.inf]
    colours = colorize_range(range_m, 10.0)
    assert colours.dtype == np.uint8 and colours.shape == (4, 5, 3)
    assert (colours[0, :3] == 0).all()
    assert (colours[1:].max(axis=-1) > 0).all()


def test_near_is_red_far_is_blue_and_beyond_max_is_clipped():
    colours = colorize_range(np.array([[0.0, 10.0, 50.0]], np.float32), 10.0)
    near, far, beyond = colours[0].astype(int)
    assert near[0] > near[2] + 50  # red dominates at 0 m
    assert far[2] > far[0] + 50  # blue dominates at max range
    assert np.array_equal(far, beyond)
    assert np.array_equal(colours[0, 0], colorize_range(np.array([[-3.0]]), 10.0)[0, 0])


def test_colour_changes_steadily_along_the_range():
    colours = colorize_range(ramp(), 10.0)[0].astype(int)  # [256, 3]
    steps = np.abs(np.diff(colours, axis=0)).sum(axis=1)
    assert steps.max() <= 40  # no jumps: neighbouring ranges get neighbouring colours
    distinct = {tuple(c) for c in colours}
    assert len(distinct) > 150  # the scale resolves ~1/255 of the range


def test_colorize_writes_into_a_given_buffer_and_rejects_a_wrong_one():
    range_m = np.array([[0.0, 4.0, np.nan], [9.0, 12.0, 2.5]], np.float32)
    buffer = np.full((4, 3, 3), 7, np.uint8)  # rows 2-3 stand for a colour bar below
    written = colorize_range(range_m, 10.0, out=buffer[:2])
    assert np.shares_memory(written, buffer)
    assert np.array_equal(buffer[:2], colorize_range(range_m, 10.0))
    assert (buffer[2:] == 7).all()  # nothing outside `out` touched
    for wrong in (np.zeros((2, 3, 3), np.float32), np.zeros((3, 2, 3), np.uint8),
                  np.zeros((2, 6, 3), np.uint8)[:, ::2]):  # fmt: skip
        with pytest.raises(ValueError, match="out must be"):
            colorize_range(range_m, 10.0, out=wrong)


def test_colorize_accepts_float64_and_checks_arguments():
    assert colorize_range(np.ones((2, 4)), 5.0).shape == (2, 4, 3)
    with pytest.raises(ValueError, match="max_range_m"):
        colorize_range(np.ones((2, 4)), 0.0)
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        colorize_range(np.ones((2, 4, 1)), 5.0)


def test_colorbar_is_appended_below_and_shows_the_scale():
    image = colorize_range(ramp(512), 10.0)
    with_bar = add_colorbar(image, 10.0)
    assert with_bar.shape[1] == 512 and with_bar.shape[0] > image.shape[0]
    assert np.array_equal(with_bar[: image.shape[0]], image)
    bar = with_bar[image.shape[0] :]
    # The top row of the bar is the colour of the range at that column.
    centres = (np.arange(512) + 0.5) / 512 * 10.0
    assert np.array_equal(bar[0], colorize_range(centres[None, :], 10.0)[0])
    # Labels: the lower half carries light text on the dark background.
    labels = bar[bar.shape[0] // 2 :]
    assert (labels.min(axis=-1) > 200).sum() > 30


def test_colorbar_labels_depend_on_the_scale():
    image = np.zeros((64, 256, 3), np.uint8)
    labels_10 = add_colorbar(image, 10.0)[64:]
    labels_80 = add_colorbar(image, 80.0)[64:]
    half = labels_10.shape[0] // 2
    assert not np.array_equal(labels_10[half:], labels_80[half:])


def test_colorbar_accepts_grey_images():
    assert add_colorbar(np.zeros((32, 64), np.uint8), 5.0).shape[1:] == (64, 3)


def test_side_by_side_scales_to_the_first_height_and_keeps_pixels():
    left = np.full((40, 80, 3), 200, np.uint8)
    right = cv2.resize(np.arange(20 * 20, dtype=np.uint8).reshape(20, 20), (20, 20))
    panel = side_by_side([left, right])
    assert panel.shape == (40, 120, 3)
    assert np.array_equal(panel[:, :80], left)
    assert np.array_equal(panel[:, 80:, 0], panel[:, 80:, 2])  # grey became RGB


def test_side_by_side_rejects_nothing_and_non_uint8():
    with pytest.raises(ValueError, match="at least one"):
        side_by_side([])
    with pytest.raises(ValueError, match="uint8"):
        side_by_side([np.zeros((4, 8, 3), np.float32)])
