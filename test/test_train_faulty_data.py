"""Training and evaluation on faulty data are never silently wrong.

A sample a reader cannot use is dropped from its batch (never replaced by another one, which
would then count twice), named once with its file and cause, counted in the run summary and
TensorBoard, and a run whose unusable share passes `data.max_skip_fraction` stops with one line.
The folders are tiny Structured3D / Matterport3D / DAP-2M layouts written by the tests.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from model_helpers import micro_config
from train_utils import REPO_ROOT, dap_train, subprocess_env, write_config

from dap_core.data.datasets import (
    Dap2mFolder,
    DatasetReadError,
    Matterport3D,
    Structured3D,
    is_skipped,
)
from dap_core.train.data import collate
from dap_core.train.skips import SkipLedger, TooManySkippedError

H, W = 32, 64
ROOMS = 6


def room_dir(root: Path, k: int) -> Path:
    return root / f"scene_{k:05d}/2D_rendering/{k}/panorama/full"


def structured3d(root: Path, n: int = ROOMS, depth_mm: int | None = None) -> list[Path]:
    """n rooms; room k has a ramp image and a uniform range of (k + 1) m (or `depth_mm`)."""
    rooms = []
    for k in range(n):
        room = room_dir(root, k)
        room.mkdir(parents=True)
        rgb = np.full((H, W, 3), 20 * k, np.uint8)
        rgb[:, :, 1] = np.linspace(0, 255, W, dtype=np.uint8)[None]
        assert cv2.imwrite(str(room / "rgb_rawlight.png"), rgb)
        mm = (k + 1) * 1000 if depth_mm is None else depth_mm
        assert cv2.imwrite(str(room / "depth.png"), np.full((H, W), mm, np.uint16))
        rooms.append(room)
    return rooms


def _truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _corrupt_rgb(room: Path) -> str:
    (room / "rgb_rawlight.png").write_bytes(b"this is not a PNG file" * 8)
    return "rgb_rawlight.png"


def _truncated_depth(room: Path) -> str:
    _truncate(room / "depth.png")
    return "depth.png"


def _empty_rgb(room: Path) -> str:
    (room / "rgb_rawlight.png").write_bytes(b"")
    return "rgb_rawlight.png"


def _wrong_size_depth(room: Path) -> str:
    assert cv2.imwrite(str(room / "depth.png"), np.full((H, H), 1000, np.uint16))
    return f"depth.png: ground truth is {H}x{H} but its image is {H}x{W}"


def _transposed_depth(room: Path) -> str:
    assert cv2.imwrite(str(room / "depth.png"), np.full((W, H), 1000, np.uint16))
    return f"depth.png: ground truth is {W}x{H} but its image is {H}x{W}"


FAULTS = {
    "corrupt_rgb": _corrupt_rgb,
    "truncated_depth_png": _truncated_depth,
    "zero_length_rgb": _empty_rgb,
    "wrong_size_depth": _wrong_size_depth,
    "transposed_depth": _transposed_depth,
}


@pytest.mark.parametrize("fault", sorted(FAULTS))
def test_a_faulty_sample_is_skipped_naming_its_file_never_replaced(tmp_path, fault):
    rooms = structured3d(tmp_path)
    named = FAULTS[fault](rooms[2])
    with pytest.raises(DatasetReadError, match=named.split(":")[0].replace(".", r"\.")):
        Structured3D(tmp_path)[2]
    ds = Structured3D(tmp_path, on_error="skip")
    item = ds[2]
    assert is_skipped(item), f"sample 2 was replaced by {item['name']}"
    assert str(rooms[2]) in item["skipped"] and named in item["skipped"]
    # The neighbours are themselves, once each: sample 3 keeps its own 4 m range.
    batch = collate([ds[i] for i in range(ROOMS)])
    assert batch["batch_size"] == ROOMS - 1 and len(set(batch["name"])) == ROOMS - 1
    assert batch["skipped"] == [item["skipped"]]
    ranges = sorted(float(r.nanmean()) for r in batch["range_m"])
    assert ranges == pytest.approx([1.0, 2.0, 4.0, 5.0, 6.0])  # 3 m (the faulty room) absent


def test_a_2_to_1_depth_map_at_half_size_is_the_same_panorama(tmp_path):
    rooms = structured3d(tmp_path)
    assert cv2.imwrite(str(rooms[0] / "depth.png"), np.full((H // 2, W // 2), 1500, np.uint16))
    item = Structured3D(tmp_path, on_error="skip")[0]
    assert not is_skipped(item) and item["range_m"].shape == (1, H, W)
    assert float(item["range_m"].max()) == 1.5


def test_a_missing_depth_png_is_listed_with_its_reason(tmp_path):
    rooms = structured3d(tmp_path)
    (rooms[4] / "depth.png").unlink()
    ds = Structured3D(tmp_path, on_error="skip")
    assert len(ds) == ROOMS - 1
    assert ds.skipped == [f"{rooms[4] / 'depth.png'}: missing file"]


def test_a_truncated_exr_is_skipped_naming_the_file(tmp_path):
    import OpenEXR

    for stem in ("a", "b"):
        assert cv2.imwrite(str(tmp_path / f"{stem}_emission_center_0.png"), np.zeros((H, W, 3)))
        header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
        with OpenEXR.File(header, {"R": np.full((H, W), 2.0, np.float32)}) as exr:
            exr.write(str(tmp_path / f"{stem}_depth_center_0.exr"))
    exr_path = tmp_path / "a_depth_center_0.exr"
    data = exr_path.read_bytes()
    exr_path.write_bytes(data[:-10])  # the pixel data of its last chunk is cut off
    ds = Matterport3D(tmp_path, on_error="skip")
    item = ds[0]
    assert is_skipped(item) and str(exr_path) in item["skipped"]
    assert not is_skipped(ds[1])
    with pytest.raises(DatasetReadError, match=r"a_depth_center_0\.exr"):
        Matterport3D(tmp_path)[0]


@pytest.mark.parametrize(
    ("array", "cause"),
    [
        (np.zeros((0, 0), np.float32), "expected a non-empty 2-D range map, got shape (0, 0)"),
        (np.array([["far", "near"]]), "expected a numeric range map, got dtype <U4"),
    ],
    ids=["0x0", "string"],
)
def test_a_bad_npy_range_is_one_reason_naming_the_file(tmp_path, array, cause):
    for i in range(2):
        assert cv2.imwrite(str(tmp_path / f"rgb_{i}.png"), np.zeros((H, W, 3), np.uint8))
        np.save(tmp_path / f"erp_distance_{i}.npy", np.full((H, W), 3.0, np.float32))
    np.save(tmp_path / "erp_distance_0.npy", array)
    item = Dap2mFolder(tmp_path, on_error="skip")[0]
    assert is_skipped(item)
    assert item["skipped"] == f"{tmp_path / 'erp_distance_0.npy'}: {cause}"


def test_the_ledger_counts_each_sample_once_and_stops_past_the_limit():
    ledger = SkipLedger(total=10, max_fraction=0.2)
    assert ledger.add(["a: bad", "a: bad", "b: bad"]) == ["a: bad", "b: bad"]
    assert ledger.add(["a: bad"]) == []
    ledger.check()  # 2 of 10 = the limit, not past it
    ledger.add(["c: bad"])
    with pytest.raises(TooManySkippedError, match=r"3 of 10 .*max_skip_fraction 0.2; first: a"):
        ledger.check()
    everything = SkipLedger(total=2, max_fraction=1.0)
    everything.add(["a: bad", "b: bad"])
    with pytest.raises(TooManySkippedError, match="no training sample can be used"):
        everything.check()


def test_eval_counts_only_real_images_and_lists_the_skipped(tmp_path):
    from dap_core.model import DAP
    from dap_core.train.evaluate import evaluate_model

    rooms = structured3d(tmp_path)
    _corrupt_rgb(rooms[1])
    (rooms[5] / "depth.png").unlink()
    torch.manual_seed(0)
    model = DAP(micro_config(input_size=(H, W)))
    row = evaluate_model(model, Structured3D(tmp_path, on_error="skip"), batch_size=2)
    assert row["images"] == ROOMS - 2 and row["skipped_images"] == 2
    assert [r.split(": ")[0] for r in row["skipped"]] == [
        str(rooms[5] / "depth.png"),
        str(rooms[1] / "rgb_rawlight.png"),
    ]


# ------------------------------------------------------------------------------------------
# The real `dap train` on a faulty folder


def _train(tmp_path: Path, data: Path, **data_section) -> subprocess.CompletedProcess:
    config = write_config(
        tmp_path / "run.yaml",
        data={
            "size": [H, W],
            "labeled": [{"type": "structured3d", "root": str(data)}],
            **data_section,
        },
        schedule={"batch_size": 2, "max_steps": 6, "checkpoint_every": 0, "log_every": 1},
        runtime={"threads": 1, "progress": False, "tensorboard": True},
    )
    return dap_train(config)


def _error_line(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode != 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    errors = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, proc.stderr
    return errors[0]


def _scalars(run_dir: Path, tag: str) -> list[float]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(run_dir / "tensorboard"))
    acc.Reload()
    return [event.value for event in acc.Scalars(tag)]


def test_training_names_each_skip_once_counts_it_and_trains_on_the_rest(tmp_path):
    rooms = structured3d(tmp_path / "data")
    _corrupt_rgb(rooms[1])
    (rooms[3] / "depth.png").unlink()
    proc = _train(tmp_path, tmp_path / "data", max_skip_fraction=0.5)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = proc.stdout
    corrupt = f"skipped sample {rooms[1] / 'rgb_rawlight.png'}: cannot read image"
    missing = f"skipped sample {rooms[3] / 'depth.png'}: missing file"
    # 6 steps x 2 draws of 5 samples: the corrupt one is drawn more than once, named once.
    assert out.count(corrupt) == 1 and out.count(missing) == 1, out
    assert "skipped 2 of 6 samples (33.3%)" in out, out
    assert _scalars(tmp_path / "run", "data/skipped_samples")[-1] == 2


def test_training_past_max_skip_fraction_stops_with_one_line(tmp_path):
    rooms = structured3d(tmp_path / "data")
    _truncated_depth(rooms[0])
    line = _error_line(_train(tmp_path, tmp_path / "data"))  # default limit 0.05: 1 of 6 is past
    assert "1 of 6 training samples (17%)" in line and "data.max_skip_fraction 0.05" in line
    assert str(rooms[0] / "depth.png") in line
    assert not (tmp_path / "run" / "model").exists()


def test_training_where_every_depth_is_invalid_stops_with_an_error(tmp_path):
    structured3d(tmp_path / "data", depth_mm=0)  # 0 = missing in Structured3D
    line = _error_line(_train(tmp_path, tmp_path / "data", max_skip_fraction=1.0))
    assert "no training sample can be used" in line and "no valid ground-truth pixel" in line
    assert not (tmp_path / "run" / "model").exists()


def _torchrun(config: Path) -> subprocess.CompletedProcess:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    cmd += ["-m", "dap_core.train", "--config", str(config)]
    return subprocess.run(
        cmd, env=subprocess_env(), cwd=REPO_ROOT, capture_output=True, text=True, timeout=400
    )


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_two_ranks_agree_on_skips_and_stop_together(tmp_path):
    rooms = structured3d(tmp_path / "data")
    _corrupt_rgb(rooms[1])
    corrupt = f"skipped sample {rooms[1] / 'rgb_rawlight.png'}: cannot read image"
    # Batch size 1: the rank that draws the corrupt sample has an empty batch, so both ranks
    # must skip that update together (a rank stepping alone would hang the other).
    config = write_config(
        tmp_path / "run.yaml",
        data={
            "size": [H, W],
            "labeled": [{"type": "structured3d", "root": str(tmp_path / "data")}],
            "max_skip_fraction": 0.5,
        },
        schedule={"batch_size": 1, "max_steps": 6, "checkpoint_every": 0, "log_every": 1},
    )
    proc = _torchrun(config)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert proc.stdout.count(corrupt) == 1, proc.stdout
    assert "every sample of a batch was skipped: no update" in proc.stdout
    # 6 steps x 2 ranks x 1 = two epochs of 6: the corrupt sample is drawn once in each.
    assert "skipped 1 of 6 samples (16.7%), 2 step(s) without update" in proc.stdout
    # Past the limit both ranks stop at the same step with the same line, none waits.
    config.write_text(
        config.read_text().replace("max_skip_fraction: 0.5", "max_skip_fraction: 0.1")
    )
    (tmp_path / "run").rename(tmp_path / "first")
    proc = _torchrun(config)
    assert proc.returncode != 0, proc.stderr  # (torchrun's agent adds its own report)
    # Each rank's error is one line; found by pattern so that torchrun's own report, which
    # shares the stream, cannot split or hide one.
    errors = re.findall(r"\[rank (\d)\] dap train: error: ([^\n\[]*)", proc.stderr)
    assert sorted(rank for rank, _ in errors) == ["0", "1"], proc.stderr
    assert all("1 of 6 training samples (17%)" in text for _, text in errors), proc.stderr
