"""`dap predict` on the files a user has: shipped weights, odd images, bad files, full disks."""

from __future__ import annotations

import os
import shutil
import subprocess

import cv2
import numpy as np
import pytest
from dap_export_helpers import load_fixture_model
from plyfile import PlyData

from dap_core import io
from dap_core.cli import main
from dap_core.commands.predict import output_names
from dap_core.model import load_model, save_model
from dap_core.runtime import Predictor


@pytest.fixture(scope="module")
def weights_dir(official_fixtures, tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights") / "fixture"
    save_model(load_fixture_model(official_fixtures), directory)
    return directory


def panorama(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth RGB picture (compresses well, so large test files stay small)."""
    rng = np.random.default_rng(seed)
    small = rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)
    return cv2.resize(small, (width, height), interpolation=cv2.INTER_LINEAR)


def write(path, image) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), image)


def predict(weights_dir, images, out, *extra) -> int:
    argv = ["predict", str(images), "--weights", str(weights_dir), "--out", str(out)]
    return main([*argv, "--backend", "torch", "--input-size", "64x128", *extra])


def test_shipped_weights_are_the_default(tmp_path, capsys):
    write(tmp_path / "in" / "room.png", panorama(96, 192))
    out = tmp_path / "out"
    argv = ["predict", str(tmp_path / "in"), "--out", str(out), "--backend", "torch"]
    assert main([*argv, "--no-ply"]) == 0
    printed = capsys.readouterr().out
    assert "weights/dap_small (shipped default)" in printed
    assert np.load(out / "room_range.npy").shape == (96, 192)


def test_raw_range_and_a_threshold_without_a_head(weights_dir, tmp_path, capsys):
    write(tmp_path / "in" / "a.png", panorama(96, 192))
    assert predict(weights_dir, tmp_path / "in", tmp_path / "raw", "--raw-range") == 0
    raw = np.load(tmp_path / "raw" / "a_range.npy")
    assert np.isfinite(raw).all()
    # No 40 m head: the range itself is compared, and the line says so.
    argv = ["--masks", "none", "--mask-threshold", "40"]
    assert predict(weights_dir, tmp_path / "in", tmp_path / "t40", *argv) == 0
    assert "+inf where range > 40 m (no 40 m range-mask head ran" in capsys.readouterr().out
    gated = np.load(tmp_path / "t40" / "a_range.npy")
    np.testing.assert_array_equal(np.isposinf(gated), raw > 40)
    assert 0 < (raw > 40).mean() < 1  # both sides present, so the check can fail
    vertex = PlyData.read(str(tmp_path / "t40" / "a.ply"))["vertex"]
    assert vertex.count == (raw <= 40).sum()  # only finite points


@pytest.mark.parametrize("size", [(600, 1000), (1024, 1024), (1024, 512), (512, 1025)])
def test_not_a_panorama_is_refused_unless_allowed(weights_dir, tmp_path, capsys, size):
    write(tmp_path / "x.png", panorama(*size))
    assert predict(weights_dir, tmp_path / "x.png", tmp_path / "o") == 1
    err = capsys.readouterr().err
    assert f"{size[1]}x{size[0]} is not a 2:1 equirectangular panorama" in err
    assert "--allow-non-panorama" in err and "Traceback" not in err
    assert predict(weights_dir, tmp_path / "x.png", tmp_path / "o", "--allow-non-panorama") == 0
    assert np.load(tmp_path / "o" / "x_range.npy").shape == size


def test_directory_run_skips_bad_files_lists_them_and_fails(weights_dir, tmp_path, capsys):
    images = tmp_path / "in"
    write(images / "b_good.jpg", panorama(256, 512))
    whole = (images / "b_good.jpg").read_bytes()
    (images / "a_truncated.jpg").write_bytes(whole[: len(whole) // 3])
    (images / "c_empty.png").write_bytes(b"")
    write(images / "d_good.png", panorama(96, 192, seed=1))
    out = tmp_path / "out"
    assert predict(weights_dir, images, out, "--no-ply") == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("dap predict: error: 2 of 4 image(s) failed")
    assert "a_truncated.jpg" in last and "c_empty.png" in last
    assert "truncated" in err
    assert sorted(p.name for p in out.glob("*_range.npy")) == [
        "b_good_range.npy",
        "d_good_range.npy",
    ]


def test_truncated_png_is_refused(tmp_path):
    write(tmp_path / "p.png", np.random.default_rng(0).integers(0, 255, (64, 128, 3), np.uint8))
    data = (tmp_path / "p.png").read_bytes()
    (tmp_path / "p.png").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="corrupt or truncated"):
        io.read_panorama(tmp_path / "p.png")


def test_same_stem_gives_distinct_outputs(weights_dir, tmp_path, capsys):
    write(tmp_path / "in" / "a.jpg", panorama(96, 192, seed=1))
    write(tmp_path / "in" / "a.png", panorama(96, 192, seed=2))
    write(tmp_path / "in" / "b.png", panorama(96, 192, seed=3))
    out = tmp_path / "out"
    assert predict(weights_dir, tmp_path / "in", out, "--no-ply") == 0
    assert "wrote 3 prediction(s)" in capsys.readouterr().out
    names = sorted(p.name for p in out.glob("*_range.npy"))
    assert names == ["a.jpg_range.npy", "a.png_range.npy", "b_range.npy"]
    assert not np.array_equal(np.load(out / names[0]), np.load(out / names[1]))


def test_output_names_never_collide(tmp_path):
    paths = [tmp_path / n for n in ("a.jpg", "a.png", "a.jpg.png")]
    names = output_names(paths)
    assert len(set(names.values())) == 3


def test_ply_has_a_point_budget_by_default(weights_dir, tmp_path):
    assert io.ply_stride_for((2048, 4096), 1_000_000) == 3  # 683 x 1366 = 933 k points
    assert io.ply_stride_for((96, 192), 1_000_000) == 1
    write(tmp_path / "a.png", panorama(96, 192))
    assert predict(weights_dir, tmp_path / "a.png", tmp_path / "o", "--raw-range") == 0
    assert PlyData.read(str(tmp_path / "o" / "a.ply"))["vertex"].count == 96 * 192
    assert predict(weights_dir, tmp_path / "a.png", tmp_path / "o", "--ply-points", "500") == 0
    count = PlyData.read(str(tmp_path / "o" / "a.ply"))["vertex"].count
    assert 0 < count <= 500


def test_preview_scale_follows_the_image():
    indoor = np.full((4, 8), 3.2, np.float32)
    indoor[0, 0] = np.inf
    assert io.preview_scale(indoor, 100.0) == 4.0
    assert io.preview_scale(np.full((4, 8), 42.0, np.float32), 100.0) == 50.0
    assert io.preview_scale(np.full((4, 8), 420.0, np.float32), 100.0) == 100.0
    assert io.preview_scale(np.full((4, 8), np.inf, np.float32), 100.0) == 100.0


def test_preview_uses_the_image_scale_and_labels_it(weights_dir, tmp_path):
    from dap_core.visualize import add_colorbar, colorize_range

    write(tmp_path / "a.png", panorama(96, 192))
    assert predict(weights_dir, tmp_path / "a.png", tmp_path / "o", "--raw-range") == 0
    range_m = np.load(tmp_path / "o" / "a_range.npy")
    scale = io.preview_scale(range_m, 100.0)
    assert scale < 100.0  # the fixture's ranges reach about 62 m, not the model's 100 m
    expected = add_colorbar(colorize_range(range_m, scale), scale)  # bar labelled 0..scale
    colour = cv2.cvtColor(cv2.imread(str(tmp_path / "o" / "a_range_color.png")), cv2.COLOR_BGR2RGB)
    np.testing.assert_array_equal(colour, expected)


def test_official_infer_preprocessing(weights_dir, tmp_path):

    rgb = panorama(64, 128)
    write(tmp_path / "a.png", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    argv = ["predict", str(tmp_path / "a.png"), "--weights", str(weights_dir)]
    argv += ["--out", str(tmp_path / "o"), "--backend", "torch", "--raw-range", "--no-ply"]
    assert main([*argv, "--preprocess", "official_infer"]) == 0
    model = load_model(weights_dir)
    model.config = model.config.replace(normalize=False)
    expected = Predictor(model, backend="torch", input_size=(64, 128)).predict(rgb).range_m
    got = np.load(tmp_path / "o" / "a_range.npy")
    np.testing.assert_allclose(got, expected, atol=1e-5)  # same float32 graph, same input
    normalized = Predictor(weights_dir, backend="torch", input_size=(64, 128)).predict(rgb)
    assert np.abs(got - normalized.range_m).max() > 1e-3  # the convention matters


def test_generated_panoramas_of_every_size_and_kind(weights_dir, tmp_path, capsys):
    images = tmp_path / "in"
    for height in (512, 1024, 2048):
        write(images / f"rgb_{height}.jpg", panorama(height, 2 * height))
    rgba = np.dstack([panorama(256, 512), np.full((256, 512), 128, np.uint8)])
    write(images / "rgba.png", rgba)
    write(images / "grey.png", panorama(256, 512)[..., 0])
    write(images / "deep16.png", panorama(256, 512).astype(np.uint16) * 257)
    write(images / "grey16.png", panorama(256, 512)[..., 1].astype(np.uint16) * 257)
    out = tmp_path / "out"
    assert predict(weights_dir, images, out, "--ply-points", "20000") == 0
    assert "wrote 7 prediction(s)" in capsys.readouterr().out
    for path in images.iterdir():
        rgb = io.read_panorama(path)
        assert rgb.dtype == np.uint8 and rgb.shape[2] == 3
        range_m = np.load(out / f"{path.stem}_range.npy")
        assert range_m.shape == rgb.shape[:2]
        within = cv2.imread(str(out / f"{path.stem}_within_100m.png"), cv2.IMREAD_UNCHANGED)
        # finite exactly where the mask says within, +inf where it says beyond
        np.testing.assert_array_equal(np.isfinite(range_m), within >= 128)
        assert not np.isnan(range_m).any()
    grey16 = io.read_panorama(images / "grey16.png")
    np.testing.assert_array_equal(grey16[..., 0], panorama(256, 512)[..., 1])


def test_output_under_a_regular_file_is_one_line(weights_dir, tmp_path, capsys):
    write(tmp_path / "a.png", panorama(96, 192))
    (tmp_path / "file").write_text("x")
    assert predict(weights_dir, tmp_path / "a.png", tmp_path / "file" / "out") == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write to output directory" in err[0]
    assert str(tmp_path / "file" / "out") in err[0]


def _root_with(tool: str) -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which(tool) is not None


@pytest.mark.skipif(not _root_with("chattr"), reason="needs root and chattr")
def test_immutable_output_directory_is_one_line(weights_dir, tmp_path, capsys):
    write(tmp_path / "a.png", panorama(96, 192))
    out = tmp_path / "frozen"
    out.mkdir()
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("this filesystem has no immutable attribute")
    try:
        assert predict(weights_dir, tmp_path / "a.png", out) == 1
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out) in err[0] and "not permitted" in err[0]


@pytest.fixture
def small_disk(tmp_path):
    """A 2 MB tmpfs (root only), unmounted afterwards."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if not _root_with("mount"):
        pytest.skip("needs root to mount a tmpfs")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(mount)], capture_output=True
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    yield mount
    subprocess.run(["umount", str(mount)], check=True)


def test_full_disk_is_one_line_and_leaves_no_partial_file(
    weights_dir, tmp_path, small_disk, capsys
):
    write(tmp_path / "big.png", panorama(1024, 2048))  # 8 MB of range: cannot fit in 2 MB
    assert predict(weights_dir, tmp_path / "big.png", small_disk) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "No space left on device" in err[0]
    assert str(small_disk / "big_range.npy") in err[0]
    assert not list(small_disk.iterdir())  # no truncated file, no temp file


def test_bad_arguments_and_unreadable_images_fail_before_the_model_loads(
    weights_dir, tmp_path, capsys, monkeypatch
):
    import dap_core.runtime

    def no_model(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(dap_core.runtime, "Predictor", no_model)
    write(tmp_path / "a.png", panorama(96, 192))
    with pytest.raises(SystemExit):
        predict(weights_dir, tmp_path / "a.png", tmp_path / "o", "--ply-stride", "0")
    assert "--ply-stride: must be >= 1" in capsys.readouterr().err
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")
    assert predict(weights_dir, tmp_path / "bad.jpg", tmp_path / "o") == 1
    assert "bad.jpg" in capsys.readouterr().err
