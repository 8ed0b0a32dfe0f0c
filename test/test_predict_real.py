"""`dap predict` with the shipped weights on real photographs (test/data/panoramas, CC0).

The generated panoramas of test_predict_inputs.py exercise every size and pixel format; these
are real pictures taken by a real 360° camera, in the sizes and formats users hand the CLI:
the native 1024×512 JPEG, the same photo at 2048×1024 and 4096×2048, RGBA, grey and 16-bit.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
from plyfile import PlyData

from dap_core import io
from dap_core.cli import main

DATA = Path(__file__).parent / "data" / "panoramas"
PHOTOS = ("lookout_1k", "venice_sunset_1k")


def photo(name: str) -> np.ndarray:
    """The photo as OpenCV reads it (BGR uint8)."""
    image = cv2.imread(str(DATA / f"{name}.jpg"), cv2.IMREAD_COLOR)
    assert image is not None and image.shape == (512, 1024, 3)
    return image


def predict(images: Path, out: Path, *extra: str) -> int:
    """The shipped default weights (no --weights), as a new user runs it."""
    return main(["predict", str(images), "--out", str(out), "--backend", "torch", *extra])


def variants(name: str, folder: Path) -> list[Path]:
    """The real photo in every size and pixel format the CLI accepts."""
    bgr = photo(name)
    files = {
        f"{name}.jpg": bgr,
        f"{name}_2048.jpg": cv2.resize(bgr, (2048, 1024), interpolation=cv2.INTER_CUBIC),
        f"{name}_4096.jpg": cv2.resize(bgr, (4096, 2048), interpolation=cv2.INTER_CUBIC),
        f"{name}_rgba.png": np.dstack([bgr, np.full(bgr.shape[:2], 200, np.uint8)]),
        f"{name}_grey.jpg": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY),
        f"{name}_rgb16.png": bgr.astype(np.uint16) * 257,
        f"{name}_grey16.png": cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY).astype(np.uint16) * 257,
    }
    folder.mkdir(parents=True, exist_ok=True)
    for file_name, image in files.items():
        assert cv2.imwrite(str(folder / file_name), image)
    return [folder / file_name for file_name in files]


@pytest.mark.parametrize("name", PHOTOS)
def test_real_photo_in_every_size_and_format(tmp_path, capsys, name):
    inputs = variants(name, tmp_path / "in")
    out = tmp_path / "out"
    assert predict(tmp_path / "in", out, "--ply-points", "50000") == 0
    printed = capsys.readouterr().out
    assert f"wrote {len(inputs)} prediction(s)" in printed
    assert "weights/dap_small (shipped default)" in printed
    for path in inputs:
        height, width = io.read_panorama(path).shape[:2]
        range_m = np.load(out / f"{path.stem}_range.npy")
        assert range_m.shape == (height, width) and range_m.dtype == np.float32
        within = cv2.imread(str(out / f"{path.stem}_within_100m.png"), cv2.IMREAD_UNCHANGED)
        assert within.shape == (height, width)
        # REP 117 gating: finite exactly where the 100 m mask says within, +inf where beyond.
        np.testing.assert_array_equal(np.isfinite(range_m), within >= 128, err_msg=path.name)
        assert not np.isnan(range_m).any() and not np.isneginf(range_m).any()
        finite = range_m[np.isfinite(range_m)]
        assert finite.size > 0 and (finite > 0).all() and (finite <= 100).all()
        vertex = PlyData.read(str(out / f"{path.stem}.ply"))["vertex"]
        assert 0 < vertex.count <= min(50_000, finite.size)  # the budget, finite points only
        xyz = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
        assert np.isfinite(xyz).all()
        assert cv2.imread(str(out / f"{path.stem}_range_color.png")) is not None


@pytest.mark.parametrize("name", PHOTOS)
def test_floor_below_the_camera_reads_nearer_than_the_horizon(tmp_path, name):
    """A physical property of any upright photo taken above a floor, which the model must get.

    The nadir band (bottom 10 % of rows, elevation below -72°) sees the floor at about the
    camera's height; the horizon band (rows 30-70 %, elevation ±36°) sees walls, buildings and
    the far view. The medians differ by a factor 2-5 for both photos, far from any rounding.
    """
    folder = tmp_path / "in"
    folder.mkdir()
    assert cv2.imwrite(str(folder / f"{name}.jpg"), photo(name))
    assert predict(folder, tmp_path / "out", "--raw-range", "--no-ply") == 0
    range_m = np.load(tmp_path / "out" / f"{name}_range.npy")
    height = range_m.shape[0]
    nadir = np.median(range_m[int(0.9 * height) :])
    horizon = np.median(range_m[int(0.3 * height) : int(0.7 * height)])
    assert 0.3 < nadir < horizon, (nadir, horizon)


def test_truncated_real_jpeg_is_refused_and_the_run_goes_on(tmp_path, capsys):
    """The first third of a 4096×2048 JPEG: libjpeg fills grey rows; the CLI must refuse it."""
    folder = tmp_path / "in"
    folder.mkdir()
    large = cv2.resize(photo("lookout_1k"), (4096, 2048), interpolation=cv2.INTER_CUBIC)
    ok, encoded = cv2.imencode(".jpg", large)
    assert ok
    (folder / "a_truncated.jpg").write_bytes(encoded.tobytes()[: len(encoded) // 3])
    assert cv2.imwrite(str(folder / "b_good.jpg"), photo("venice_sunset_1k"))
    assert predict(folder, tmp_path / "out", "--no-ply") == 1
    captured = capsys.readouterr()
    assert "a_truncated.jpg: corrupt or truncated image" in captured.err  # its one line
    assert "1 of 2 image(s) failed" in captured.err  # and the summary names it again
    assert "Traceback" not in captured.err
    assert not (tmp_path / "out" / "a_truncated_range.npy").exists()
    assert np.load(tmp_path / "out" / "b_good_range.npy").shape == (512, 1024)
