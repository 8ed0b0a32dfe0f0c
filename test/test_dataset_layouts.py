"""Each official dataset layout, built here with the exact official names and known depths.

Every fixture stores a depth whose metres are known (e.g. 2.5 m as uint16 10000 / 4000), so a
wrong unit or a wrong pairing shows as a wrong number, not only as a missing file.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dap_core.cli import main
from dap_core.commands.eval import parse_dataset
from dap_core.data.datasets import (
    Dap2mFolder,
    DatasetReadError,
    Deep360,
    Matterport3D,
    Stanford2D3D,
    build_dataset,
)

H, W = 8, 16
CAMERA = "camera_029bb1440fca47e2886a88559bbf8d00_hallway_1_frame_equirectangular_domain"
SCAN, PANO = "17DRP5sb8fy", "df211c2c55f94b87a717ce1469577456"


def write_rgb(path: Path, shape=(H, W)) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = np.random.default_rng(len(path.name)).integers(0, 256, (*shape, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), rgb)


def write_png16(path: Path, raw) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), np.asarray(raw, np.uint16))


def write_npz(path: Path, metres: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, metres.astype(np.float32))


def ranges(item) -> torch.Tensor:
    return item["range_m"][0]


# ------------------------------------------------------------------------------- Deep360


def deep360(root: Path) -> None:
    """ep1_500frames/testing: two frames, six pairs x two cameras each, one depth per frame."""
    base = root / "ep1_500frames" / "testing"
    for frame, metres in (("000000", 12.5), ("000001", 30.0)):
        for pair in ("12", "13", "14", "23", "24", "34"):
            for k in (1, 2):
                write_rgb(base / "rgb" / f"{frame}_{pair}_rgb{k}.png", shape=(W, H))  # Cassini
        write_npz(base / "depth" / f"{frame}_depth.npz", np.full((W, H), metres))


def test_deep360_official_layout_one_sample_per_frame(tmp_path):
    deep360(tmp_path)
    ds = Deep360(tmp_path)
    assert [r.rgb.name for r in ds.records] == ["000000_12_rgb1.png", "000001_12_rgb1.png"]
    assert [r.depth.name for r in ds.records] == ["000000_depth.npz", "000001_depth.npz"]
    assert torch.allclose(ranges(ds[0]), torch.tensor(12.5))
    assert torch.allclose(ranges(ds[1]), torch.tensor(30.0))


def test_deep360_discovery_picks_what_the_official_list_names(tmp_path):
    """Official list lines: `/epN/testing/rgb/<frame>_12_rgb1.png .../<frame>_depth.npz`."""
    deep360(tmp_path)
    listing = tmp_path / "deep360_test_final.txt"
    listing.write_text(
        "".join(
            f"/ep1_500frames/testing/rgb/{frame}_12_rgb1.png "
            f"/ep1_500frames/testing/depth/{frame}_depth.npz\n"
            for frame in ("000000", "000001")
        )
    )
    listed = Deep360(tmp_path, list_file=listing).records
    discovered = Deep360(tmp_path).records
    assert [(r.rgb, r.depth) for r in discovered] == [(r.rgb, r.depth) for r in listed]


def test_deep360_official_list_with_leading_slash(tmp_path):
    deep360(tmp_path)
    listing = tmp_path / "deep360_test_final.txt"
    listing.write_text(
        "/ep1_500frames/testing/rgb/000001_12_rgb1.png "
        "/ep1_500frames/testing/depth/000001_depth.npz\n"
    )
    ds = Deep360(tmp_path, list_file=listing)
    assert len(ds) == 1 and ds.records[0].rgb.is_relative_to(tmp_path)
    assert torch.allclose(ranges(ds[0]), torch.tensor(30.0))


# --------------------------------------------------------------------------- Stanford2D3D


@pytest.mark.parametrize("rgb_dir", ["area_5a/pano/rgb", "area_5a/pano/rgb_", "area_5a/rgb_"])
def test_stanford2d3d_dataset_dap_and_unifuse_layouts(tmp_path, rgb_dir):
    write_rgb(tmp_path / rgb_dir / f"{CAMERA}_rgb.png")
    raw = np.full((H, W), 1024)  # 1024 / 512 = 2.0 m
    raw[0, 0] = 65535  # missing
    depth_dir = Path(rgb_dir).parent / "depth"
    write_png16(tmp_path / depth_dir / f"{CAMERA}_depth.png", raw)
    item = Stanford2D3D(tmp_path)[0]
    assert ranges(item)[1:, 1:].eq(2.0).all() and torch.isnan(ranges(item)[0, 0])


def test_stanford2d3d_unifuse_list_as_written(tmp_path):
    write_rgb(tmp_path / f"area_5a/rgb_/{CAMERA}_rgb.png")
    write_png16(tmp_path / f"area_5a/depth/{CAMERA}_depth.png", np.full((H, W), 2560))
    listing = tmp_path / "stanford2d3d_test.txt"
    listing.write_text(f"area_5a/rgb_/{CAMERA}_rgb.png area_5a/depth/{CAMERA}_depth.png\n")
    assert ranges(Stanford2D3D(tmp_path, list_file=listing)[0]).eq(5.0).all()


# --------------------------------------------------------------------------- Matterport3D


def test_matterport3d_unifuse_png_depth_is_divided_by_4000(tmp_path):
    write_rgb(tmp_path / SCAN / "pano_skybox_color" / f"{PANO}.jpg")
    raw = np.full((H, W), 10000)  # 2.5 m
    raw[0, 0] = 0  # missing
    write_png16(tmp_path / SCAN / "pano_depth" / f"{PANO}.png", raw)
    ds = Matterport3D(tmp_path)
    assert len(ds) == 1
    item = ds[0]
    assert ranges(item)[1:, 1:].eq(2.5).all() and torch.isnan(ranges(item)[0, 0])
    listing = tmp_path / "matterport3d_test.txt"
    listing.write_text(f"{SCAN}/pano_skybox_color/{PANO}.jpg {SCAN}/pano_depth/{PANO}.png\n")
    assert ranges(Matterport3D(tmp_path, list_file=listing)[0])[1:, 1:].eq(2.5).all()


# ---------------------------------------------------------------------- DAP-2M / Insta23k


def test_dap2m_official_layout(tmp_path):
    base = tmp_path / "raw_data_0630"
    for n, metres in ((7, 4.0), (12, 9.0)):
        write_rgb(base / "sfc_raw_images_panorama" / f"panorama_{n}.png")
        path = base / "sfc_distance_panorama_npy" / f"erp_distance_{n}.npy"
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.full((H, W), metres, np.float32))
    ds = Dap2mFolder(tmp_path)
    assert [r.depth.name for r in ds.records] == ["erp_distance_12.npy", "erp_distance_7.npy"]
    assert ranges(ds[0]).eq(9.0).all() and ranges(ds[1]).eq(4.0).all()


# -------------------------------------------------------------------- messages and the CLI


def test_no_samples_names_root_patterns_and_the_list_option(tmp_path):
    write_rgb(tmp_path / "somewhere" / "x.png")
    with pytest.raises(DatasetReadError) as caught:
        Stanford2D3D(tmp_path)
    message = str(caught.value)
    assert str(tmp_path) in message and "**/rgb_/*_rgb.png" in message
    assert "list_file" in message and "TYPE:ROOT:LIST" in message


def test_cli_dataset_with_a_list_file(tmp_path, monkeypatch):
    deep360(tmp_path)
    (tmp_path / "test.txt").write_text(
        "/ep1_500frames/testing/rgb/000000_12_rgb1.png "
        "/ep1_500frames/testing/depth/000000_depth.npz\n"
    )
    for given in (str(tmp_path / "test.txt"), "test.txt"):  # as given, or beside the root
        [(_, spec)] = parse_dataset(f"deep360:{tmp_path}:{given}", (H, W), None)
        assert spec["list_file"] == str(tmp_path / "test.txt")
        assert len(build_dataset(spec)) == 1


# ------------------------------------------------------------------ ground truth checks


def stanford_pair(root: Path, depth_shape, rgb_shape=(H, W)) -> None:
    write_rgb(root / f"pano/rgb/{CAMERA}_rgb.png", shape=rgb_shape)
    write_png16(root / f"pano/depth/{CAMERA}_depth.png", np.full(depth_shape, 1024))


@pytest.mark.parametrize("depth_shape", [(4, 4), (16, 8), (3, 6), (8, 15)])
def test_wrong_size_ground_truth_is_refused_naming_file_and_sizes(tmp_path, depth_shape):
    stanford_pair(tmp_path, depth_shape)
    with pytest.raises(DatasetReadError) as caught:
        Stanford2D3D(tmp_path)[0]
    message = str(caught.value)
    assert f"{CAMERA}_depth.png" in message
    assert f"{depth_shape[0]}x{depth_shape[1]}" in message and f"{H}x{W}" in message


@pytest.mark.parametrize("depth_shape", [(4, 8), (16, 32), (2, 4)])
def test_integer_scaled_panorama_ground_truth_is_resized(tmp_path, depth_shape):
    stanford_pair(tmp_path, depth_shape)
    assert ranges(Stanford2D3D(tmp_path)[0]).eq(2.0).all()


@pytest.mark.parametrize(
    "array, words",
    [(np.zeros((0, 0), np.float32), "shape (0, 0)"), (np.array(["a", "b"]), "dtype <U1")],
)
def test_empty_or_string_npy_depth_names_the_file(tmp_path, array, words):
    write_rgb(tmp_path / "rgb_0001.png")
    np.save(tmp_path / "erp_distance_0001.npy", array)
    with pytest.raises(DatasetReadError) as caught:
        Dap2mFolder(tmp_path)[0]
    assert "erp_distance_0001.npy" in str(caught.value) and words in str(caught.value)


def test_eval_cli_reports_a_bad_depth_in_one_line(tmp_path, capsys):
    write_rgb(tmp_path / "rgb_0001.png", shape=(32, 64))
    np.save(tmp_path / "erp_distance_0001.npy", np.zeros((0, 0), np.float32))
    argv = ["eval", "--dataset", f"dap2m:{tmp_path}", "--size", "32x64"]
    assert main(argv) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "erp_distance_0001.npy" in err[0]
