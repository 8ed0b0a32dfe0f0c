"""Message conversions and range -> cloud / scan projection, without a running node.

Expected geometry comes from the closed-form pixel-to-ray formula (test/ros_oracle.py), not
from dap_core.geometry, so these tests cross-check the node's projection against DESIGN.md.
"""

from __future__ import annotations

import array
import math
import struct
import zlib

import cv2
import numpy as np
import pytest
from rclpy.serialization import deserialize_message, serialize_message
from ros_oracle import (
    FAR_WALLS,
    closed_form_lonlat,
    closed_form_rays,
    far_hall_truth,
    horizon_samples,
    room_truth,
    wall_distance,
)
from sensor_msgs.msg import CompressedImage, Image, LaserScan, PointCloud2, PointField
from std_msgs.msg import Header

from dap_core.geometry import pixel_rays
from dap_core.prediction import Prediction
from dap_ros import conversions as conv
from dap_ros import projection as proj

H, W = 32, 64


@pytest.fixture(scope="module")
def rgb() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (H, W, 3), dtype=np.uint8)


def raw_image(pixels: np.ndarray, encoding: str, pad: int = 0) -> Image:
    height, width = pixels.shape[:2]
    rows = pixels.reshape(height, -1)
    padded = np.zeros((height, rows.shape[1] + pad), np.uint8)
    padded[:, : rows.shape[1]] = rows
    msg = Image(height=height, width=width, encoding=encoding, step=padded.shape[1])
    msg.data = padded.tobytes()
    return msg


def header() -> Header:
    msg = Header(frame_id="pano")
    msg.stamp.sec, msg.stamp.nanosec = 12, 345
    return msg


# ---------------------------------------------------------------------------------------------
# Image / CompressedImage -> RGB
# ---------------------------------------------------------------------------------------------


def test_rgb8_decodes_pixel_exact(rgb):
    assert np.array_equal(conv.image_to_rgb(raw_image(rgb, "rgb8")), rgb)


@pytest.mark.parametrize(
    ("encoding", "make"),
    [
        ("bgr8", lambda rgb: rgb[..., ::-1]),
        ("rgba8", lambda rgb: np.dstack([rgb, np.full(rgb.shape[:2], 7, np.uint8)])),
        ("bgra8", lambda rgb: np.dstack([rgb[..., ::-1], np.full(rgb.shape[:2], 7, np.uint8)])),
    ],
)
def test_colour_encodings_decode_to_the_same_rgb(rgb, encoding, make):
    assert np.array_equal(
        conv.image_to_rgb(raw_image(np.ascontiguousarray(make(rgb)), encoding)), rgb
    )


def test_mono8_becomes_grey_rgb(rgb):
    grey = rgb[..., 0].copy()
    decoded = conv.image_to_rgb(raw_image(grey, "mono8"))
    assert decoded.shape == (H, W, 3)
    assert all(np.array_equal(decoded[..., c], grey) for c in range(3))


@pytest.mark.parametrize("encoding", ["rgb8", "bgr8", "mono8"])
def test_row_padding_in_step_is_skipped(rgb, encoding):
    pixels = {"rgb8": rgb, "bgr8": np.ascontiguousarray(rgb[..., ::-1]), "mono8": rgb[..., 1]}
    decoded = conv.image_to_rgb(raw_image(pixels[encoding], encoding, pad=13))
    expected = rgb if encoding != "mono8" else np.repeat(rgb[..., 1:2], 3, axis=2)
    assert np.array_equal(decoded, expected)


def _with(msg: Image, **fields) -> Image:
    for name, value in fields.items():
        setattr(msg, name, value)
    return msg


@pytest.mark.parametrize(
    ("problem", "make", "expected_text"),
    [
        ("16-bit depth", lambda m: _with(m, encoding="16UC1"), "unsupported encoding '16UC1'"),
        ("yuv", lambda m: _with(m, encoding="yuv422"), "unsupported encoding"),
        ("4:3", lambda m: _with(m, width=40, height=30, step=120), "not a 2:1"),
        ("zero size", lambda m: _with(m, width=0, height=0, step=0), "zero size"),
        ("zero width", lambda m: _with(m, width=0), "zero size"),
        ("tiny", lambda m: _with(m, width=8, height=4, step=24), "too small"),
        ("absurd", lambda m: _with(m, width=40000, height=20000, step=120000), "absurdly large"),
        ("short step", lambda m: _with(m, step=W * 3 - 1), "step 191 is shorter than a row"),
        ("short data", lambda m: _with(m, data=bytes(W * 3 * H - 1)), "shorter than step x height"),
        ("no data", lambda m: _with(m, data=b""), "data has 0 bytes"),
    ],
)
def test_bad_raw_images_raise_input_error_naming_the_problem(rgb, problem, make, expected_text):
    msg = make(raw_image(rgb, "rgb8"))
    with pytest.raises(conv.InputError, match=expected_text):
        conv.image_to_rgb(msg)


def test_png_decodes_exactly_whatever_the_format_string(rgb):
    ok, png = cv2.imencode(".png", rgb[..., ::-1])
    assert ok
    msg = CompressedImage(format="something odd", data=png.tobytes())
    assert np.array_equal(conv.compressed_to_rgb(msg), rgb)


def test_jpeg_decodes_close_to_the_original():
    smooth = np.zeros((H, W, 3), np.uint8)
    smooth[..., 0] = np.linspace(0, 255, W, dtype=np.uint8)[None, :]
    smooth[..., 2] = np.linspace(255, 0, H, dtype=np.uint8)[:, None]
    ok, jpeg = cv2.imencode(".jpg", smooth[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, 95])
    assert ok
    assert conv.compressed_size(jpeg.tobytes()) == ("jpeg", H, W)
    decoded = conv.compressed_to_rgb(CompressedImage(format="jpeg", data=jpeg.tobytes()))
    assert decoded.shape == (H, W, 3)
    assert np.abs(decoded.astype(int) - smooth).mean() < 3.0  # channel order kept (R, G, B)


def test_rgb_to_compressed_round_trips_through_the_decoder():
    smooth = np.zeros((H, W, 3), np.uint8)
    smooth[..., 1] = np.linspace(0, 255, W, dtype=np.uint8)[None, :]
    msg = conv.rgb_to_compressed(smooth, header(), quality=95)
    assert msg.format.endswith("jpeg compressed bgr8") and msg.header.frame_id == "pano"
    decoded = conv.compressed_to_rgb(msg)
    assert np.abs(decoded.astype(int) - smooth).mean() < 3.0


def _png_header(width: int, height: int) -> bytes:
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n" + struct.pack(">I", 13) + chunk + struct.pack(">I", zlib.crc32(chunk))
    )


def _jpeg_header(width: int, height: int) -> bytes:
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof


@pytest.mark.parametrize(
    ("problem", "data", "expected_text"),
    [
        ("empty", b"", "compressed image is empty"),
        ("not an image", b"GIF89a....", "neither JPEG nor PNG"),
        ("corrupt jpeg", b"\xff\xd8" + bytes(range(200)), "corrupt JPEG"),
        ("jpeg without frame", b"\xff\xd8\xff\xe0\x00\x10JFIF", "corrupt JPEG"),
        ("jpeg with no pixels", _jpeg_header(W, H), "corrupt JPEG"),
        ("absurd jpeg", _jpeg_header(60000, 30000) + bytes(64), "absurdly large"),
        ("absurd png", _png_header(2**20, 2**19), "absurdly large"),
        ("4:3 png", _png_header(640, 480), "not a 2:1"),
        ("png with no pixels", _png_header(W, H), "corrupt PNG"),
        ("short png", b"\x89PNG\r\n\x1a\n\x00", "corrupt PNG"),
    ],
)
def test_bad_compressed_images_raise_input_error(problem, data, expected_text):
    with pytest.raises(conv.InputError, match=expected_text):
        conv.compressed_to_rgb(CompressedImage(format="jpeg", data=data))


def test_a_panorama_wider_than_max_width_is_refused_naming_both_sizes():
    msg = conv.rgb_to_msg(np.zeros((H, W, 3), np.uint8), header())
    assert conv.image_to_rgb(msg, max_width=W).shape == (H, W, 3)  # at the limit: accepted
    text = rf"frame {W}x{H} \(0\.0 MB as rgb8\) is larger than the largest supported"
    with pytest.raises(conv.FrameTooLargeError, match=rf"{text} {W // 2}x{W // 4}"):
        conv.image_to_rgb(msg, max_width=W // 2)
    # Compressed: refused from the header alone (these bytes hold no pixels to decode).
    with pytest.raises(conv.FrameTooLargeError, match=r"frame 8192x4096 \(100\.7 MB"):
        conv.compressed_to_rgb(CompressedImage(data=_png_header(8192, 4096)), max_width=4096)


# ---------------------------------------------------------------------------------------------
# numpy -> Image / PointCloud2 / LaserScan
# ---------------------------------------------------------------------------------------------


def test_depth_image_keeps_rep117_values_bit_exact():
    depth = np.random.default_rng(1).uniform(0.1, 90, (H, W)).astype(np.float32)
    depth[0, :3] = [np.inf, -np.inf, np.nan]
    msg = conv.depth_to_msg(depth, header())
    assert (msg.encoding, msg.height, msg.width, msg.step) == ("32FC1", H, W, 4 * W)
    assert msg.is_bigendian == 0 and msg.header.frame_id == "pano"
    again = deserialize_message(serialize_message(msg), Image)
    assert np.array_equal(conv.image_to_numpy(again).view(np.uint32), depth.view(np.uint32))


def test_mask_image_is_255_inside_0_outside():
    within = np.zeros((H, W), bool)
    within[3:7, 10:20] = True
    msg = conv.mask_to_msg(within, header())
    assert (msg.encoding, msg.step) == ("mono8", W)
    assert np.array_equal(conv.image_to_numpy(msg), np.where(within, 255, 0).astype(np.uint8))


def test_rgb_image_round_trips(rgb):
    msg = conv.rgb_to_msg(rgb, header())
    assert (msg.encoding, msg.step) == ("rgb8", 3 * W)
    assert np.array_equal(conv.image_to_rgb(msg), rgb)


def test_cloud_message_layout_is_xyz_rgb_float32_16_bytes():
    cloud = np.random.default_rng(2).normal(size=(4, 6, 4)).astype(np.float32)
    msg = conv.cloud_to_msg(cloud, header(), organized=True)
    assert [(f.name, f.offset, f.datatype, f.count) for f in msg.fields] == [
        ("x", 0, PointField.FLOAT32, 1),
        ("y", 4, PointField.FLOAT32, 1),
        ("z", 8, PointField.FLOAT32, 1),
        ("rgb", 12, PointField.FLOAT32, 1),
    ]
    assert (msg.height, msg.width, msg.point_step, msg.row_step) == (4, 6, 16, 96)
    assert not msg.is_dense and not msg.is_bigendian
    assert len(msg.data) == 4 * 6 * 16
    again = conv.cloud_to_numpy(deserialize_message(serialize_message(msg), PointCloud2))
    for k, name in enumerate("xyz"):
        assert np.array_equal(again[name], cloud[..., k])
    assert conv.cloud_to_msg(cloud[:1], header(), organized=False).is_dense


def test_scan_message_angles_and_special_values():
    ranges = np.array([1.0, np.inf, -np.inf, 2.5], np.float32)
    msg = conv.scan_to_msg(ranges, -math.pi * 3 / 4, math.pi / 2, 0.3, 50.0, header())
    assert msg.angle_max == pytest.approx(math.pi * 3 / 4)
    assert (msg.range_min, msg.range_max, msg.time_increment) == (
        pytest.approx(0.3),
        pytest.approx(50.0),
        0.0,
    )
    again = deserialize_message(serialize_message(msg), LaserScan)
    assert np.array_equal(np.asarray(again.ranges, np.float32), ranges)
    unbounded = conv.scan_to_msg(ranges, 0.0, 0.1, 0.0, math.inf, header())
    assert math.isfinite(unbounded.range_max) and unbounded.range_max > 1e38


def test_every_message_holds_its_payload_as_an_array_not_an_ndarray(rgb):
    # An ndarray or memoryview in msg.data costs rclpy an element-by-element conversion.
    depth = np.ones((H, W), np.float32)
    messages = [
        conv.depth_to_msg(depth, header()),
        conv.mask_to_msg(depth > 0, header()),
        conv.rgb_to_msg(rgb, header()),
        conv.rgb_to_compressed(rgb, header()),
        conv.cloud_to_msg(np.zeros((2, 3, 4), np.float32), header(), organized=True),
    ]
    for msg in messages:
        assert type(msg.data) is array.array and msg.data.typecode == "B", type(msg)
    assert type(conv.scan_to_msg(depth[0], 0.0, 0.1, 0.0, 9.0, header()).ranges) is array.array


@pytest.mark.parametrize("encoding", ["32FC1", "mono8", "rgb8"])
def test_image_buffer_reuses_one_message_written_in_place(encoding):
    buffer = conv.ImageBuffer(encoding)
    rng = np.random.default_rng(9)
    for frame in range(3):
        pixels = buffer.frame(header(), H, W)
        msg = buffer.msg
        if frame == 0:
            first_msg, first_data = msg, msg.data
        assert msg is first_msg and msg.data is first_data  # nothing reallocated
        values = rng.integers(0, 255, pixels.shape).astype(pixels.dtype)
        pixels[...] = values
        again = deserialize_message(serialize_message(msg), Image)
        assert np.array_equal(conv.image_to_numpy(again), values)  # what rclpy publishes
        assert (again.encoding, again.height, again.width) == (encoding, H, W)
        assert again.header.frame_id == "pano" and again.step == values[0].nbytes
    bigger = buffer.frame(header(), 2 * H, 2 * W)
    assert bigger.shape[:2] == (2 * H, 2 * W) and buffer.msg.height == 2 * H
    assert type(buffer.msg.data) is array.array


def test_cloud_buffer_is_written_in_place_by_build_cloud(rgb):
    range_m = np.random.default_rng(10).uniform(0.5, 20.0, (H, W)).astype(np.float32)
    range_m[:4] = np.inf
    expected = proj.build_cloud(range_m, rgb, 2, -5.0, 5.0, True)
    buffer = conv.CloudBuffer()
    for _ in range(2):  # the second frame reuses the first frame's message
        points = buffer.frame(header(), H // 2, W // 2)
        assert proj.build_cloud(range_m, rgb, 2, -5.0, 5.0, True, out=points) is points
    assert np.array_equal(points.view(np.uint32), expected.view(np.uint32))  # NaN bits too
    msg = deserialize_message(serialize_message(buffer.msg), PointCloud2)
    fresh = conv.cloud_to_msg(expected, header(), organized=True)
    assert bytes(msg.data) == bytes(fresh.data)
    assert (msg.height, msg.width, msg.row_step, msg.is_dense) == (H // 2, W // 2, 8 * W, False)
    with pytest.raises(ValueError, match="contiguous float32"):
        proj.build_cloud(range_m, rgb, 1, -5.0, 5.0, True, out=points)


# ---------------------------------------------------------------------------------------------
# Projection: rays, range image, cloud
# ---------------------------------------------------------------------------------------------


def test_ray_grid_is_pixel_rays_strided_and_cached():
    grid = proj.ray_grid(H, W, 3)
    rays = pixel_rays(H, W).numpy()[::3, ::3]
    assert np.allclose(grid.rays(), rays, rtol=0, atol=2.5e-7)  # float32 factors: ~2 ulp
    assert proj.ray_grid(H, W, 3) is grid
    assert not grid.cos_lon.flags.writeable
    assert np.allclose(grid.cos_lat**2 + grid.sin_lat**2, 1.0, atol=1e-6)
    assert np.allclose(grid.cos_lon**2 + grid.sin_lon**2, 1.0, atol=1e-6)


def test_ray_grid_matches_the_closed_form_convention():
    grid = proj.ray_grid(H, W, 1)
    assert np.allclose(grid.rays(), closed_form_rays(H, W), atol=1e-6)


def cloud_of(range_m: np.ndarray, stride: int = 1, organized: bool = True, band=(-1e3, 1e3)):
    return proj.build_cloud(range_m.astype(np.float32), None, stride, *band, organized)


def test_centre_columns_look_along_plus_x():
    cloud = cloud_of(np.full((H, W), 5.0))
    row = H // 2  # just below the horizon
    right_of_centre, left_of_centre = cloud[row, W // 2], cloud[row, W // 2 - 1]
    for point in (right_of_centre, left_of_centre):
        assert point[0] > 4.9 and abs(point[1]) < 0.3
    assert left_of_centre[1] > 0 > right_of_centre[1]  # y is left
    assert left_of_centre[1] == pytest.approx(-right_of_centre[1], abs=1e-6)


def test_left_quarter_column_looks_along_plus_y():
    cloud = cloud_of(np.full((H, W), 5.0))
    for u in (W // 4 - 1, W // 4):  # the two columns around λ = +π/2
        point = cloud[H // 2, u]
        assert point[1] > 4.9 and abs(point[0]) < 0.3
    assert cloud[H // 2, 3 * W // 4][1] < -4.9  # right quarter: −y
    assert cloud[0, W // 2][2] > 4.9 and cloud[-1, W // 2][2] < -4.9  # top row up, bottom down


def test_cloud_points_are_range_times_the_closed_form_ray():
    range_m = np.random.default_rng(3).uniform(0.5, 80.0, (H, W)).astype(np.float32)
    cloud = cloud_of(range_m)
    expected = range_m[..., None] * closed_form_rays(H, W)
    assert np.allclose(cloud[..., :3], expected, rtol=1e-5, atol=1e-5)


def test_stride_keeps_every_nth_pixel_centre():
    range_m = np.random.default_rng(4).uniform(1.0, 9.0, (H, W)).astype(np.float32)
    full, strided = cloud_of(range_m), cloud_of(range_m, stride=3)
    assert strided.shape == (math.ceil(H / 3), math.ceil(W / 3), 4)
    assert np.array_equal(strided, full[::3, ::3])


def test_rgb_is_packed_0x00rrggbb():
    colours = np.zeros((H, W, 3), np.uint8)
    colours[..., :] = (10, 20, 30)
    colours[0, 0] = (255, 255, 255)
    cloud = proj.build_cloud(np.full((H, W), 2.0, np.float32), colours, 1, -1e3, 1e3, True)
    bits = cloud[..., 3].view(np.uint32)
    assert bits[5, 5] == 0x000A141E
    assert bits[0, 0] == 0x00FFFFFF and np.isfinite(cloud[..., 3]).all()


def test_range_image_marks_rep117_special_values():
    range_m = np.full((H, W), 7.0, np.float32)
    range_m[0, 0], range_m[0, 1], range_m[0, 2] = np.nan, -1.0, 0.2
    range_m[3, 4] = 6.5
    within = np.ones((H, W), bool)
    within[1, :] = False
    within[0, 0] = False  # invalid stays invalid outside the mask
    gated = proj.range_image(range_m, within)
    assert np.isnan(gated[0, 0]) and np.isnan(gated[0, 1])  # invalid
    assert np.isposinf(gated[1]).all()  # outside the mask: no return
    assert np.array_equal(gated[2:], range_m[2:])
    limited = proj.range_image(range_m, within, 0.5, 6.0)
    assert np.isneginf(limited[0, 2])  # too close
    assert np.isposinf(limited[1]).all()  # outside the mask: no return, even if close
    assert np.isposinf(limited[2:]).all()  # beyond max_range
    assert np.isnan(limited[0, 0]) and np.isnan(limited[0, 1])
    assert np.array_equal(proj.range_image(range_m, None)[2:], range_m[2:])
    # Written into a caller's buffer, equal to the freshly allocated result.
    out = np.empty((H, W), np.float32)
    assert proj.range_image(range_m, within, 0.5, 6.0, out=out) is out
    assert np.array_equal(out, limited, equal_nan=True)


def test_range_image_outside_the_mask_beats_too_close():
    range_m = np.array([[0.2, 0.2, 50.0, 3.0]], np.float32)
    within = np.array([[True, False, True, True]])
    expected = [-np.inf, np.inf, np.inf, 3.0]
    assert np.array_equal(proj.range_image(range_m, within, 0.5, 10.0)[0], expected)


def test_within_mask_uses_the_head_when_it_ran_else_the_range():
    range_m = np.array([[5.0, 15.0, 25.0, np.nan]], np.float32)
    probability = np.array([[0.9, 0.5, 0.49, 1.0]], np.float32)
    prediction = Prediction(range_m, {20: probability})
    assert proj.within_mask(prediction, 20).tolist() == [[True, True, False, True]]
    assert proj.within_mask(prediction, 10).tolist() == [[True, False, False, False]]
    out = np.zeros((1, 4), bool)
    assert proj.within_mask(prediction, 20, out=out) is out
    assert np.array_equal(out, prediction.within(20))


def test_cloud_has_nan_where_there_is_no_point_and_dense_drops_them():
    range_m = np.full((H, W), 4.0, np.float32)
    range_m[:, :5] = np.inf
    range_m[:, 5:8] = -np.inf
    range_m[:, 8:10] = np.nan
    organized = cloud_of(range_m, band=(-1.0, 1.0))
    kept = np.isfinite(organized[..., 0])
    assert not kept[:, :10].any()
    assert np.isnan(organized[~kept][:, :3]).all()
    z = organized[kept][:, 2]
    assert z.min() >= -1.0 and z.max() <= 1.0
    expected_rows = np.abs(4.0 * np.sin(closed_form_lonlat(H, W)[1])) <= 1.0
    assert np.array_equal(kept[:, 10], expected_rows)
    dense = cloud_of(range_m, organized=False, band=(-1.0, 1.0))
    assert dense.shape == (1, int(kept.sum()), 4)
    assert np.array_equal(dense[0], organized[kept])


def test_clearing_points_end_no_return_rays_only():
    range_m = np.full((H, W), 4.0, np.float32)
    range_m[:, :5] = np.inf  # no return: cleared
    range_m[:, 5:8] = -np.inf  # too close: never cleared
    range_m[:, 8:10] = np.nan  # invalid: never cleared
    cloud = proj.build_cloud(range_m, None, 1, -1.0, 1.0, True, clearing_range=2.5)
    rays = closed_form_rays(H, W)
    lat = closed_form_lonlat(H, W)[1]
    in_band = np.abs(2.5 * np.sin(lat)) <= 1.0  # the height band applies to clearing points
    assert np.allclose(cloud[in_band, :5, :3], 2.5 * rays[in_band, :5], atol=1e-5)
    assert np.isnan(cloud[~in_band, :5, :3]).all()
    assert np.isnan(cloud[:, 5:10, :3]).all()
    assert np.array_equal(cloud[:, 10:], cloud_of(range_m, band=(-1.0, 1.0))[:, 10:], True)
    dense = proj.build_cloud(range_m, None, 1, -1.0, 1.0, False, clearing_range=2.5)
    assert dense.shape[1] == int(np.isfinite(cloud[..., 0]).sum())


# ---------------------------------------------------------------------------------------------
# Projection: scan
# ---------------------------------------------------------------------------------------------


def test_scan_layout_covers_the_circle_counter_clockwise():
    layout = proj.scan_layout(W, 16)
    assert layout.angle_min == pytest.approx(-math.pi + math.pi / 16)
    assert layout.angle_max == pytest.approx(math.pi - math.pi / 16)
    assert layout.angle_increment == pytest.approx(2 * math.pi / 16)
    assert list(layout.column_starts) == list(range(0, W, W // 16))
    with pytest.raises(ValueError, match="scan beams"):
        proj.scan_layout(W, W + 1)


def test_scan_of_a_sphere_is_the_nearest_in_band_horizontal_distance():
    radius, band = 5.0, 0.5
    ranges, _ = proj.build_scan(np.full((H, W), radius, np.float32), 8, -band, band, 0.0, 100.0)
    lat = closed_form_lonlat(H, W)[1]
    in_band = np.abs(radius * np.sin(lat)) <= band
    expected = (radius * np.cos(lat[in_band])).min()
    assert np.allclose(ranges, expected, rtol=1e-6)


@pytest.mark.parametrize("beams", [W, W // 4, 24])  # 24 does not divide 64: uneven sectors
def test_scan_of_the_box_room_equals_the_wall_distance(beams):
    height, width = 64, 128
    truth = room_truth(height, width).astype(np.float32)
    ranges, layout = proj.build_scan(truth, beams, -0.2, 0.2, 0.0, 100.0)
    lon = closed_form_lonlat(height, width)[0][::-1]  # columns right to left: azimuth rising
    sector = np.floor((lon + math.pi) / (2 * math.pi) * beams).astype(int)
    expected = np.array([wall_distance(lon[sector == b]).min() for b in range(beams)])
    assert np.allclose(ranges, expected, rtol=1e-5)
    # Beam angles follow the azimuth of the columns they hold (LaserScan convention).
    centres = layout.angle_min + layout.angle_increment * np.arange(beams)
    for b in range(beams):
        assert np.all(np.abs(lon[sector == b] - centres[b]) <= layout.angle_increment / 2 + 1e-9)


@pytest.mark.parametrize(
    ("band", "far"),
    [
        ((-0.2, 0.2), 12.0),
        ((-3.0, -1.0), 12.0),
        ((0.5, 4.0), 12.0),
        ((-50.0, 50.0), 12.0),
        ((-0.2, 0.2), 60.0),  # mostly far points: off the horizon they leave the band
    ],
)
def test_scan_equals_a_brute_force_reference_on_random_ranges(band, far):
    rng = np.random.default_rng(8)
    range_m = rng.uniform(0.2, far, (H, W)).astype(np.float32)
    range_m[rng.random((H, W)) < 0.05] = np.nan
    range_m[rng.random((H, W)) < 0.05] = np.inf
    beams, range_max = 16, far - 2.0
    ranges, _ = proj.build_scan(range_m, beams, *band, 0.3, range_max)
    points = range_m[..., None].astype(np.float64) * closed_form_rays(H, W)
    with np.errstate(invalid="ignore"):
        in_band = (points[..., 2] >= band[0]) & (points[..., 2] <= band[1])
    horizontal = np.where(in_band, np.hypot(points[..., 0], points[..., 1]), np.inf)
    if band[0] <= 0.0 <= band[1]:  # the camera's own plane lies in the band: the horizon too
        horizontal = np.vstack([horizontal, horizon_samples(range_m)[None, :]])
    lon = closed_form_lonlat(H, W)[0]
    sector = np.floor((lon + math.pi) / (2 * math.pi) * beams).astype(int)
    expected = np.array([horizontal[:, sector == b].min() for b in range(beams)])
    expected = np.where(expected > range_max, np.inf, np.where(expected < 0.3, -np.inf, expected))
    assert np.allclose(ranges, expected, rtol=1e-5)


def test_scan_sees_far_walls_on_the_horizon():
    """A hall 64-70 m wide at 512x256: the rows next to the horizon are ±0.35° off it, so
    their points lie ±0.4 m off the camera's plane, outside the ±0.2 m band; the horizon
    itself must still return the walls (not +inf, which Nav2 would clear)."""
    height, width, beams = 256, 512, 360
    truth = far_hall_truth(height, width).astype(np.float32)
    ranges, _ = proj.build_scan(truth, beams, -0.2, 0.2, 0.0, 100.0)
    assert np.isfinite(ranges).all()
    lon = closed_form_lonlat(height, width)[0][::-1]
    sector = np.floor((lon + math.pi) / (2 * math.pi) * beams).astype(int)
    expected = np.array([wall_distance(lon[sector == b], FAR_WALLS).min() for b in range(beams)])
    # The horizon interpolates the ranges d/cos(±0.35°) of the straddling rows: 1.9e-5 relative
    # above the wall distance d, plus float32 rounding (6e-8).
    assert np.allclose(ranges, expected, rtol=3e-5)
    assert ranges.min() >= 64.0 - 1e-3 and ranges.max() <= math.hypot(70.0, 68.0)


def test_horizon_sample_interpolates_the_straddling_rows_and_keeps_lone_returns():
    range_m = np.full((H, W), 50.0, np.float32)
    range_m[H // 2 - 1, :] = 10.0  # the row just above the horizon
    range_m[H // 2, :] = 20.0  # the row just below
    range_m[H // 2 - 1, 3] = np.inf  # sky above the horizon in column 3: the return stays
    range_m[H // 2, 5] = np.nan  # invalid below the horizon in column 5
    range_m[H // 2 - 1 : H // 2 + 1, 7] = np.inf  # nothing at all in column 7
    within = np.ones((H, W), bool)
    within[H // 2, 9] = False  # column 9's lower pixel is beyond the range mask
    samples = proj.horizon_range(range_m, within)
    expected = horizon_samples(np.where(within, range_m, np.inf))
    assert np.allclose(samples, expected, rtol=1e-6)
    assert samples[0] == pytest.approx(15.0) and samples[3] == 20.0 and samples[5] == 10.0
    assert np.isposinf(samples[7]) and samples[9] == 10.0


def test_scan_takes_the_horizon_only_when_the_band_holds_the_camera():
    truth = far_hall_truth(64, 128).astype(np.float32)
    assert np.isposinf(proj.build_scan(truth, 16, 0.05, 0.1, 0.0, 100.0)[0]).all()
    assert np.isfinite(proj.build_scan(truth, 16, -0.1, 0.1, 0.0, 100.0)[0]).all()


def test_scan_ignores_points_outside_the_range_mask():
    range_m = np.full((H, W), 6.0, np.float32)
    range_m[:, W // 2 :] = 2.0  # a near wall on the right half of the image
    within = np.ones((H, W), bool)
    within[:, W // 2 :] = False  # ... that the range mask puts beyond its threshold
    masked, _ = proj.build_scan(range_m, 8, -0.5, 0.5, 0.0, 100.0, within=within)
    gated = proj.range_image(range_m, within)
    assert np.array_equal(masked, proj.build_scan(gated, 8, -0.5, 0.5, 0.0, 100.0)[0])
    # Right half of the image = negative azimuths = the first beams: no return there.
    assert np.isposinf(masked[:4]).all() and (masked[4:] > 5.0).all()


def test_scan_special_values():
    range_m = np.full((H, W), np.inf, np.float32)  # sky everywhere: no return
    range_m[H // 2, : W // 2] = 0.1  # too close on the left half of the image
    ranges, _ = proj.build_scan(range_m, 4, -0.2, 0.2, 0.3, 10.0)
    # Image columns left of centre look at positive azimuths: beams 2 and 3 (counter-clockwise).
    assert np.isposinf(ranges[:2]).all() and np.isneginf(ranges[2:]).all()
    far = proj.build_scan(np.full((H, W), 20.0, np.float32), 4, -1.0, 1.0, 0.0, 10.0)[0]
    assert np.isposinf(far).all()  # beyond range_max
    nan = proj.build_scan(np.full((H, W), np.nan, np.float32), 4, -1.0, 1.0, 0.0, 10.0)[0]
    assert np.isposinf(nan).all()  # invalid pixels are no return, not a NaN beam


def test_scan_sees_an_obstacle_in_the_beam_of_its_azimuth():
    range_m = np.full((H, W), 9.0, np.float32)
    u = 5  # a post 5 columns from the left edge: azimuth close to +π
    range_m[:, u] = 2.0
    ranges, layout = proj.build_scan(range_m, 32, -0.3, 0.3, 0.0, 100.0)
    azimuth = closed_form_lonlat(H, W)[0][u]
    beam = int(
        (azimuth - (layout.angle_min - layout.angle_increment / 2)) // layout.angle_increment
    )
    assert ranges[beam] < 2.0 and np.all(np.delete(ranges, beam) > 8.0)


# ---------------------------------------------------------------------------------------------
# Cross-checks with the ROS helper libraries, where a full ROS 2 install provides them
# ---------------------------------------------------------------------------------------------


def test_cloud_reads_back_with_sensor_msgs_py():
    point_cloud2 = pytest.importorskip(
        "sensor_msgs_py.point_cloud2", reason="sensor_msgs_py comes only with a ROS 2 install"
    )
    cloud = cloud_of(np.random.default_rng(5).uniform(1, 5, (H, W)))
    msg = conv.cloud_to_msg(cloud, header(), organized=True)
    xyz = point_cloud2.read_points_numpy(msg, field_names=("x", "y", "z"))
    assert np.array_equal(xyz, cloud[..., :3].reshape(-1, 3))


def test_depth_image_reads_back_with_cv_bridge():
    cv_bridge = pytest.importorskip("cv_bridge", reason="cv_bridge comes only with a ROS 2 install")
    depth = np.random.default_rng(6).uniform(0.1, 90, (H, W)).astype(np.float32)
    msg = conv.depth_to_msg(depth, header())
    assert np.array_equal(cv_bridge.CvBridge().imgmsg_to_cv2(msg), depth)


def test_lens_images_of_any_aspect_decode_when_not_erp():
    """Two-lens cameras send square images: refused as panoramas, taken as lens images."""
    rng = np.random.default_rng(5)
    square = rng.integers(0, 256, (40, 40, 3), np.uint8)
    raw = conv.rgb_to_msg(square, Header(frame_id="lens"))
    packed = conv.rgb_to_compressed(square, Header(frame_id="lens"), 95)
    packed.format = "png"
    ok, data = cv2.imencode(".png", cv2.cvtColor(square, cv2.COLOR_RGB2BGR))
    assert ok
    packed.data = data.tobytes()
    for decode in (conv.image_to_rgb, conv.compressed_to_rgb):
        msg = raw if decode is conv.image_to_rgb else packed
        with pytest.raises(conv.InputError, match="not a 2:1"):
            decode(msg)
        assert np.array_equal(decode(msg, erp=False), square)  # PNG: lossless
    tiny = conv.rgb_to_msg(square[:4, :4], Header())
    with pytest.raises(conv.InputError, match="too small"):
        conv.image_to_rgb(tiny, erp=False)
