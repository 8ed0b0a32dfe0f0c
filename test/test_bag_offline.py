"""`dap bag` without a node: interrupted runs, bad frames, batching, params files, CLI errors."""

from __future__ import annotations

import signal
import subprocess
import sys
import time

import numpy as np
import pytest
from bag_helpers import panorama_frames, write_bag, write_lens_bag
from ros_harness import REPO_ROOT, ros_env

from dap_core.prediction import Prediction
from dap_ros.bag import BagJob, iter_image_messages, partial_path, process_bag
from dap_ros.params import Settings
from dap_ros.params_file import settings_from_file


class ImageRange:
    """Range from the pixels (1 + mean channel / 25 m), for single images and batches."""

    backend = "image-range"

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls = 0
        self.interrupt_at = interrupt_at

    def predict(self, rgb: np.ndarray) -> Prediction:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        range_m = (1.0 + rgb.mean(axis=-1) / 25.0).astype(np.float32)
        return Prediction(range_m, {100: (range_m <= 100).astype(np.float32)}, {}, self.backend)


def _job(source, dest, **fields) -> BagJob:
    return BagJob(source=source, dest=dest, settings=Settings.defaults(), **fields)


def test_an_interrupted_run_leaves_no_output_bag(tmp_path):
    source = write_bag(tmp_path / "in", panorama_frames(4))
    dest = tmp_path / "out"
    with pytest.raises(KeyboardInterrupt):
        process_bag(_job(source, dest), ImageRange(interrupt_at=3), progress=False)
    assert not dest.exists()
    assert not partial_path(dest).exists()


def test_a_killed_run_leaves_no_output_and_the_next_run_completes(tmp_path):
    source = write_bag(tmp_path / "in", panorama_frames(12))
    dest = tmp_path / "out"
    command = [sys.executable, "-m", "dap_core.cli", "bag", str(source), str(dest)]
    command += ["--no-progress", "-p", "predictor:=ros_oracle:slow_room"]  # 0.25 s a frame
    env = ros_env(0)
    process = subprocess.Popen(command, env=env, cwd=REPO_ROOT, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while not partial_path(dest).exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    time.sleep(0.5)  # a few frames in
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    process.stderr.close()
    assert not dest.exists(), "a killed run must not leave a bag at OUT"
    done = subprocess.run(command, env=env, cwd=REPO_ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "left by an interrupted run" in done.stderr
    assert len(list(iter_image_messages(dest, "/cam/depth/image"))) == 12
    assert not partial_path(dest).exists()


def test_bad_frames_are_counted_and_skipped(tmp_path):
    frames = panorama_frames(3)
    frames.insert(1, np.zeros((32, 40, 3), np.uint8))  # not 2:1
    source = write_bag(tmp_path / "in", frames)
    summary = process_bag(_job(source, tmp_path / "out"), ImageRange(), progress=False)
    assert (summary.frames, summary.processed) == (4, 3)
    assert sum(summary.skipped.values()) == 1
    assert "not a 2:1 equirectangular panorama" in next(iter(summary.skipped))
    assert len(list(iter_image_messages(tmp_path / "out", "/cam/scan"))) == 3


def test_batched_inference_writes_the_same_bag_as_single_frames(tmp_path):
    source = write_bag(tmp_path / "in", panorama_frames(5), storage="mcap")
    process_bag(_job(source, tmp_path / "one"), ImageRange(), progress=False)
    batched = ImageRange()
    process_bag(_job(source, tmp_path / "three", batch=3), batched, progress=False)
    assert batched.calls == 2  # 3 + 2 frames
    for topic in ("/cam/depth/image", "/cam/points", "/cam/scan", "/cam/depth/colored"):
        one = list(iter_image_messages(tmp_path / "one", topic))
        three = list(iter_image_messages(tmp_path / "three", topic))
        assert len(one) == len(three) == 5
        for (t1, m1), (t3, m3) in zip(one, three, strict=True):
            assert t1 == t3
            field = "ranges" if topic.endswith("scan") else "data"
            assert getattr(m1, field).tobytes() == getattr(m3, field).tobytes(), topic


def test_chosen_outputs_only_and_copied_input(tmp_path):
    source = write_bag(tmp_path / "in", panorama_frames(2))
    job = _job(source, tmp_path / "out", outputs=("scan", "mask"), copy_input=True)
    process_bag(job, ImageRange(), progress=False)
    from rosbags.rosbag2 import Reader

    with Reader(tmp_path / "out") as reader:
        topics = {c.topic: c.msgcount for c in reader.connections}
    assert topics == {"/cam/scan": 2, "/cam/range_mask/image": 2, "/cam/image": 2, "/note": 2}


def test_params_file_reads_the_node_yaml_and_refuses_unknown_names(tmp_path, repo_root):
    shipped = settings_from_file(repo_root / "config" / "dap.yaml")
    assert shipped == Settings.defaults()
    good = tmp_path / "p.yaml"
    good.write_text(
        "/**:\n  ros__parameters:\n    scan_beams: 90\n    frame_id: a\n"
        "/robot/dap:\n  ros__parameters:\n    frame_id: b\n    max_range: 30\n"
    )
    settings = settings_from_file(good, {"mask_threshold": 20})
    assert (settings.scan_beams, settings.frame_id, settings.max_range) == (90, "b", 30.0)
    assert settings.mask_threshold == 20
    bad = tmp_path / "bad.yaml"
    bad.write_text("dap:\n  ros__parameters:\n    scan_beam: 90\n")
    with pytest.raises(ValueError, match="unknown parameters: scan_beam"):
        settings_from_file(bad)


@pytest.mark.parametrize(
    "args, message",
    [
        (["missing_bag", "out"], "input bag missing_bag does not exist"),
        (["IN", "out", "--outputs", "depth"], "outputs must be some of range, mask"),
        (["IN", "out", "--topic", "/note"], "is std_msgs/msg/String, not sensor_msgs"),
        (["IN", "out", "-p", "cloud_stride:=0"], "cloud_stride must be in [1, 64]"),
        (["IN", "IN"], "must not be the input bag"),
        (["IN", "out", "--lens0", "/cam/image"], "give both --lens0 and --lens1, or neither"),
        (
            ["IN", "out", "--lens0", "/cam/image", "--lens1", "/cam/image"],
            "--lens0/--lens1 need a two_images fisheye_calibration",
        ),
    ],
)
def test_cli_errors_are_one_clear_line(tmp_path, args, message):
    source = write_bag(tmp_path / "in", panorama_frames(1))
    args = [str(source) if a == "IN" else str(tmp_path / a) if a == "out" else a for a in args]
    done = subprocess.run(
        [sys.executable, "-m", "dap_core.cli", "bag", *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=ros_env(0),
    )
    assert done.returncode == 1
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], done.stderr


def _narrow_calibration(tmp_path, name: str):
    """A shipped calibration with 170° lenses: a band around ±90° longitude is nobody's."""
    shipped = REPO_ROOT / "config" / "fisheye" / name
    path = tmp_path / name
    path.write_text(shipped.read_text().replace("fov_deg: 195.0", "fov_deg: 170.0"))
    return path


def test_side_by_side_fisheye_frames_are_remapped_with_nan_where_no_lens_sees(tmp_path):
    from dap_core.fisheye import FisheyeRemapper, load_calibration
    from dap_ros import conversions

    calibration = _narrow_calibration(tmp_path, "insta360_side_by_side.yaml")
    source = write_bag(tmp_path / "in", panorama_frames(3, height=48))  # 96x48 side by side
    settings = Settings.defaults().replaced(
        {"fisheye_calibration": str(calibration), "fisheye_erp_height": 16}
    )
    job = BagJob(source=source, dest=tmp_path / "out", settings=settings)
    summary = process_bag(job, ImageRange(), progress=False)
    assert summary.processed == 3, summary.lines()
    unseen = FisheyeRemapper(load_calibration(calibration).for_image(96, 48), 16, 32).unseen
    assert unseen.any() and not unseen.all()
    for _, msg in iter_image_messages(tmp_path / "out", "/cam/depth/image"):
        range_m = conversions.image_to_numpy(msg)
        assert range_m.shape == (16, 32)
        np.testing.assert_array_equal(np.isnan(range_m), unseen)


LENS_S = 1_000_000_000  # ns in a second


def _lens_frames(count: int, side: int = 24, seed: int = 5) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (side, side, 3), dtype=np.uint8) for _ in range(count)]


def _two_lens_settings(tmp_path, **values) -> Settings:
    calibration = _narrow_calibration(tmp_path, "x5_two_topics.yaml")
    return Settings.defaults().replaced(
        {"fisheye_calibration": str(calibration), "fisheye_erp_height": 16, **values}
    )


def test_two_lens_topics_are_paired_by_stamp_like_the_node_and_remapped(tmp_path):
    """x5_ros_driver's /x5/lens0 + /x5/lens1: stamps within pair_tolerance_s pair (lens 1
    3 ms late here); a lens 1 frame without partner is dropped and counted; each output has
    lens 0's stamp and the ERP of the pair, NaN where no lens sees."""
    from dap_core.fisheye import FisheyeFrames
    from dap_ros import conversions

    front, rear = _lens_frames(4), _lens_frames(5, seed=6)
    t0 = 1000 * LENS_S
    lens0 = [(t0 + i * LENS_S // 10, front[i]) for i in range(4)]
    lens1 = [(t0 + i * LENS_S // 10 + 3_000_000, rear[i]) for i in range(4)]
    lens1.insert(2, (t0 + 15 * LENS_S // 100, rear[4]))  # halfway between two lens 0 frames
    source = write_lens_bag(tmp_path / "in", {"/x5/lens0": lens0, "/x5/lens1": lens1})
    settings = _two_lens_settings(tmp_path)
    job = BagJob(source=source, dest=tmp_path / "out", settings=settings)
    summary = process_bag(job, ImageRange(), progress=False)
    assert (summary.frames, summary.processed) == (9, 4), summary.lines()
    assert summary.topic == "/x5/lens0 + /x5/lens1"
    assert sum(summary.skipped.values()) == 1, summary.lines()
    [reason] = summary.skipped
    assert reason.startswith("lens1 frame unpaired"), reason
    fisheye = FisheyeFrames(settings.fisheye_calibration, 16)
    written = list(iter_image_messages(tmp_path / "out", "/x5/depth/image"))
    assert len(written) == 4
    for (stamp_ns, image0), (_, image1), (_, msg) in zip(
        lens0, lens1[:2] + lens1[3:], written, strict=True
    ):
        assert msg.header.stamp.sec * LENS_S + msg.header.stamp.nanosec == stamp_ns
        erp, unseen = fisheye.to_erp(image0, image1)
        expected = ImageRange().predict(erp).range_m
        expected[unseen] = np.nan
        np.testing.assert_array_equal(conversions.image_to_numpy(msg), expected)


def test_lens_topics_are_chosen_by_flag_or_by_the_nodes_lens_topic_names(tmp_path):
    lens = [(1000 * LENS_S, frame) for frame in _lens_frames(1)]
    source = write_lens_bag(tmp_path / "in", {"/a/left": lens, "/a/right": lens})
    settings = _two_lens_settings(tmp_path)
    job = BagJob(source=source, dest=tmp_path / "out", settings=settings)
    with pytest.raises(ValueError, match=r"lens 0 topic 'lens0' is not in the bag .*--lens0"):
        process_bag(job, ImageRange(), progress=False)
    assert not (tmp_path / "out").exists()
    named = BagJob(
        source=source, dest=tmp_path / "out", settings=settings, lens_topics=("/a/left", "/a/right")
    )
    assert process_bag(named, ImageRange(), progress=False).processed == 1
    same = BagJob(
        source=source, dest=tmp_path / "o4", settings=settings, lens_topics=("/a/left",) * 2
    )
    with pytest.raises(ValueError, match="two different topics"):
        process_bag(same, ImageRange(), progress=False)
    by_param = _two_lens_settings(tmp_path, lens0_topic="left", lens1_topic="right")
    job = BagJob(source=source, dest=tmp_path / "out2", settings=by_param)
    assert process_bag(job, ImageRange(), progress=False).processed == 1
    side_by_side = BagJob(
        source=source,
        dest=tmp_path / "out3",
        settings=Settings.defaults(),
        lens_topics=("/a/left", "/a/right"),
    )
    with pytest.raises(ValueError, match="--lens0/--lens1 need a two_images fisheye_calibration"):
        process_bag(side_by_side, ImageRange(), progress=False)
