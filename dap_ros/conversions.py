"""numpy <-> sensor_msgs: Image, CompressedImage, PointCloud2, LaserScan. Pure functions, no node.

Decoding validates everything a camera (or a broken bag) can get wrong and raises `InputError`
with a message naming the problem; the node logs it and waits for the next frame. Encoding
fills `msg.data` with an array.array('B') (never an ndarray or memoryview, which the generated
setters copy element by element: see shared/notes/ros2_from_pip.md). Messages are created
with field checks on, whose setters keep an array.array as it is (without them the setter
copies it once more). `ImageBuffer` / `CloudBuffer` go further for the node: one message kept
between frames whose pixels numpy writes in place, since rclpy copies a message while
publishing it; a frame then costs no copy at all beyond computing the values.
cv_bridge is used for raw images when it is importable; the numpy path is the same conversion.
"""

from __future__ import annotations

import array
import math
import sys

import cv2
import numpy as np
from sensor_msgs.msg import CompressedImage, Image, LaserScan, PointCloud2, PointField
from std_msgs.msg import Header

from dap_ros.decode import (
    ENCODING_CHANNELS,
    MAX_PANORAMA_WIDTH,
    MIN_PANORAMA_HEIGHT,
    FrameTooLargeError,
    InputError,
    check_panorama_size,
    compressed_size,
    compressed_to_rgb,
    image_to_rgb,
)

__all__ = [
    "CLOUD_FIELDS",
    "ENCODING_CHANNELS",
    "MAX_PANORAMA_WIDTH",
    "MIN_PANORAMA_HEIGHT",
    "CloudBuffer",
    "FrameTooLargeError",
    "ImageBuffer",
    "InputError",
    "check_panorama_size",
    "cloud_to_msg",
    "cloud_to_numpy",
    "compressed_size",
    "compressed_to_rgb",
    "depth_to_msg",
    "image_to_numpy",
    "image_to_rgb",
    "mask_to_msg",
    "rgb_to_compressed",
    "rgb_to_msg",
    "scan_to_msg",
]

_BIG_ENDIAN = sys.byteorder == "big"
_FLOAT32_MAX = float(np.finfo(np.float32).max)

CLOUD_FIELDS = (
    PointField(name="x", offset=0, datatype=PointField.FLOAT32, count=1),
    PointField(name="y", offset=4, datatype=PointField.FLOAT32, count=1),
    PointField(name="z", offset=8, datatype=PointField.FLOAT32, count=1),
    # Packed 0x00RRGGBB bits in a float32, the layout RViz's RGB8 colour transformer reads.
    PointField(name="rgb", offset=12, datatype=PointField.FLOAT32, count=1),
)
_CLOUD_DTYPE = np.dtype(
    {"names": ["x", "y", "z", "rgb"], "formats": ["<f4", "<f4", "<f4", "<u4"], "itemsize": 16}
)


# ---------------------------------------------------------------------------------------------
# Output: numpy -> Image / PointCloud2 / LaserScan
# ---------------------------------------------------------------------------------------------


def _byte_array(values: np.ndarray) -> array.array:
    """One memcpy of a contiguous array into the array.array('B') that msg.data holds."""
    out = array.array("B")
    out.frombytes(memoryview(np.ascontiguousarray(values)).cast("B"))
    return out


def _new_message(kind: type, **fields):
    """`kind(**fields)` with field checks on where the message supports them (ROS 2 Jazzy and
    later): its setters then keep an array.array('B') instead of copying it."""
    if "_check_fields" in getattr(kind, "__slots__", ()):
        return kind(check_fields=True, **fields)
    return kind(**fields)


def _image(header: Header, pixels: np.ndarray, encoding: str, channels: int, itemsize: int):
    height, width = pixels.shape[:2]
    msg = _new_message(Image, header=header, height=height, width=width, encoding=encoding)
    msg.is_bigendian = int(_BIG_ENDIAN and itemsize > 1)
    msg.step = width * channels * itemsize
    msg.data = _byte_array(pixels)
    return msg


def _zeroed_data(msg, nbytes: int) -> np.ndarray:
    """Give `msg` a zeroed data buffer of `nbytes`; returns a writable uint8 view of it."""
    msg.data = array.array("B", bytes(nbytes))
    return np.frombuffer(msg.data, dtype=np.uint8)  # the setter may have copied: view its array


_IMAGE_LAYOUT = {"32FC1": (np.float32, 1), "mono8": (np.uint8, 1), "rgb8": (np.uint8, 3)}


class ImageBuffer:
    """One Image message kept between frames; `frame` returns its pixels to write in place.

    encoding: 32FC1 (float32 [H, W]), mono8 (uint8 [H, W]) or rgb8 (uint8 [H, W, 3]). The
    message and its buffer are reallocated only when the size changes. Publish `msg` before
    the next `frame` call overwrites its pixels (rclpy copies the message while publishing).
    """

    def __init__(self, encoding: str) -> None:
        if encoding not in _IMAGE_LAYOUT:
            raise ValueError(f"ImageBuffer encodes {sorted(_IMAGE_LAYOUT)}, got '{encoding}'")
        self.encoding = encoding
        self.msg: Image | None = None
        self.pixels: np.ndarray | None = None

    def frame(self, header: Header, height: int, width: int) -> np.ndarray:
        """The pixels of the message for this frame (stamped with `header`), contents stale."""
        if self.pixels is None or self.pixels.shape[:2] != (height, width):
            dtype, channels = _IMAGE_LAYOUT[self.encoding]
            itemsize = np.dtype(dtype).itemsize
            msg = _new_message(Image, height=height, width=width, encoding=self.encoding)
            msg.is_bigendian = int(_BIG_ENDIAN and itemsize > 1)
            msg.step = width * channels * itemsize
            data = _zeroed_data(msg, msg.step * height)
            shape = (height, width) if channels == 1 else (height, width, channels)
            self.msg, self.pixels = msg, data.view(dtype).reshape(shape)
        self.msg.header = header
        return self.pixels


class CloudBuffer:
    """One organized PointCloud2 (x, y, z, rgb) kept between frames; see `ImageBuffer`."""

    def __init__(self) -> None:
        self.msg: PointCloud2 | None = None
        self.points: np.ndarray | None = None

    def frame(self, header: Header, height: int, width: int) -> np.ndarray:
        """float32 [height, width, 4] records of the message for this frame, contents stale."""
        if self.points is None or self.points.shape[:2] != (height, width):
            msg = _cloud_message(height, width, organized=True)
            data = _zeroed_data(msg, msg.row_step * height)
            self.msg, self.points = msg, data.view(np.float32).reshape(height, width, 4)
        self.msg.header = header
        return self.points


def depth_to_msg(range_img: np.ndarray, header: Header) -> Image:
    """32FC1 Image of a REP 117 range image (float32 [H, W] metres, ±inf, NaN)."""
    return _image(header, range_img.astype(np.float32, copy=False), "32FC1", 1, 4)


def mask_to_msg(within: np.ndarray, header: Header) -> Image:
    """mono8 Image of a boolean [H, W] mask: 255 inside, 0 outside."""
    return _image(header, np.multiply(within, np.uint8(255), dtype=np.uint8), "mono8", 1, 1)


def rgb_to_msg(rgb: np.ndarray, header: Header) -> Image:
    """rgb8 Image of uint8 [H, W, 3] RGB pixels."""
    return _image(header, rgb, "rgb8", 3, 1)


def rgb_to_compressed(rgb: np.ndarray, header: Header, quality: int = 90) -> CompressedImage:
    """JPEG CompressedImage (format "rgb8; jpeg compressed bgr8", as image_transport writes it)
    of uint8 [H, W, 3] RGB pixels; quality 1..100."""
    ok, jpeg = cv2.imencode(
        ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality]
    )
    if not ok:
        raise ValueError(f"JPEG encoding failed for an image of shape {rgb.shape}")
    msg = _new_message(CompressedImage, header=header, format="rgb8; jpeg compressed bgr8")
    msg.data = _byte_array(jpeg)
    return msg


def cloud_to_msg(cloud: np.ndarray, header: Header, organized: bool) -> PointCloud2:
    """PointCloud2 (x, y, z, rgb; 16 bytes a point) of float32 [h, w, 4] records.

    organized: the cloud keeps the image grid (h x w) and marks missing points with NaN
    (is_dense False); otherwise it must hold only real points (is_dense True).
    """
    if cloud.ndim != 3 or cloud.shape[2] != 4 or cloud.dtype != np.float32:
        raise ValueError(f"cloud must be float32 [h, w, 4], got {cloud.dtype} {cloud.shape}")
    height, width = cloud.shape[:2]
    msg = _cloud_message(height, width, organized)
    msg.header = header
    msg.data = _byte_array(cloud)
    return msg


def _cloud_message(height: int, width: int, organized: bool) -> PointCloud2:
    msg = _new_message(PointCloud2, height=height, width=width, fields=list(CLOUD_FIELDS))
    msg.is_bigendian = _BIG_ENDIAN
    msg.point_step = 16
    msg.row_step = 16 * width
    msg.is_dense = not organized
    return msg


def scan_to_msg(
    ranges: np.ndarray,
    angle_min: float,
    angle_increment: float,
    range_min: float,
    range_max: float,
    header: Header,
    scan_time: float = 0.0,
) -> LaserScan:
    """LaserScan of float32 [B] ranges (metres, REP 117), counter-clockwise from angle_min.

    All beams of a panorama are taken at once, so time_increment is 0; scan_time is the time
    between frames (seconds, 0 when unknown).
    """
    msg = LaserScan(header=header)  # small: no need for the checked setters
    msg.angle_min = float(angle_min)
    msg.angle_increment = float(angle_increment)
    msg.angle_max = float(angle_min + (len(ranges) - 1) * angle_increment)
    msg.time_increment = 0.0
    msg.scan_time = float(scan_time)
    msg.range_min = float(range_min)
    msg.range_max = (
        float(range_max) if math.isfinite(range_max) else float(np.finfo(np.float32).max)
    )
    values = array.array("f")
    values.frombytes(memoryview(np.ascontiguousarray(ranges, dtype=np.float32)).cast("B"))
    msg.ranges = values
    return msg


# ---------------------------------------------------------------------------------------------
# Readers for subscribers and tests
# ---------------------------------------------------------------------------------------------

_NUMPY_IMAGE = _IMAGE_LAYOUT


def image_to_numpy(msg: Image) -> np.ndarray:
    """Zero-copy view of a 32FC1 [H, W], mono8 [H, W] or rgb8 [H, W, 3] Image."""
    if msg.encoding not in _NUMPY_IMAGE:
        raise ValueError(f"image_to_numpy reads {sorted(_NUMPY_IMAGE)}, got '{msg.encoding}'")
    dtype, channels = _NUMPY_IMAGE[msg.encoding]
    dtype = np.dtype(dtype).newbyteorder(">" if msg.is_bigendian else "<")
    itemsize = dtype.itemsize * channels
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=msg.step * msg.height)
    rows = rows.reshape(msg.height, msg.step)[:, : msg.width * itemsize]
    pixels = np.ascontiguousarray(rows).view(dtype)
    shape = (msg.height, msg.width) if channels == 1 else (msg.height, msg.width, channels)
    return pixels.reshape(shape)


def cloud_to_numpy(msg: PointCloud2) -> np.ndarray:
    """Structured [height, width] array (x, y, z float32; rgb uint32) of a cloud from this node."""
    names = [field.name for field in msg.fields]
    if names != ["x", "y", "z", "rgb"] or msg.point_step != 16:
        raise ValueError(f"not an x, y, z, rgb cloud with 16-byte points: {names}")
    flat = np.frombuffer(msg.data, dtype=_CLOUD_DTYPE, count=msg.height * msg.width)
    return flat.reshape(msg.height, msg.width)
