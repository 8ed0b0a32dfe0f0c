"""Small rosbag2 recordings for the `dap bag` tests, written with rosbags (no ROS needed)."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from dap_ros.bag_messages import typestore

FRAME_ID = "pano_link"


def panorama_frames(count: int, height: int = 32, seed: int = 3) -> list[np.ndarray]:
    """`count` random uint8 RGB panoramas [height, 2 x height, 3]."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, 2 * height, 3), dtype=np.uint8) for _ in range(count)]


def stamp_of(index: int) -> tuple[int, int]:
    """Header stamp (sec, nanosec) of frame `index`: 10 Hz from t = 1000 s."""
    return 1000 + index // 10, (index % 10) * 100_000_000


def _header(types, sec: int, nanosec: int):
    stamp = types["builtin_interfaces/msg/Time"](sec=sec, nanosec=nanosec)
    return types["std_msgs/msg/Header"](stamp=stamp, frame_id=FRAME_ID)


def _rgb8_image(types, header, rgb: np.ndarray):
    height, width = rgb.shape[:2]
    return types["sensor_msgs/msg/Image"](
        header=header,
        height=height,
        width=width,
        encoding="rgb8",
        is_bigendian=0,
        step=3 * width,
        data=rgb.reshape(-1),
    )


def write_bag(
    path: Path,
    frames: list[np.ndarray],
    *,
    storage: str = "sqlite3",
    topic: str = "/cam/image",
    compressed: str | None = None,
    extra_topic: bool = True,
) -> Path:
    """A rosbag2 bag with one Image (rgb8) or CompressedImage (compressed='png'/'jpeg') per
    frame on `topic`, stamped by `stamp_of`, plus (extra_topic) a std_msgs/String topic."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    types = store.types
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    msgtype = "sensor_msgs/msg/CompressedImage" if compressed else "sensor_msgs/msg/Image"
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        conn = writer.add_connection(topic, msgtype, typestore=store)
        other = (
            writer.add_connection("/note", "std_msgs/msg/String", typestore=store)
            if extra_topic
            else None
        )
        for index, rgb in enumerate(frames):
            sec, nanosec = stamp_of(index)
            header = _header(types, sec, nanosec)
            if compressed:
                ok, data = cv2.imencode(f".{compressed}", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
                assert ok
                msg = types[msgtype](header=header, format=compressed, data=data.reshape(-1))
            else:
                msg = _rgb8_image(types, header, rgb)
            timestamp = sec * 1_000_000_000 + nanosec + 5_000_000  # recorded 5 ms later
            writer.write(conn, timestamp, store.serialize_cdr(msg, msgtype))
            if other is not None:
                note = types["std_msgs/msg/String"](data=f"frame {index}")
                writer.write(other, timestamp + 1, store.serialize_cdr(note, "std_msgs/msg/String"))
    return path


def write_lens_bag(
    path: Path,
    lenses: dict[str, list[tuple[int, np.ndarray]]],
    *,
    storage: str = "sqlite3",
) -> Path:
    """A rosbag2 bag with one rgb8 Image topic per lens: `lenses` maps a topic to its frames
    as (header stamp in ns, RGB); each is recorded 5 ms after its stamp (bag order by that)."""
    from rosbags.rosbag2 import StoragePlugin, Writer

    store = typestore()
    types = store.types
    msgtype = "sensor_msgs/msg/Image"
    plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
    records = []
    with Writer(path, version=9, storage_plugin=plugin) as writer:
        for topic, frames in lenses.items():
            conn = writer.add_connection(topic, msgtype, typestore=store)
            for stamp_ns, rgb in frames:
                sec, nanosec = divmod(stamp_ns, 1_000_000_000)
                msg = _rgb8_image(types, _header(types, sec, nanosec), rgb)
                records.append((stamp_ns + 5_000_000, conn, store.serialize_cdr(msg, msgtype)))
        for timestamp, conn, raw in sorted(records, key=lambda r: r[0]):
            writer.write(conn, timestamp, raw)
    return path
