"""Raw and compressed panorama messages -> RGB pixels, with the checks a broken camera or bag needs.

Owns the input side of the message conversions. No ROS import: the functions read only the
fields of a sensor_msgs Image (encoding, height, width, step, data) or CompressedImage (data),
so they take rclpy messages (the node) and rosbags messages (`dap bag`) alike.
`dap_ros.conversions` re-exports everything here. Bad input raises `InputError` with a message
naming the problem.
"""

from __future__ import annotations

import struct

import cv2
import numpy as np

try:  # a full ROS 2 install has cv_bridge; the pip wheels do not
    from cv_bridge import CvBridge
except ImportError:  # pragma: no cover - depends on the install
    CvBridge = None

__all__ = [
    "ENCODING_CHANNELS",
    "MAX_PANORAMA_WIDTH",
    "MIN_PANORAMA_HEIGHT",
    "FrameTooLargeError",
    "InputError",
    "check_panorama_size",
    "compressed_size",
    "compressed_to_rgb",
    "image_to_rgb",
]

ENCODING_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1}
_TO_RGB = {
    "bgr8": cv2.COLOR_BGR2RGB,
    "rgba8": cv2.COLOR_RGBA2RGB,
    "bgra8": cv2.COLOR_BGRA2RGB,
    "mono8": cv2.COLOR_GRAY2RGB,
}
MIN_PANORAMA_HEIGHT = 8  # pixels; smaller "panoramas" are test patterns or garbage
MAX_PANORAMA_WIDTH = 16384  # pixels; 16K ERP is beyond any 360 camera sold today


class InputError(ValueError):
    """An input message the node cannot use. The text names the problem."""


class FrameTooLargeError(InputError):
    """A well-formed panorama wider than the largest the caller supports (its `max_width`)."""


def check_panorama_size(
    height: int, width: int, max_width: int = MAX_PANORAMA_WIDTH, *, erp: bool = True
) -> None:
    """Raise InputError unless height x width (pixels) is a usable 2:1 ERP panorama (with
    `erp` False: a usable image of any aspect, e.g. one fisheye lens) no wider than
    `max_width` (FrameTooLargeError, checked before any pixel is decoded)."""
    if height <= 0 or width <= 0:
        raise InputError(f"image has zero size ({width}x{height})")
    if erp and width != 2 * height:
        raise InputError(
            f"image is {width}x{height}, not a 2:1 equirectangular panorama (width = 2 x height)"
        )
    if height < MIN_PANORAMA_HEIGHT:
        raise InputError(f"image {width}x{height} is too small (height < {MIN_PANORAMA_HEIGHT})")
    if width > MAX_PANORAMA_WIDTH:
        raise InputError(f"image {width}x{height} is absurdly large (width > {MAX_PANORAMA_WIDTH})")
    if width > max_width:
        raise FrameTooLargeError(
            f"frame {width}x{height} ({width * height * 3 / 1e6:.1f} MB as rgb8) is larger than"
            f" the largest supported {max_width}x{max_width // 2}"
        )


def image_to_rgb(msg, max_width: int = MAX_PANORAMA_WIDTH, *, erp: bool = True) -> np.ndarray:
    """RGB pixels of a raw panorama: uint8 [H, W, 3] (a read-only view of msg.data for rgb8).

    Accepts rgb8, bgr8, rgba8, bgra8 and mono8 with any row padding (step). Raises InputError
    on an unsupported encoding, a non-2:1 (unless `erp` is False) or absurd size, a step
    shorter than a row, or data shorter than step x height; FrameTooLargeError when wider
    than `max_width`.
    """
    encoding = msg.encoding
    if encoding not in ENCODING_CHANNELS:
        supported = ", ".join(ENCODING_CHANNELS)
        raise InputError(f"unsupported encoding '{encoding}' (supported: {supported})")
    height, width = int(msg.height), int(msg.width)
    check_panorama_size(height, width, max_width, erp=erp)
    channels = ENCODING_CHANNELS[encoding]
    row_bytes = width * channels
    step = int(msg.step)
    if step < row_bytes:
        raise InputError(f"step {step} is shorter than a row ({width} x {channels} = {row_bytes})")
    needed = step * height
    if len(msg.data) < needed:
        raise InputError(
            f"data has {len(msg.data)} bytes, shorter than step x height = {step} x {height}"
            f" = {needed}"
        )
    if CvBridge is not None:  # pragma: no cover - only with a full ROS 2 install
        return np.asarray(CvBridge().imgmsg_to_cv2(msg, desired_encoding="rgb8"))
    rows = np.frombuffer(msg.data, dtype=np.uint8, count=needed).reshape(height, step)
    pixels = rows[:, :row_bytes].reshape(height, width, channels)  # zero-copy view
    if encoding == "rgb8":
        return pixels
    return cv2.cvtColor(pixels, _TO_RGB[encoding])


_JPEG_SOI = b"\xff\xd8"
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# JPEG start-of-frame markers (baseline, progressive, lossless, ...), which carry the size.
_JPEG_SOF = {0xC0, 0xC1, 0xC2, 0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF}


def compressed_size(data: bytes) -> tuple[str, int, int]:
    """(format, height, width) from a JPEG or PNG header, without decoding the pixels.

    Lets the node refuse absurd sizes before the decoder allocates them. Raises InputError
    when the bytes are neither JPEG nor PNG, or the header is corrupt.
    """
    if data[:8] == _PNG_SIGNATURE:
        if len(data) < 24 or data[12:16] != b"IHDR":
            raise InputError("corrupt PNG: no IHDR header")
        width, height = struct.unpack(">II", data[16:24])
        return "png", height, width
    if data[:2] != _JPEG_SOI:
        head = data[:4].hex() if data else "empty"
        raise InputError(f"compressed image is neither JPEG nor PNG (first bytes: {head})")
    pos = 2
    while pos + 4 <= len(data):
        if data[pos] != 0xFF:
            raise InputError(f"corrupt JPEG: bad marker at byte {pos}")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte
            pos += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length field
            pos += 2
            continue
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if marker in _JPEG_SOF:
            if pos + 9 > len(data):
                break
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])
            return "jpeg", height, width
        if marker == 0xDA or length < 2:  # scan data before any frame header
            break
        pos += 2 + length
    raise InputError("corrupt JPEG: no frame header (SOF) found")


def compressed_to_rgb(msg, max_width: int = MAX_PANORAMA_WIDTH, *, erp: bool = True) -> np.ndarray:
    """Decoded RGB pixels of a JPEG/PNG panorama, uint8 [H, W, 3].

    The format is read from the bytes (the `format` string varies between publishers). Raises
    InputError on an empty or corrupt image, or a size that is not a usable 2:1 panorama
    (any aspect with `erp` False); FrameTooLargeError when wider than `max_width` (read from
    the header, nothing decoded).
    """
    data = bytes(msg.data)
    if not data:
        raise InputError("compressed image is empty")
    kind, height, width = compressed_size(data)
    check_panorama_size(height, width, max_width, erp=erp)
    decoded = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), cv2.IMREAD_COLOR)
    if decoded is None:
        raise InputError(f"corrupt {kind.upper()}: the decoder rejected {len(data)} bytes")
    if decoded.shape[:2] != (height, width):
        raise InputError(
            f"corrupt {kind.upper()}: header says {width}x{height}, decoded"
            f" {decoded.shape[1]}x{decoded.shape[0]}"
        )
    return cv2.cvtColor(decoded, cv2.COLOR_BGR2RGB)
