"""ONNX exports (`dap export onnx` and the runtime's cache) are all or nothing on disk.

A full disk (a small tmpfs; needs root to mount, skipped otherwise) or an unwritable output
path ends in one WriteError line naming the path and the cause, and leaves no partial
`.onnx` (nor the staging folder) behind.
"""

from __future__ import annotations

import os
import subprocess

import pytest
from dap_export_helpers import FIXTURE_SIZE, fixture_onnx_path, load_fixture_model

from dap_core.cli import main
from dap_core.export.onnx import export_onnx
from dap_core.files import WriteError
from dap_core.model import save_model
from dap_core.runtime import Predictor


@pytest.fixture(scope="module")
def model(official_fixtures):
    return load_fixture_model(official_fixtures)


@pytest.fixture
def small_tmpfs(tmp_path, tmp_path_factory, official_fixtures):
    """A tmpfs too small for the fixture export (half its size)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    size = fixture_onnx_path(tmp_path_factory, official_fixtures).stat().st_size
    mount = tmp_path / "full"
    mount.mkdir()
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={max(size // 2, 4096)}", "tmpfs", str(mount)],
        capture_output=True,
    )
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def _leftovers(folder):
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))


def test_full_disk_export_is_one_line_and_leaves_nothing(model, small_tmpfs):
    target = small_tmpfs / "dap.onnx"
    with pytest.raises(WriteError) as info:
        export_onnx(model, target, input_size=FIXTURE_SIZE)
    message = str(info.value)
    assert "\n" not in message
    assert str(target) in message and "No space left on device" in message
    assert _leftovers(small_tmpfs) == []


def test_full_disk_keeps_an_existing_export(model, small_tmpfs):
    target = small_tmpfs / "dap.onnx"
    target.write_bytes(b"previous export")
    with pytest.raises(WriteError):
        export_onnx(model, target, input_size=FIXTURE_SIZE)
    assert target.read_bytes() == b"previous export"
    assert _leftovers(small_tmpfs) == ["dap.onnx"]


def test_onnxruntime_cache_on_a_full_disk_leaves_no_partial_file(model, small_tmpfs):
    with pytest.raises(WriteError, match="No space left on device"):
        Predictor(model, backend="onnxruntime", input_size=FIXTURE_SIZE, cache_dir=small_tmpfs)
    assert _leftovers(small_tmpfs) in ([], ["onnx"])


def test_output_under_a_regular_file_is_one_clear_line(model, tmp_path, capsys):
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    with pytest.raises(WriteError, match=r"cannot write .*file/sub/dap\.onnx: Not a directory"):
        export_onnx(model, blocker / "sub" / "dap.onnx", input_size=FIXTURE_SIZE)
    weights = save_model(model, tmp_path / "weights")
    out = blocker / "dap.onnx"
    assert main(["export", "onnx", "--weights", str(weights), "--out", str(out)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"dap export: error: cannot write {out}: Not a directory"]


def test_read_only_cache_is_one_clear_line(model, tmp_path):
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mount = tmp_path / "ro"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)])
    if done.returncode:
        pytest.skip("cannot mount a read-only tmpfs here")
    try:
        with pytest.raises(WriteError, match=r"cannot write .*\.onnx: Read-only file system"):
            Predictor(model, backend="onnxruntime", input_size=FIXTURE_SIZE, cache_dir=mount)
    finally:
        subprocess.run(["umount", str(mount)], check=True)
