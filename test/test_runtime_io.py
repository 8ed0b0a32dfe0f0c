"""Prediction writers: 16-bit millimetre PNG, mask PNGs, PLY in the REP 103 frame, images."""

from __future__ import annotations

import math

import cv2
import numpy as np
import pytest
from plyfile import PlyData

from dap_core.io import (
    list_images,
    mask_to_png8,
    png16_to_range,
    range_to_cloud,
    range_to_png16,
    read_range_png16,
    read_rgb,
    save_colorized,
    save_mask_pngs,
    save_ply,
    save_range_png16,
)


def test_png16_is_rounded_millimetres_with_reserved_invalid_and_far_codes():
    range_m = np.array([[0.0, 1.2344, 1.2346, 65.534], [65.6, 100.0, np.inf, np.nan]], np.float32)
    mm = range_to_png16(range_m)
    assert mm.dtype == np.uint16
    assert mm.tolist() == [[0, 1234, 1235, 65534], [65535, 65535, 65535, 0]]
    back = png16_to_range(mm)
    assert back[0, 1] == pytest.approx(1.234)
    assert np.isinf(back[1, :3]).all()  # saturated = "at or beyond 65.535 m"
    assert np.isnan(back[1, 3]) and np.isnan(back[0, 0])  # 0 mm is reserved for invalid


def test_png16_file_round_trip_within_half_a_millimetre(tmp_path):
    range_m = np.random.default_rng(0).uniform(0.3, 60.0, (32, 64)).astype(np.float32)
    path = tmp_path / "range.png"
    save_range_png16(path, range_m)
    raw = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    assert raw.dtype == np.uint16 and raw.shape == (32, 64)
    np.testing.assert_allclose(read_range_png16(path), range_m, atol=5e-4 + 1e-6)


def test_negative_range_and_wrong_shapes_are_refused():
    with pytest.raises(ValueError, match="negative"):
        range_to_png16(np.array([[-1.0]], np.float32))
    with pytest.raises(ValueError, match=r"\[H, W\]"):
        range_to_png16(np.zeros((2, 3, 4), np.float32))
    with pytest.raises(ValueError, match="uint16"):
        png16_to_range(np.zeros((2, 2), np.float32))


def test_mask_png_maps_probability_to_0_255(tmp_path):
    prob = np.array([[0.0, 0.5, 1.0, np.nan]], np.float32)
    assert mask_to_png8(prob).tolist() == [[0, 128, 255, 0]]
    paths = save_mask_pngs(tmp_path, "pano", {50: prob, 10: 1 - prob})
    assert [p.name for p in paths] == ["pano_within_10m.png", "pano_within_50m.png"]
    assert cv2.imread(str(paths[1]), cv2.IMREAD_UNCHANGED).tolist() == [[0, 128, 255, 0]]


def test_cloud_points_follow_the_project_frame():
    H, W = 8, 16
    range_m = np.full((H, W), 2.0, np.float32)
    range_m[0, 0] = np.inf  # sky: left out
    range_m[1, 0] = np.nan  # invalid: left out
    points, colours = range_to_cloud(range_m)
    assert colours is None and len(points) == H * W - 2
    assert np.allclose(np.linalg.norm(points, axis=1), 2.0, atol=1e-5)
    full, _ = range_to_cloud(np.full((H, W), 2.0, np.float32))
    grid = full.reshape(H, W, 3)
    # Column W/2 - 1 and W/2 straddle lon 0 (forward, +x); the left quarter column looks +y.
    lon = lambda u: math.pi * (1 - 2 * (u + 0.5) / W)  # noqa: E731
    lat = math.pi * (0.5 - (H // 2 + 0.5) / H)
    u_left = W // 4
    expected = 2 * np.array(
        [
            math.cos(lat) * math.cos(lon(u_left)),
            math.cos(lat) * math.sin(lon(u_left)),
            math.sin(lat),
        ]
    )
    np.testing.assert_allclose(grid[H // 2, u_left], expected, atol=1e-5)
    assert grid[H // 2, u_left, 1] > 1.5  # mostly +y (left)
    assert grid[0, 5, 2] > 1.9  # top row looks up (+z)
    assert grid[H // 2, W // 2, 0] > 1.9  # centre column looks forward (+x)


def test_cloud_stride_keeps_pixels_without_moving_them():
    range_m = np.random.default_rng(1).uniform(1, 5, (8, 16)).astype(np.float32)
    all_points, _ = range_to_cloud(range_m)
    strided, _ = range_to_cloud(range_m, stride=4)
    assert len(strided) == 2 * 4
    np.testing.assert_array_equal(strided[0], all_points[0])
    np.testing.assert_array_equal(strided[1], all_points[4])
    with pytest.raises(ValueError, match="stride"):
        range_to_cloud(range_m, stride=0)


def test_ply_holds_finite_points_with_colours(tmp_path):
    range_m = np.full((4, 8), 3.0, np.float32)
    range_m[0] = np.inf
    rgb = np.zeros((4, 8, 3), np.uint8)
    rgb[..., 0] = 200
    rgb[2, 3] = (1, 2, 3)
    path = tmp_path / "cloud.ply"
    assert save_ply(path, range_m, rgb) == 24
    vertex = PlyData.read(str(path))["vertex"]
    assert vertex.count == 24
    xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    np.testing.assert_allclose(xyz, range_to_cloud(range_m)[0], atol=1e-6)
    assert vertex["red"][0] == 200
    index = (2 - 1) * 8 + 3  # row 0 is dropped
    assert (vertex["red"][index], vertex["green"][index], vertex["blue"][index]) == (1, 2, 3)
    with pytest.raises(ValueError, match="rgb must be uint8"):
        save_ply(path, range_m, rgb[:2])


def test_colorized_png_is_written_with_a_bar(tmp_path):
    range_m = np.linspace(0.5, 90, 32 * 64, dtype=np.float32).reshape(32, 64)
    path = tmp_path / "colour.png"
    save_colorized(path, range_m, 100.0)
    image = cv2.imread(str(path))
    assert image.shape[1] == 64 and image.shape[0] > 32  # the colour bar adds rows


def test_reading_images_and_listing_directories(tmp_path):
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0] = 255  # pure red
    cv2.imwrite(str(tmp_path / "b.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    cv2.imwrite(str(tmp_path / "a.jpg"), np.zeros((4, 6, 3), np.uint8))
    (tmp_path / "notes.txt").write_text("not an image")
    assert [p.name for p in list_images(tmp_path)] == ["a.jpg", "b.png"]
    assert read_rgb(tmp_path / "b.png")[0, 0].tolist() == [255, 0, 0]
    with pytest.raises(ValueError, match="cannot read image"):
        read_rgb(tmp_path / "notes.txt")
    with pytest.raises(FileNotFoundError, match="no such image"):
        list_images(tmp_path / "missing")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(FileNotFoundError, match="no images"):
        list_images(empty)
