"""Dataset readers on tiny files written here in each dataset's real on-disk format."""

from __future__ import annotations

import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from dap_core.data.datasets import (
    Dap2mFolder,
    DatasetReadError,
    Deep360,
    HiddenLabels,
    Matterport3D,
    Stanford2D3D,
    Structured3D,
    UnlabeledFolder,
    build_dataset,
    is_skipped,
)

H, W = 8, 16


def write_rgb(path: Path, rgb: np.ndarray | None = None) -> np.ndarray:
    path.parent.mkdir(parents=True, exist_ok=True)
    if rgb is None:
        rgb = np.random.default_rng(len(str(path))).integers(0, 256, (H, W, 3), dtype=np.uint8)
    assert cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))
    return rgb


def write_png16(path: Path, raw: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    assert cv2.imwrite(str(path), raw.astype(np.uint16))


def check_item(item, rgb: np.ndarray | None = None) -> None:
    assert item["rgb"].shape == (3, H, W) and item["rgb"].dtype == torch.float32
    assert item["range_m"].shape == (1, H, W) and item["valid"].dtype == torch.bool
    if rgb is not None:
        np.testing.assert_allclose(item["rgb"].permute(1, 2, 0).numpy() * 255, rgb, atol=1e-3)


def test_structured3d_reads_millimetre_range_and_marks_zero_missing(tmp_path):
    room = tmp_path / "scene_00000/2D_rendering/485142/panorama/full"
    rgb = write_rgb(room / "rgb_rawlight.png")
    raw = np.full((H, W), 2500, np.uint16)
    raw[0, 0] = 0
    raw[3, 5] = 12345
    write_png16(room / "depth.png", raw)
    write_rgb(room / "rgb_coldlight.png")  # another lighting: must not become a second sample
    ds = Structured3D(tmp_path)
    assert len(ds) == 1
    item = ds[0]
    check_item(item, rgb)
    assert item["range_m"][0, 3, 5] == pytest.approx(12.345)
    assert item["range_m"][0, 1, 1] == pytest.approx(2.5)
    assert not item["valid"][0, 0, 0] and torch.isnan(item["range_m"][0, 0, 0])
    assert item["scene"] == "indoor" and item["labeled"]


def test_stanford2d3d_divides_by_512_and_drops_65535(tmp_path):
    pano = tmp_path / "area_5a/pano"
    rgb = write_rgb(pano / "rgb/camera_abc_room_1_frame_equirectangular_domain_rgb.png")
    raw = np.full((H, W), 1024, np.uint16)  # 2.0 m
    raw[2, 2] = 65535  # missing, official 127.998 m
    raw[4, 4] = 51200  # 100 m
    write_png16(pano / "depth/camera_abc_room_1_frame_equirectangular_domain_depth.png", raw)
    item = Stanford2D3D(tmp_path)[0]
    check_item(item, rgb)
    assert item["range_m"][0, 0, 0] == 2.0 and item["range_m"][0, 4, 4] == 100.0
    assert not item["valid"][0, 2, 2]
    assert int(item["valid"].sum()) == H * W - 1


def test_matterport3d_reads_exr_float_metres(tmp_path):
    import OpenEXR

    rgb = write_rgb(tmp_path / "room/0_abc_emission_center_0.png")
    depth = np.linspace(0.5, 30.0, H * W, dtype=np.float32).reshape(H, W)
    depth[1, 1] = 0.0  # missing
    header = {"compression": OpenEXR.ZIP_COMPRESSION, "type": OpenEXR.scanlineimage}
    channels = {"R": depth, "G": depth, "B": depth}
    with OpenEXR.File(header, channels) as exr:
        exr.write(str(tmp_path / "room/0_abc_depth_center_0.exr"))
    item = Matterport3D(tmp_path)[0]
    check_item(item, rgb)
    np.testing.assert_array_equal(item["range_m"][0, 2].numpy(), depth[2])
    assert not item["valid"][0, 1, 1]


def test_deep360_resamples_cassini_to_erp(tmp_path):
    # Cassini images are tall: Hc x Wc = W x H so that the ERP is H x W.
    cas_rgb = np.full((W, H, 3), 200, np.uint8)
    cas_rgb[..., 1] = 7
    write_rgb(tmp_path / "ep1_500frames/testing/rgb/000001_12_rgb1.png", cas_rgb)
    cas_depth = np.full((W, H), 42.5, np.float32)
    (tmp_path / "ep1_500frames/testing/depth").mkdir(parents=True)
    np.savez(tmp_path / "ep1_500frames/testing/depth/000001_12_depth.npz", cas_depth)
    item = Deep360(tmp_path, far_as_sky_m=1000.0)[0]
    check_item(item)
    # A constant Cassini map stays constant in ERP (border padding, no black seams).
    assert torch.allclose(item["range_m"], torch.tensor(42.5))
    # RGB is truncated to uint8 after resampling, as the official reader does: 6.9999995 -> 6.
    green = (item["rgb"][1] * 255).round()
    assert set(green.unique().tolist()) <= {6.0, 7.0}
    assert item["scene"] == "outdoor"


def test_deep360_far_values_become_sky(tmp_path):
    write_rgb(tmp_path / "rgb/a_rgb1.png", np.zeros((W, H, 3), np.uint8))
    (tmp_path / "depth").mkdir()
    np.savez(tmp_path / "depth/a_depth.npz", np.full((W, H), 1500.0, np.float32))
    item = Deep360(tmp_path, far_as_sky_m=1000.0)[0]
    assert torch.isinf(item["range_m"]).all() and item["valid"].all()


def test_dap2m_pairs_erp_distance_and_reads_metadata(tmp_path):
    write_rgb(tmp_path / "rgb_0001.png")
    np.save(tmp_path / "erp_distance_0001.npy", np.full((H, W), 3.0, np.float32))
    write_rgb(tmp_path / "street.jpg")
    np.save(tmp_path / "street_erp_distance.npy", np.full((1, H, W), 60.0, np.float32))
    write_rgb(tmp_path / "orphan.png")  # no range file: skipped and counted
    (tmp_path / "metadata.json").write_text(json.dumps({"street.jpg": {"scene": "outdoor"}}))
    ds = Dap2mFolder(tmp_path)
    assert len(ds) == 2 and len(ds.skipped) == 1 and "orphan.png" in ds.skipped[0]
    items = {ds[i]["name"]: ds[i] for i in range(2)}
    assert items["rgb_0001.png"]["range_m"][0, 0, 0] == 3.0
    assert items["street.jpg"]["range_m"][0, 0, 0] == 60.0
    assert items["street.jpg"]["scene"] == "outdoor" and items["rgb_0001.png"]["scene"] == ""


def test_unlabeled_folder_has_no_labels_and_scene_from_csv(tmp_path):
    write_rgb(tmp_path / "a/x.png")
    write_rgb(tmp_path / "b/y.jpg")
    (tmp_path / "metadata.csv").write_text("path,scene\na/x.png,indoor\nb/y.jpg,outdoor\n")
    ds = UnlabeledFolder(tmp_path, size=(4, 8))
    item = ds[1]
    assert item["rgb"].shape == (3, 4, 8) and not item["labeled"]
    assert torch.isnan(item["range_m"]).all() and not item["valid"].any()
    assert [ds[i]["scene"] for i in range(2)] == ["indoor", "outdoor"]


def test_bad_metadata_scene_is_a_clear_error(tmp_path):
    write_rgb(tmp_path / "x.png")
    (tmp_path / "metadata.json").write_text(json.dumps({"x.png": "underwater"}))
    with pytest.raises(DatasetReadError, match="underwater"):
        UnlabeledFolder(tmp_path)


def test_resize_uses_nearest_for_range(tmp_path):
    pano = tmp_path / "pano"
    write_rgb(pano / "rgb/a_rgb.png")
    raw = np.tile(np.array([512, 1024], np.uint16), (H, W // 2))
    write_png16(pano / "depth/a_depth.png", raw)
    item = Stanford2D3D(tmp_path, size=(4, 8))[0]
    assert set(item["range_m"].unique().tolist()) <= {1.0, 2.0}  # no blended 1.5 m


def test_missing_depth_file_is_named_when_the_dataset_is_built(tmp_path):
    write_rgb(tmp_path / "pano/rgb/a_rgb.png")
    with pytest.raises(DatasetReadError, match=r"a_depth\.png"):
        Stanford2D3D(tmp_path)
    write_rgb(tmp_path / "pano/rgb/b_rgb.png")
    write_png16(tmp_path / "pano/depth/b_depth.png", np.ones((H, W)))
    ds = Stanford2D3D(tmp_path, on_error="skip")
    assert len(ds) == 1 and "a_depth.png" in ds.skipped[0]


def test_corrupt_file_raises_naming_it_or_is_skipped_and_counted(tmp_path):
    for stem in ("a", "b"):
        write_rgb(tmp_path / f"pano/rgb/{stem}_rgb.png")
        write_png16(tmp_path / f"pano/depth/{stem}_depth.png", np.full((H, W), 512))
    (tmp_path / "pano/depth/a_depth.png").write_bytes(b"\x89PNG truncated")
    with pytest.raises(DatasetReadError, match=r"a_depth\.png"):
        Stanford2D3D(tmp_path)[0]
    ds = Stanford2D3D(tmp_path, on_error="skip")
    item = ds[0]  # a skipped item naming the file, never another sample in its place
    assert is_skipped(item) and "a_depth.png" in item["skipped"]
    assert ds[1]["name"].endswith("b_rgb.png")


def test_corrupt_exr_is_named(tmp_path):
    write_rgb(tmp_path / "x_emission_center_0.png")
    (tmp_path / "x_depth_center_0.exr").write_bytes(b"not an exr")
    with pytest.raises(DatasetReadError, match=r"x_depth_center_0\.exr"):
        Matterport3D(tmp_path)[0]


def test_list_file_and_factory(tmp_path):
    write_rgb(tmp_path / "imgs/one.png")
    write_png16(tmp_path / "gt/one.png", np.full((H, W), 2048))
    (tmp_path / "test.txt").write_text("# rgb depth\nimgs/one.png gt/one.png\n")
    spec = {"type": "stanford2d3d", "root": str(tmp_path), "list_file": str(tmp_path / "test.txt")}
    ds = build_dataset({**spec, "size": [4, 8]})
    assert ds[0]["range_m"][0, 0, 0] == 4.0 and ds[0]["rgb"].shape == (3, 4, 8)
    hidden = build_dataset({**spec, "hide_labels": True})
    assert isinstance(hidden, HiddenLabels) and not hidden[0]["valid"].any()
    assert hidden.ground_truth(0)["range_m"][0, 0, 0] == 4.0
    with pytest.raises(ValueError, match="unknown dataset type"):
        build_dataset({"type": "kitti"})
    with pytest.raises(ValueError, match="bad options"):
        build_dataset({"type": "stanford2d3d", "root": str(tmp_path), "colour": 1})
    with pytest.raises(DatasetReadError, match="not a directory"):
        build_dataset({"type": "stanford2d3d", "root": str(tmp_path / "nope")})
