"""`dap eval` is never silently wrong: empty ground truth, bad arguments, unwritable output."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dap_core.cli import main

H, W = 32, 64


def stanford(root: Path, depths: dict[str, int]) -> None:
    """One Stanford2D3D pair per name; each depth PNG holds one raw value (512 = 1 m)."""
    for name, raw in depths.items():
        rgb = np.random.default_rng(len(name)).integers(0, 256, (H, W, 3), dtype=np.uint8)
        (root / "pano/rgb").mkdir(parents=True, exist_ok=True)
        (root / "pano/depth").mkdir(parents=True, exist_ok=True)
        assert cv2.imwrite(str(root / f"pano/rgb/{name}_rgb.png"), rgb)
        depth = np.full((H, W), raw, np.uint16)
        assert cv2.imwrite(str(root / f"pano/depth/{name}_depth.png"), depth)


def run_eval(root: Path, *extra: str) -> int:
    return main(["eval", "--dataset", f"stanford2d3d:{root}", "--size", f"{H}x{W}", *extra])


def strict_json(path: Path):
    def refuse(constant):
        raise ValueError(f"non-standard JSON constant {constant}")

    return json.loads(path.read_text(), parse_constant=refuse)


def test_all_ground_truth_invalid_is_an_error_and_writes_nothing(tmp_path, capsys):
    stanford(tmp_path / "data", {"a": 65535, "b": 65535})  # 65535 = missing
    out = tmp_path / "out"
    assert run_eval(tmp_path / "data", "--out", str(out)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no valid ground truth" in err[0] and "2 image(s)" in err[0]
    assert not (out / "eval.json").exists()


def test_an_empty_image_is_warned_and_json_is_standard(tmp_path, capsys):
    stanford(tmp_path / "data", {"a": 1024, "b": 65535, "c": 2048})
    out = tmp_path / "out"
    assert run_eval(tmp_path / "data", "--out", str(out)) == 0
    captured = capsys.readouterr()
    assert "weights/dap_small (shipped default)" in captured.out
    assert "1 of 3 image(s) have no valid ground-truth pixel" in captured.err
    row = strict_json(out / "eval.json")[f"stanford2d3d:{tmp_path / 'data'}"]
    assert row["images"] == 2 and row["empty_images"] == 1
    # Indoor ground truth at 2-4 m: nothing is beyond 10 m, so the 100 m mask IoU has no
    # positive pixel to compare; it is null, not NaN.
    assert all(v is None or np.isfinite(v) for v in row.values())
    assert "nan" not in (out / "eval.md").read_text().lower()


@pytest.mark.parametrize(
    "argv",
    [["--max-samples", "-1"], ["--batch-size", "-3"], ["--batch-size", "0"], ["--size", "-1x5"]],
)
def test_numeric_arguments_are_checked_up_front(tmp_path, capsys, argv):
    stanford(tmp_path / "data", {"a": 1024})
    try:
        code = run_eval(tmp_path / "data", *argv)
    except SystemExit as exit:  # argparse refuses the value
        code = exit.code
    assert code in (1, 2)
    err = capsys.readouterr().err
    assert argv[0] in err or "positive" in err
    assert "Traceback" not in err and "range()" not in err


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_without_cuda_is_one_line(tmp_path, capsys):
    stanford(tmp_path / "data", {"a": 1024})
    assert run_eval(tmp_path / "data", "--device", "cuda") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "CUDA is not available" in err[0]


def test_output_under_a_regular_file_is_one_line(tmp_path, capsys):
    stanford(tmp_path / "data", {"a": 1024})
    (tmp_path / "file").write_text("x")
    assert run_eval(tmp_path / "data", "--out", str(tmp_path / "file" / "out")) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(tmp_path / "file" / "out") in err[0]


def test_bench_camera_size_is_checked_before_the_model(capsys):
    assert main(["bench", "--camera-size=-1x5", "--weights", "/nonexistent"]) == 1
    err = capsys.readouterr().err
    assert "positive" in err and "/nonexistent" not in err


@pytest.mark.skipif(
    not (hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("mount")),
    reason="needs root to mount a tmpfs",
)
def test_full_disk_leaves_no_empty_report(tmp_path, capsys):
    stanford(tmp_path / "data", {"a": 1024})
    disk = tmp_path / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(disk)])
    if done.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    try:
        filler = disk / "filler"
        with open(filler, "wb", buffering=0) as handle:  # fill the disk to the last block
            try:
                while True:
                    handle.write(b"\0" * 4096)
            except OSError:
                pass
        assert run_eval(tmp_path / "data", "--out", str(disk)) == 1
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "No space left on device" in err[0]
        assert sorted(p.name for p in disk.iterdir()) == ["filler"]  # no 0-byte eval.json/md
    finally:
        subprocess.run(["umount", str(disk)], check=True)
