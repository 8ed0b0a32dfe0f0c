"""FrameOutputs -> serialized sensor_msgs (CDR) through the rosbags type store, no ROS install.

Owns the message layout of `dap bag`'s outputs. Every field is set as dap_ros.conversions sets
it for the live node (encodings, steps, endianness flags, cloud fields, scan limits), so a
bag's message decodes to the message the node publishes for the same frame.
"""

from __future__ import annotations

import math
import sys

import numpy as np

from dap_ros.frame_outputs import FrameOutputs

__all__ = ["MSGTYPES", "OutputSerializer", "typestore"]

# Output name -> ROS message type.
MSGTYPES: dict[str, str] = {
    "range": "sensor_msgs/msg/Image",
    "mask": "sensor_msgs/msg/Image",
    "cloud": "sensor_msgs/msg/PointCloud2",
    "scan": "sensor_msgs/msg/LaserScan",
    "preview": "sensor_msgs/msg/Image",
}
_BIG_ENDIAN = sys.byteorder == "big"
_FLOAT32_MAX = float(np.finfo(np.float32).max)
_CLOUD_FIELDS = (("x", 0), ("y", 4), ("z", 8), ("rgb", 12))  # FLOAT32, count 1 (conversions)


def typestore(distro: str = "kilted"):
    """The rosbags type store of a ROS 2 distribution (message definitions and hashes)."""
    from rosbags.typesys import Stores, get_typestore

    name = f"ROS2_{distro.upper()}"
    if not hasattr(Stores, name):
        known = ", ".join(s.name[5:].lower() for s in Stores if s.name.startswith("ROS2_"))
        raise ValueError(f"unknown ROS 2 distribution '{distro}' (known: {known})")
    return get_typestore(getattr(Stores, name))


class OutputSerializer:
    """Builds and CDR-serializes the messages of one frame's outputs with a type store."""

    def __init__(self, store) -> None:
        self.store = store
        types = store.types
        self._time = types["builtin_interfaces/msg/Time"]
        self._header = types["std_msgs/msg/Header"]
        self._image = types["sensor_msgs/msg/Image"]
        self._cloud = types["sensor_msgs/msg/PointCloud2"]
        self._field = types["sensor_msgs/msg/PointField"]
        self._scan = types["sensor_msgs/msg/LaserScan"]

    def header(self, sec: int, nanosec: int, frame_id: str):
        return self._header(stamp=self._time(sec=sec, nanosec=nanosec), frame_id=frame_id)

    def messages(self, outputs: FrameOutputs, header) -> dict[str, object]:
        """Output name -> rosbags message for every output present in `outputs`."""
        built: dict[str, object] = {}
        if outputs.range is not None:
            built["range"] = self._image_msg(header, outputs.range, "32FC1", 1)
        if outputs.mask is not None:
            built["mask"] = self._image_msg(header, outputs.mask, "mono8", 1)
        if outputs.cloud is not None:
            built["cloud"] = self._cloud_msg(header, outputs.cloud, outputs.cloud_organized)
        if outputs.scan is not None:
            built["scan"] = self._scan_msg(header, outputs)
        if outputs.preview is not None:
            built["preview"] = self._image_msg(header, outputs.preview, "rgb8", 3)
        return built

    def serialize(self, name: str, msg) -> bytes:
        return bytes(self.store.serialize_cdr(msg, MSGTYPES[name]))

    def _image_msg(self, header, pixels: np.ndarray, encoding: str, channels: int):
        height, width = pixels.shape[:2]
        itemsize = pixels.dtype.itemsize
        return self._image(
            header=header,
            height=height,
            width=width,
            encoding=encoding,
            is_bigendian=int(_BIG_ENDIAN and itemsize > 1),
            step=width * channels * itemsize,
            data=_bytes(pixels),
        )

    def _cloud_msg(self, header, cloud: np.ndarray, organized: bool):
        height, width = cloud.shape[:2]
        fields = [
            self._field(name=name, offset=offset, datatype=self._field.FLOAT32, count=1)
            for name, offset in _CLOUD_FIELDS
        ]
        return self._cloud(
            header=header,
            height=height,
            width=width,
            fields=fields,
            is_bigendian=_BIG_ENDIAN,
            point_step=16,
            row_step=16 * width,
            data=_bytes(cloud),
            is_dense=not organized,
        )

    def _scan_msg(self, header, outputs: FrameOutputs):
        ranges, layout = outputs.scan, outputs.scan_layout
        return self._scan(
            header=header,
            angle_min=float(layout.angle_min),
            angle_max=float(layout.angle_min + (len(ranges) - 1) * layout.angle_increment),
            angle_increment=float(layout.angle_increment),
            time_increment=0.0,
            scan_time=0.0,
            range_min=float(outputs.scan_range[0]),
            range_max=float(outputs.scan_range[1])
            if math.isfinite(outputs.scan_range[1])
            else _FLOAT32_MAX,
            ranges=np.ascontiguousarray(ranges, dtype=np.float32),
            intensities=np.zeros(0, np.float32),
        )


def _bytes(values: np.ndarray) -> np.ndarray:
    """The array's bytes as the flat uint8 array rosbags serializes for a uint8[] field."""
    return np.ascontiguousarray(values).reshape(-1).view(np.uint8)
