"""Offline processing of a recording: rosbag2 (sqlite3 or MCAP) in, the node's outputs out.

Owns `dap bag`'s loop: read the panorama topic with rosbags (no ROS install needed), decode
each frame as the node does (dap_ros.decode), run the same predictor the node would build
from the same parameters (dap_ros.predictors), compute the same outputs
(dap_ros.frame_outputs) and write them as rosbags-serialized messages carrying the input's
header stamps and frame ids, at the input record's timestamp. Frames are batched through the
predictor when asked (`batch`), which helps GPU backends. With `fisheye_calibration` of
layout side_by_side each frame is remapped to ERP first (dap_core.fisheye.FisheyeFrames) and
pixels no lens sees get NaN range, as in the node. With a two_images calibration the two lens
topics (the node's lens0_topic / lens1_topic, or `lens_topics`) are paired by header stamp with
the node's rule (dap_ros.lens_pairing, the recording's timestamps as arrival times) and each
pair is remapped; an unpaired lens frame is skipped and counted.

The output bag is written inside a hidden `.<name>.partial` directory beside OUT and moved to
OUT only once complete: an interrupted run leaves no bag at OUT, and the next run removes the
stale partial directory and starts again.
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from dap_core.prediction import Prediction
from dap_ros import decode, projection
from dap_ros.bag_messages import MSGTYPES, OutputSerializer, typestore
from dap_ros.frame_outputs import OUTPUTS, TOPICS, compute_outputs
from dap_ros.lens_pairing import LensPairer
from dap_ros.params import Settings
from dap_ros.temporal_filter import TemporalFilter

__all__ = ["IMAGE_TYPES", "BagJob", "BagSummary", "output_topic", "process_bag"]

IMAGE_TYPES = ("sensor_msgs/msg/Image", "sensor_msgs/msg/CompressedImage")
STORAGES = ("sqlite3", "mcap")


@dataclass(frozen=True)
class BagJob:
    """What to do. outputs: names from dap_ros.frame_outputs.OUTPUTS; topic None: the bag's
    only image topic; namespace None: the image topic's namespace (where a node subscribed
    to it would publish); storage None: the input's format."""

    source: Path
    dest: Path
    settings: Settings
    outputs: tuple[str, ...] = OUTPUTS
    topic: str | None = None
    namespace: str | None = None
    storage: str | None = None
    batch: int = 1
    lens_topics: tuple[str, str] | None = None  # two_images: lens 0 and lens 1 topics
    copy_input: bool = False
    overwrite: bool = False
    distro: str = "kilted"


@dataclass
class BagSummary:
    """Counts and times of one run."""

    topic: str = ""
    frames: int = 0  # image messages read
    processed: int = 0
    skipped: Counter = field(default_factory=Counter)  # reason -> frames
    written: Counter = field(default_factory=Counter)  # output topic -> messages
    copied: int = 0
    seconds: float = 0.0
    inference_ms: list[float] = field(default_factory=list)
    backend: str = ""

    @property
    def frames_per_s(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0

    def lines(self) -> list[str]:
        median = f"{np.median(self.inference_ms):.0f} ms" if self.inference_ms else "n/a"
        lines = [
            f"{self.topic}: {self.frames} frame(s) read, {self.processed} processed in "
            f"{self.seconds:.1f} s ({self.frames_per_s:.2f} frames/s; inference median "
            f"{median}, backend {self.backend})"
        ]
        lines += [f"  skipped {n}: {reason}" for reason, n in sorted(self.skipped.items())]
        lines += [f"  wrote {n:5d} x {topic}" for topic, n in sorted(self.written.items())]
        if self.copied:
            lines.append(f"  copied {self.copied} input message(s)")
        return lines


def output_topic(namespace: str, name: str) -> str:
    """Absolute topic of output `name` in `namespace` (as the node in that namespace has it)."""
    return "/" + "/".join(p for p in (*namespace.split("/"), *TOPICS[name].split("/")) if p)


def _image_namespace(topic: str, msgtype: str) -> str:
    if msgtype.endswith("CompressedImage") and topic.endswith("/compressed"):
        topic = topic[: -len("/compressed")]
    return topic.rsplit("/", 1)[0] or "/"


def check_job(job: BagJob) -> None:
    unknown = [name for name in job.outputs if name not in OUTPUTS]
    if unknown or not job.outputs:
        raise ValueError(f"outputs must be some of {', '.join(OUTPUTS)}, got {list(job.outputs)}")
    if job.storage is not None and job.storage not in STORAGES:
        raise ValueError(f"storage must be one of {', '.join(STORAGES)}, got '{job.storage}'")
    if job.batch < 1:
        raise ValueError(f"batch must be >= 1, got {job.batch}")
    if not job.source.exists():
        raise FileNotFoundError(f"input bag {job.source} does not exist")
    if job.dest.resolve() == job.source.resolve():
        raise ValueError("the output bag must not be the input bag")
    if job.dest.exists() and not job.overwrite:
        raise ValueError(f"output {job.dest} exists (pass --overwrite to replace it)")
    fisheye = _fisheye_input(job.settings) if job.settings.fisheye_calibration else None
    if job.lens_topics is not None and not (fisheye is not None and fisheye.two_images):
        raise ValueError("--lens0/--lens1 need a two_images fisheye_calibration (two lens topics)")
    from rosbags.rosbag2 import Reader, ReaderError

    try:
        with Reader(job.source) as reader:
            _input_connections(reader, job, fisheye)
    except ReaderError as err:
        raise ValueError(f"cannot read the bag {job.source}: {err}") from err


def _fisheye_input(s: Settings):
    """The remapper of `fisheye_calibration` (one side-by-side image or two lens images)."""
    from dap_core.fisheye import FisheyeFrames

    return FisheyeFrames(s.fisheye_calibration, s.fisheye_erp_height)


def _input_connections(reader, job: BagJob, fisheye) -> list:
    """The image connection, or lens 0's and lens 1's for a two_images calibration."""
    if fisheye is None or not fisheye.two_images:
        return [_image_connection(reader, job.topic)]
    s = job.settings
    if job.lens_topics is not None:
        if job.lens_topics[0] == job.lens_topics[1]:
            raise ValueError(
                f"--lens0 and --lens1 must be two different topics, not both {job.lens_topics[0]}"
            )
        return [_image_connection(reader, topic) for topic in job.lens_topics]
    suffix = "/compressed" if s.compressed_input else ""
    names = (s.lens0_topic + suffix, s.lens1_topic + suffix)
    return [_lens_connection(reader, lens, name) for lens, name in enumerate(names)]


def _lens_connection(reader, lens: int, name: str):
    """The image topic the node would read as lens `lens`'s `name`: that absolute topic, or
    the one topic ending in /name (the node resolves a relative name in its namespace)."""
    images = [c for c in reader.connections if c.msgtype in IMAGE_TYPES]
    absolute = name.startswith("/")
    found = [
        c for c in images if c.topic == name or (not absolute and c.topic.endswith("/" + name))
    ]
    if len({c.topic for c in found}) != 1:
        listed = ", ".join(sorted({c.topic for c in images})) or "none"
        why = "is not in the bag" if not found else "matches several topics"
        raise ValueError(
            f"lens {lens} topic '{name}' {why} (image topics: {listed}); "
            f"choose it with --lens{lens} or -p lens{lens}_topic:=..."
        )
    return found[0]


def _image_connection(reader, topic: str | None):
    images = [c for c in reader.connections if c.msgtype in IMAGE_TYPES]
    if topic is not None:
        chosen = [c for c in reader.connections if c.topic == topic]
        if not chosen:
            found = ", ".join(sorted({c.topic for c in images})) or "none"
            raise ValueError(f"topic '{topic}' is not in the bag (image topics: {found})")
        if chosen[0].msgtype not in IMAGE_TYPES:
            raise ValueError(
                f"topic '{topic}' is {chosen[0].msgtype}, not sensor_msgs Image/CompressedImage"
            )
        return chosen[0]
    topics = sorted({c.topic for c in images})
    if len(topics) != 1:
        listed = ", ".join(topics) or "none"
        raise ValueError(f"choose the image topic with --topic (image topics in the bag: {listed})")
    return images[0]


def _split(prediction: Prediction, index: int) -> Prediction:
    return Prediction(
        range_m=prediction.range_m[index],
        masks={t: m[index] for t, m in prediction.masks.items()},
        timings=prediction.timings,
        backend=prediction.backend,
    )


def _storage_plugin(name: str):
    from rosbags.rosbag2 import StoragePlugin

    return StoragePlugin.MCAP if name == "mcap" else StoragePlugin.SQLITE3


def input_storage(source: Path) -> str:
    """'mcap' or 'sqlite3': the storage format of a bag directory or file."""
    files = [source] if source.is_file() else list(source.iterdir())
    return "mcap" if any(f.suffix == ".mcap" for f in files) else "sqlite3"


def partial_path(dest: Path) -> Path:
    """The hidden directory beside `dest` holding the bag while it is written."""
    return dest.parent / f".{dest.name}.partial"


def process_bag(
    job: BagJob,
    predictor: Any,
    *,
    progress: bool = True,
    log: Callable[[str], None] = lambda text: print(text, file=sys.stderr),
) -> BagSummary:
    """Run `job` with `predictor` (.predict(rgb) -> Prediction, .backend); returns the summary.

    With temporal_stabilization on, the frames are filtered in bag order, as the node filters
    them in arrival order. Raises ValueError / FileNotFoundError with one clear
    line for a bad job; on any error or interrupt the partial output is removed.
    """
    from rosbags.rosbag2 import Reader, Writer
    from tqdm import tqdm

    check_job(job)
    store = typestore(job.distro)
    serializer = OutputSerializer(store)
    s = job.settings
    summary = BagSummary(backend=str(getattr(predictor, "backend", "")))
    partial = partial_path(job.dest)
    if partial.exists():
        log(f"removing {partial}, left by an interrupted run")
        shutil.rmtree(partial)
    with Reader(job.source) as reader:
        fisheye = _fisheye_input(s) if s.fisheye_calibration else None
        inputs = _input_connections(reader, job, fisheye)
        summary.topic = " + ".join(c.topic for c in inputs)
        first = inputs[0]
        namespace = job.namespace or _image_namespace(first.topic, first.msgtype)
        storage = job.storage or input_storage(job.source)
        partial.mkdir(parents=True)
        # Inside `partial`, the bag already has its final name (rosbags names its files after it).
        writer = Writer(partial / job.dest.name, version=9, storage_plugin=_storage_plugin(storage))
        try:
            writer.open()
            out_conns = {
                name: writer.add_connection(
                    output_topic(namespace, name), MSGTYPES[name], typestore=store
                )
                for name in job.outputs
            }
            copies = _copy_connections(writer, reader) if job.copy_input else {}
            wanted = frozenset(job.outputs)
            workspace = projection.Workspace()
            temporal = TemporalFilter()
            pairer = _lens_pairer(s, summary) if len(inputs) == 2 else None
            pending: list[tuple] = []  # (timestamp, header, rgb, unseen or None)

            def flush() -> None:
                if not pending:
                    return
                frames = np.stack([rgb for _, _, rgb, _ in pending])
                before = time.perf_counter()
                batch = predictor.predict(frames if len(pending) > 1 else frames[0])
                per_frame = (time.perf_counter() - before) * 1e3 / len(pending)
                for index, (timestamp, header, rgb, unseen) in enumerate(pending):
                    prediction = _split(batch, index) if len(pending) > 1 else batch
                    if unseen is not None:  # no lens sees these pixels: NaN (REP 117)
                        range_m = np.where(unseen, np.float32(np.nan), prediction.range_m)
                        prediction = dataclasses.replace(prediction, range_m=range_m)
                    if prediction.range_m.shape != rgb.shape[:2]:
                        raise RuntimeError(
                            f"predictor returned range {prediction.range_m.shape} for an "
                            f"image {rgb.shape[:2]}"
                        )
                    prediction = temporal(s, prediction)
                    outputs = compute_outputs(s, rgb, prediction, wanted, workspace)
                    for name, msg in serializer.messages(outputs, header).items():
                        conn = out_conns[name]
                        writer.write(conn, timestamp, serializer.serialize(name, msg))
                        summary.written[conn.topic] += 1
                    summary.inference_ms.append(per_frame)
                    summary.processed += 1
                pending.clear()

            started = time.perf_counter()
            bar = tqdm(
                total=sum(c.msgcount for c in inputs),
                unit="frame",
                desc="dap bag",
                file=sys.stderr,
                disable=not progress,
                dynamic_ncols=True,
            )
            lens_of = {c.id: lens for lens, c in enumerate(inputs)}
            connections = list(reader.connections) if copies else inputs
            with bar:
                for conn, timestamp, raw in reader.messages(connections=connections):
                    if conn.id in copies:
                        writer.write(copies[conn.id], timestamp, raw)
                        summary.copied += 1
                    if conn.id not in lens_of:
                        continue
                    summary.frames += 1
                    bar.update(1)
                    try:
                        msg = store.deserialize_cdr(raw, conn.msgtype)
                    except Exception as err:  # a message rosbags cannot deserialize
                        summary.skipped[f"undecodable message: {type(err).__name__}"] += 1
                        continue
                    images = [msg]
                    if pairer is not None:  # the recording's clock plays the arrival time
                        stamp_ns = msg.header.stamp.sec * 1_000_000_000 + msg.header.stamp.nanosec
                        pair = pairer.add(lens_of[conn.id], stamp_ns, msg, timestamp / 1e9)
                        if pair is None:
                            continue
                        images = [pair.lens0, pair.lens1]
                    frame = _frame_rgb(images, fisheye, summary)
                    if frame is None:
                        continue
                    rgb, unseen = frame
                    msg = images[0]  # its header is the frame's (lens 0's for a pair)
                    stamp = msg.header.stamp
                    header = serializer.header(
                        stamp.sec, stamp.nanosec, s.frame_id or msg.header.frame_id
                    )
                    if pending and pending[0][2].shape != rgb.shape:
                        flush()
                    pending.append((timestamp, header, rgb, unseen))
                    if len(pending) >= job.batch:
                        flush()
                    bar.set_postfix(processed=summary.processed, refresh=False)
                flush()
            if pairer is not None:
                for lens in (0, 1):
                    if waiting := pairer.waiting(lens):
                        reason = f"lens{lens} frame unpaired: the bag ended before its partner"
                        summary.skipped[reason] += waiting
            summary.seconds = time.perf_counter() - started
            writer.close()
        except BaseException:
            _discard(writer, partial)
            raise
    if job.dest.exists():
        shutil.rmtree(job.dest) if job.dest.is_dir() else job.dest.unlink()
    (partial / job.dest.name).rename(job.dest)
    partial.rmdir()
    return summary


UNPAIRED = {  # LensPairer's reasons, as the node words them, for the bag's summary
    "expired": "no frame of the other lens within pair_tolerance_s came in max_pair_wait_s",
    "overflow": "too many frames of its lens waited for a partner",
    "stale": "a newer pair was written first",
    "late": "it is older than the last pair written",
    "rewind": "the stamps went back (a looped recording): pairing restarted",
}


def _lens_pairer(s: Settings, summary: BagSummary) -> LensPairer:
    """The node's pairing rule, its drops counted in `summary.skipped`."""

    def unpaired(lens: int, reason: str) -> None:
        summary.skipped[f"lens{lens} frame unpaired: {UNPAIRED[reason]}"] += 1

    return LensPairer(round(s.pair_tolerance_s * 1e9), s.max_pair_wait_s, on_unmatched=unpaired)


def _frame_rgb(images: list, fisheye, summary: BagSummary) -> tuple | None:
    """(ERP RGB, unseen mask or None) of one frame's image message(s); None when skipped."""
    erp = len(images) == 1  # lens images of a pair have their own aspect
    try:
        decoded = [
            decode.compressed_to_rgb(m, erp=erp)
            if m.__msgtype__.endswith("CompressedImage")
            else np.array(decode.image_to_rgb(m, erp=erp))  # own its pixels
            for m in images
        ]
    except decode.InputError as err:
        summary.skipped[f"bad input image: {err}"] += 1
        return None
    except Exception as err:  # a message whose fields no decoder makes sense of
        summary.skipped[f"undecodable message: {type(err).__name__}"] += 1
        return None
    if fisheye is None:
        return decoded[0], None
    try:
        return fisheye.to_erp(*decoded)
    except ValueError as err:
        summary.skipped[f"bad fisheye image: {err}"] += 1
        return None


def _copy_connections(writer, reader) -> dict[int, Any]:
    """Input connection id -> output connection, for every input topic (images included)."""
    copies = {}
    for conn in reader.connections:
        ext = conn.ext
        copies[conn.id] = writer.add_connection(
            conn.topic,
            conn.msgtype,
            msgdef=conn.msgdef.data,
            rihs01=conn.digest,
            serialization_format=getattr(ext, "serialization_format", "cdr"),
            offered_qos_profiles=getattr(ext, "offered_qos_profiles", ()),
        )
    return copies


def _discard(writer, partial: Path) -> None:
    with contextlib.suppress(Exception):  # already broken: the directory goes anyway
        writer.close()
    shutil.rmtree(partial, ignore_errors=True)


def iter_image_messages(path: Path, topic: str, distro: str = "kilted") -> Iterable[tuple]:
    """(timestamp, deserialized message) of `topic` in a bag (tests, tools)."""
    from rosbags.rosbag2 import Reader

    store = typestore(distro)
    with Reader(path) as reader:
        conns = [c for c in reader.connections if c.topic == topic]
        for conn, timestamp, raw in reader.messages(connections=conns):
            yield timestamp, store.deserialize_cdr(raw, conn.msgtype)
