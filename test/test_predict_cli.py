"""`dap predict`, `dap export onnx`, `dap build-engine` from the command line (in process)."""

from __future__ import annotations

import sys

import cv2
import numpy as np
import pytest
from dap_export_helpers import FIXTURE_SIZE, fixture_onnx_path, load_fixture_model
from plyfile import PlyData

from dap_core import io
from dap_core.cli import main
from dap_core.export.onnx import read_onnx_info
from dap_core.model import save_model
from dap_core.runtime import Predictor


@pytest.fixture(scope="module")
def weights_dir(official_fixtures, tmp_path_factory):
    directory = tmp_path_factory.mktemp("weights") / "fixture"
    save_model(load_fixture_model(official_fixtures), directory)
    return directory


@pytest.fixture
def image_dir(tmp_path):
    directory = tmp_path / "images"
    directory.mkdir()
    rng = np.random.default_rng(0)
    for name in ("hall", "yard"):
        rgb = rng.integers(0, 256, (96, 192, 3), dtype=np.uint8)
        cv2.imwrite(str(directory / f"{name}.png"), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    (directory / "README.txt").write_text("not an image")
    return directory


def test_predict_writes_every_output_for_each_image(weights_dir, image_dir, tmp_path, capsys):
    out = tmp_path / "out"
    argv = ["predict", str(image_dir), "--weights", str(weights_dir), "--out", str(out)]
    argv += ["--backend", "torch", "--input-size", "64x128", "--ply-stride", "2"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "backend: torch on cpu" in printed and "wrote 2 prediction(s)" in printed
    assert "+inf where the 100 m range mask says beyond" in printed
    predictor = Predictor(weights_dir, backend="torch", input_size=FIXTURE_SIZE)
    for stem in ("hall", "yard"):
        range_m = np.load(out / f"{stem}_range.npy")
        assert range_m.shape == (96, 192) and range_m.dtype == np.float32
        prediction = predictor.predict(io.read_rgb(image_dir / f"{stem}.png"))
        # What the node publishes: +inf exactly where the 100 m mask says "beyond" (REP 117).
        beyond = prediction.masks[100] < 0.5
        assert beyond.any() and not beyond.all()  # the fixture model says both
        np.testing.assert_array_equal(np.isposinf(range_m), beyond)
        np.testing.assert_allclose(range_m[~beyond], prediction.range_m[~beyond], atol=1e-4)
        mm = io.read_range_png16(out / f"{stem}_range_mm.png")
        near, far = range_m < 65.5, range_m > 65.535
        np.testing.assert_allclose(mm[near], range_m[near], atol=5e-4 + 1e-6)
        assert np.isinf(mm[far]).all()
        colour = cv2.imread(str(out / f"{stem}_range_color.png"))
        assert colour.shape[1] == 192 and colour.shape[0] > 96
        mask = cv2.imread(str(out / f"{stem}_within_100m.png"), cv2.IMREAD_UNCHANGED)
        assert mask.shape == (96, 192) and mask.dtype == np.uint8
        vertex = PlyData.read(str(out / f"{stem}.ply"))["vertex"]
        assert vertex.count == np.isfinite(range_m[::2, ::2]).sum()  # every 2nd row, column
    assert sorted(p.name for p in out.iterdir() if p.suffix == ".ply") == ["hall.ply", "yard.ply"]


def test_the_backend_decision_is_printed_once(
    weights_dir, image_dir, tmp_path, capsys, monkeypatch
):
    """Once per run, on stdout with the report; not again on stderr as a progress line."""
    monkeypatch.setattr("dap_core.progress._said", set())  # as in a fresh process
    argv = ["predict", str(image_dir), "--weights", str(weights_dir), "--out", str(tmp_path)]
    assert main([*argv, "--backend", "torch", "--input-size", "64x128", "--no-ply"]) == 0
    captured = capsys.readouterr()
    decision = Predictor(weights_dir, backend="torch", input_size=FIXTURE_SIZE).describe()
    assert (captured.out + captured.err).count(decision) == 1, captured
    assert f"backend: {decision}" in captured.out


def test_predict_runs_an_onnx_file_on_onnxruntime(
    tmp_path_factory, official_fixtures, image_dir, tmp_path, capsys
):
    onnx_path = fixture_onnx_path(tmp_path_factory, official_fixtures)
    out = tmp_path / "out"
    argv = ["predict", str(image_dir / "hall.png"), "--weights", str(onnx_path), "--out", str(out)]
    assert main([*argv, "--no-ply", "--cache-dir", str(tmp_path / "cache")]) == 0
    assert "backend: onnxruntime" in capsys.readouterr().out
    assert (out / "hall_range.npy").is_file() and not (out / "hall.ply").exists()


def test_export_command_passes_its_options(
    weights_dir, tmp_path, monkeypatch, capsys, tmp_path_factory, official_fixtures
):
    import dap_core.export.onnx as onnx_export

    calls = {}
    exported = fixture_onnx_path(tmp_path_factory, official_fixtures)

    def fake_export(model, path, **kwargs):  # the real export is covered by test_export_onnx
        calls.update(kwargs, path=path, embed_dim=model.config.embed_dim)
        return read_onnx_info(exported)

    monkeypatch.setattr(onnx_export, "export_onnx", fake_export)
    out = tmp_path / "m.onnx"
    argv = ["export", "onnx", "--weights", str(weights_dir), "--out", str(out)]
    argv += ["--input-size", "64x128", "--masks", "100", "--dynamic-batch", "--opset", "20"]
    assert main(argv) == 0
    assert calls["input_size"] == (64, 128) and calls["mask_thresholds"] == (100,)
    assert calls["dynamic_batch"] and calls["opset"] == 20 and calls["embed_dim"] == 96
    assert "onnx.checker passed" in capsys.readouterr().out


def test_build_engine_without_tensorrt_is_one_clear_line(
    tmp_path_factory, official_fixtures, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "tensorrt", None)
    onnx_path = fixture_onnx_path(tmp_path_factory, official_fixtures)
    assert main(["build-engine", str(onnx_path)]) == 1
    err = capsys.readouterr().err
    assert err.startswith("dap build-engine: error: TensorRT is not installed")


def test_bad_paths_and_sizes_are_reported(weights_dir, tmp_path, capsys):
    argv = ["predict", str(tmp_path / "missing"), "--weights", str(weights_dir)]
    assert main([*argv, "--out", str(tmp_path / "o")]) == 1
    assert "no such image or directory" in capsys.readouterr().err
    (tmp_path / "img").mkdir()
    cv2.imwrite(str(tmp_path / "img" / "a.png"), np.zeros((8, 16, 3), np.uint8))
    argv = ["predict", str(tmp_path / "img"), "--weights", str(weights_dir), "--out", "o"]
    assert main([*argv, "--input-size", "64by128"]) == 1
    assert "HEIGHTxWIDTH" in capsys.readouterr().err


def _narrow(tmp_path, name: str):
    """A shipped calibration with 170° lenses: a band around ±90° longitude is nobody's."""
    from pathlib import Path

    shipped = Path(__file__).resolve().parents[1] / "config" / "fisheye" / name
    path = tmp_path / name
    path.write_text(shipped.read_text().replace("fov_deg: 195.0", "fov_deg: 170.0"))
    return path


@pytest.mark.parametrize("layout", ["side_by_side", "two_images"])
def test_predict_takes_dual_fisheye_frames_with_nan_where_no_lens_sees(
    weights_dir, tmp_path, capsys, layout
):
    from dap_core.fisheye import FisheyeRemapper, erp_to_fisheye, load_calibration

    name = "insta360_side_by_side.yaml" if layout == "side_by_side" else "x5_two_topics.yaml"
    calibration_path = _narrow(tmp_path, name)
    size = (384, 192) if layout == "side_by_side" else (216, 216)
    calibration = load_calibration(calibration_path).for_image(*size)
    rng = np.random.default_rng(1)
    erp = rng.integers(0, 256, (128, 256, 3), np.uint8)
    views = erp_to_fisheye(erp, calibration)
    files = []
    for k, view in enumerate(views):
        files.append(tmp_path / f"lens{k}.png")
        cv2.imwrite(str(files[-1]), cv2.cvtColor(view, cv2.COLOR_RGB2BGR))
    out = tmp_path / "out"
    argv = ["predict", str(files[0]), "--weights", str(weights_dir), "--out", str(out)]
    argv += ["--backend", "torch", "--input-size", "64x128", "--ply-stride", "2"]
    argv += ["--fisheye", str(calibration_path), "--fisheye-height", "48"]
    if layout == "two_images":
        argv += ["--lens1", str(files[1])]
    assert main(argv) == 0, capsys.readouterr().err
    range_m = np.load(out / "lens0_range.npy")
    assert range_m.shape == (48, 96)
    unseen = FisheyeRemapper(calibration, 48, 96).unseen
    assert unseen.any() and not unseen.all()
    np.testing.assert_array_equal(np.isnan(range_m), unseen)  # NaN exactly where nobody sees
    mm = cv2.imread(str(out / "lens0_range_mm.png"), cv2.IMREAD_UNCHANGED)
    assert (mm[unseen] == 0).all() and (mm[~unseen] > 0).all()  # 0 = invalid
    mask = cv2.imread(str(out / "lens0_within_100m.png"), cv2.IMREAD_UNCHANGED)
    assert (mask[unseen] == 0).all()
    vertex = PlyData.read(str(out / "lens0.ply"))["vertex"]
    assert vertex.count == np.isfinite(range_m[::2, ::2]).sum()


def test_predict_fisheye_refuses_inconsistent_inputs_in_one_line(weights_dir, tmp_path, capsys):
    side = _narrow(tmp_path, "insta360_side_by_side.yaml")
    two = _narrow(tmp_path, "x5_two_topics.yaml")
    image = tmp_path / "frame.png"
    cv2.imwrite(str(image), np.zeros((100, 300, 3), np.uint8))  # 3:1, neither layout's aspect
    base = ["predict", str(image), "--weights", str(weights_dir), "--out", str(tmp_path / "o")]
    cases = [
        (["--fisheye", str(two)], "is a two_images calibration: give lens 0's image"),
        (["--fisheye", str(side), "--lens1", str(image)], "--lens1 needs a two_images"),
        (["--lens1", str(image)], "--lens1 is lens 1's image"),
        (["--fisheye", str(tmp_path / "none.yaml")], "none.yaml: cannot read"),
        (["--fisheye", str(side)], "does not have the calibration's aspect"),
    ]
    for extra, message in cases:
        assert main([*base, "--backend", "torch", *extra]) == 1
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, (extra, err)
        assert str(image) in err or "none.yaml" in err or "--lens1" in err
