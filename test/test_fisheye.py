"""Dual-fisheye input: calibration files, lens models, ERP remapping against the simulator.

The simulated camera renders the same scene as an ERP and as dual-fisheye lens images
(dap_core.fisheye.erp_to_fisheye of a finer render); the remapper must give back the ERP.
Geometric error is measured on a panorama that holds its own rays (so every remapped pixel
says where it came from), in degrees and ERP pixels, at the seam (where both lenses see) and
away from it; the range of the shipped model from fisheye input is compared with ERP input.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_ros_camera_sim import _sim_settings

from dap_core.fisheye import (
    CalibrationError,
    FisheyeRemapper,
    erp_to_fisheye,
    load_calibration,
)
from dap_core.geometry import fisheye_project, fisheye_unproject, pixel_rays, rpy_to_matrix

REPO = Path(__file__).resolve().parents[1]
SIDE_BY_SIDE = REPO / "config" / "fisheye" / "insta360_side_by_side.yaml"
TWO_IMAGES = REPO / "config" / "fisheye" / "x5_two_topics.yaml"
H, W = 128, 256


def _rays(height: int = H, width: int = W) -> np.ndarray:
    return pixel_rays(height, width, dtype=torch.float64).numpy()


@pytest.mark.parametrize(
    ("model", "k"),
    [("equidistant", ()), ("equisolid", ()), ("kannala_brandt", (0.08, -0.028, 0.0076, -0.001))],
)
def test_lens_models_round_trip_and_follow_their_formula(model, k):
    rotation = rpy_to_matrix(0.1, -0.2, 2.0)
    rays = _rays(32, 64).reshape(-1, 3)
    pixels, theta = fisheye_project(rays, rotation, (300.0, 290.0), 250.0, model, k)
    seen = theta < math.radians(100.0)
    back, _ = fisheye_unproject(pixels[seen], rotation, (300.0, 290.0), 250.0, model, k)
    assert np.allclose(back, rays[seen], atol=1e-9)
    r = np.hypot(pixels[..., 0] - 300.0, pixels[..., 1] - 290.0)
    expected = {
        "equidistant": 250.0 * theta,
        "equisolid": 2 * 250.0 * np.sin(theta / 2),
        "kannala_brandt": 250.0
        * theta
        * (1 + sum(c * theta ** (2 * i + 2) for i, c in enumerate(k))),
    }[model]
    assert np.allclose(r[seen], expected[seen], atol=1e-9)  # within the lens's field


def test_lens_axes_front_centre_image_right_is_panorama_right():
    lens = load_calibration(TWO_IMAGES).lenses[0]
    centre, theta = lens.project(np.array([1.0, 0.0, 0.0]))
    assert np.allclose(centre, lens.centre) and theta == pytest.approx(0.0)
    right, _ = lens.project(np.array([1.0, -0.1, 0.0]))  # −y is to the right of +x
    up, _ = lens.project(np.array([1.0, 0.0, 0.1]))
    assert right[0] > lens.centre[0] and up[1] < lens.centre[1]  # image y grows downwards
    rear = load_calibration(TWO_IMAGES).lenses[1]
    assert rear.project(np.array([-1.0, 0.0, 0.0]))[1] == pytest.approx(0.0)


@pytest.mark.parametrize("path", [SIDE_BY_SIDE, TWO_IMAGES], ids=["side_by_side", "two_images"])
def test_shipped_calibrations_load_state_their_source_and_cover_the_sphere(path):
    calibration = load_calibration(path)
    assert "commit" in calibration.source and len(calibration.source) > 80
    remapper = FisheyeRemapper(calibration, H, W)
    assert not remapper.unseen.any()  # 195° lenses back to back: every direction is seen
    assert 0.05 < remapper.overlap.size / (H * W) < 0.4


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("layout: side_by_side\n", "missing 'source'"),
        ("source: x\nlayout: round\n", "layout 'round'"),
        ("source: x\nlayout: two_images\nimage_size: [64, 64]\nlenses: []\n", "exactly two"),
        (
            "source: x\nlayout: two_images\nimage_size: [64, 64]\nlenses:\n"
            "  - {centre: [32, 32], focal: 20, radius: 30, fov_deg: 190}\n"
            "  - {centre: [32, 32], focal: 20, fov_deg: 190}\n",
            r"lenses\[0\]: give exactly one of 'focal' and 'radius'",
        ),
        (
            "source: x\nlayout: two_images\nimage_size: [64, 64]\nlenses:\n"
            "  - {centre: [32, 32], focal: 20, fov_deg: 190, model: pinhole}\n"
            "  - {centre: [32, 32], focal: 20, fov_deg: 190}\n",
            "model: 'pinhole' is not one of",
        ),
        ("source: x\n: [\n", "not valid YAML"),
    ],
)
def test_a_bad_calibration_is_refused_naming_file_and_key(tmp_path, text, message):
    path = tmp_path / "calib.yaml"
    path.write_text(text)
    with pytest.raises(CalibrationError, match=message) as caught:
        load_calibration(path)
    assert str(path) in str(caught.value)


def test_calibration_scales_to_other_driver_resolutions_and_refuses_another_aspect():
    calibration = load_calibration(SIDE_BY_SIDE)
    big = calibration.for_image(3840, 1920)
    assert big.lens_size == (1920, 1920)
    ray = np.array([0.3, 0.5, 0.2])
    small_px = calibration.lenses[0].project(ray)[0]
    big_px = big.lenses[0].project(ray)[0]
    assert np.allclose((big_px + 0.5), (small_px + 0.5) * (3840 / 2304))
    with pytest.raises(CalibrationError, match="aspect"):
        calibration.for_image(1920, 1080)


def _angular_error_deg(calibration_seen, calibration_used, height=2 * H, width=2 * W):
    """Remap lens images of a ray panorama (made with `calibration_seen`) back to ERP with
    `calibration_used`; angle between each ERP pixel's ray and the ray it received."""
    rays = _rays(height, width).astype(np.float32)
    views = erp_to_fisheye(rays, calibration_seen)
    remapper = FisheyeRemapper(calibration_used, height, width)
    back = remapper.remap(*views)
    back /= np.linalg.norm(back, axis=-1, keepdims=True)
    error = np.degrees(np.arccos(np.clip((back * rays).sum(-1), -1.0, 1.0)))
    seam = np.zeros(height * width, bool)
    seam[remapper.overlap] = True
    seam = seam.reshape(height, width) & ~remapper.unseen
    return error, seam, ~seam & ~remapper.unseen


@pytest.mark.parametrize("path", [SIDE_BY_SIDE, TWO_IMAGES], ids=["side_by_side", "two_images"])
def test_erp_from_fisheye_matches_the_simulator_erp_in_degrees_and_pixels(path):
    calibration = load_calibration(path)
    error, seam, away = _angular_error_deg(calibration, calibration)
    px_per_deg = 2 * W / 360.0
    for name, where in (("seam", seam), ("away", away)):
        mean, worst = error[where].mean(), error[where].max()
        print(
            f"{path.name} {name}: mean {mean:.4f} deg ({mean * px_per_deg:.4f} px),"
            f" max {worst:.4f} deg ({worst * px_per_deg:.4f} px)"
        )
        # Two bilinear interpolations of unit rays and 1/32-pixel fixed-point maps: well
        # under a tenth of an ERP pixel (1 px = 0.70° here).
        assert mean * px_per_deg < 0.02 and worst * px_per_deg < 0.15


def test_a_wrong_lens_rotation_shows_as_a_seam_error():
    """The same check catches a bad calibration: the rear lens truly turned 1° in pitch."""
    nominal = load_calibration(TWO_IMAGES)
    rear = nominal.lenses[1]
    turned = type(nominal)(
        nominal.layout,
        nominal.lens_size,
        (
            nominal.lenses[0],
            type(rear)(
                **{
                    **rear.__dict__,
                    "rotation": rear.rotation @ rpy_to_matrix(0.0, math.radians(1.0), 0.0),
                }
            ),
        ),
        nominal.blend,
        nominal.source,
    )
    error, seam, _ = _angular_error_deg(turned, nominal)
    assert error[seam].mean() > 0.3  # degrees: the cross-fade mixes two disagreeing lenses


def test_pixels_no_lens_sees_are_marked_and_black():
    narrow = load_calibration(TWO_IMAGES)
    lenses = tuple(
        type(lens)(**{**lens.__dict__, "fov": math.radians(170.0)}) for lens in narrow.lenses
    )
    narrow = type(narrow)(narrow.layout, narrow.lens_size, lenses, narrow.blend, narrow.source)
    remapper = FisheyeRemapper(narrow, H, W)
    lon = math.pi * (1.0 - 2.0 * (np.arange(W) + 0.5) / W)
    off_side = np.abs(np.abs(lon) - math.pi / 2)  # 85° lenses: ±90° ± 5° is nobody's
    row = remapper.unseen[H // 2]  # just below the equator
    assert row[off_side < math.radians(4.5)].all() and not row[off_side > math.radians(5.5)].any()
    views = tuple(np.full((*narrow.lens_size[::-1], 3), 200, np.uint8) for _ in range(2))
    erp = remapper.remap(*views)
    assert (erp[remapper.unseen] == 0).all() and (erp[~remapper.unseen] == 200).all()


def test_the_cross_fade_is_blend_deg_wide_and_centred_on_the_seam():
    """Back-to-back 195° lenses, blend 8°: along the equator the faded pixels lie within 4°
    of the seam at ±90° longitude (not over the whole 15° where both lenses see), and the
    primary lens's weight falls linearly to 0.5 on the seam."""
    calibration = load_calibration(TWO_IMAGES)
    remapper = FisheyeRemapper(calibration, H, W)
    faded = np.zeros(H * W, bool)
    faded[remapper.overlap] = True
    share = np.ones(H * W, np.float32)
    share[remapper.overlap] = remapper.primary_share
    row = H // 2  # latitude -0.7°: the seam is a meridian there, ±90° longitude
    lon = np.degrees(math.pi * (1.0 - 2.0 * (np.arange(W) + 0.5) / W))
    off_seam = np.abs(np.abs(lon) - 90.0)  # degrees from the seam (at the equator)
    half = math.degrees(calibration.blend) / 2
    step = 360.0 / W  # a pixel's longitude span
    assert faded.reshape(H, W)[row][off_seam < half - step].all()
    assert not faded.reshape(H, W)[row][off_seam > half + step].any()
    inside = off_seam < half - step
    expected = 0.5 + off_seam[inside] / (2 * half)  # linear in the angle from the seam
    # The row lies 0.7° off the equator, where the seam is 90° ± 0.01° (back-to-back lenses
    # share their optical axis, so the seam is that axis's great circle: lon = ±90° exactly).
    assert np.allclose(share.reshape(H, W)[row][inside], expected, atol=0.01)


def test_the_fixed_point_fade_is_within_one_and_a_half_levels_of_the_exact_blend():
    """uint8 frames are faded with weights in 1/255 steps and two roundings (see
    FisheyeRemapper): at most 0.5 + 0.5 + 0.5 levels from the float blend, exact elsewhere."""
    calibration = load_calibration(TWO_IMAGES)
    remapper = FisheyeRemapper(calibration, H, W)
    rng = np.random.default_rng(3)
    lens0, lens1 = (
        rng.integers(0, 256, (*calibration.lens_size[::-1], 3), np.uint8) for _ in range(2)
    )
    fixed = remapper.remap(lens0, lens1).astype(np.float64)
    exact = remapper.remap(lens0.astype(np.float32), lens1.astype(np.float32))
    faded = np.zeros(H * W, bool)
    faded[remapper.overlap] = True
    faded = faded.reshape(H, W)
    # Both paths read the same fixed-point maps (positions in 1/32 pixel); OpenCV's uint8
    # bilinear rounds its result once (0.5 level) where the float32 one does not.
    assert np.abs(fixed[~faded] - exact[~faded]).max() <= 0.5 + 1e-3
    gap = np.abs(fixed[faded] - exact[faded])
    assert gap.max() <= 1.5 + 0.5 + 1e-3, gap.max()  # the fade's 1.5, the samples' 0.5


def test_both_layouts_give_the_same_erp_from_the_same_lens_images():
    side = load_calibration(SIDE_BY_SIDE)
    two = type(side)("two_images", side.lens_size, side.lenses, side.blend, side.source)
    rng = np.random.default_rng(3)
    lens0, lens1 = (rng.integers(0, 256, (*side.lens_size[::-1], 3), np.uint8) for _ in range(2))
    joined = np.concatenate([lens0, lens1], axis=1)
    a = FisheyeRemapper(side, H, W).remap(joined)
    b = FisheyeRemapper(two, H, W).remap(lens0, lens1)
    assert np.array_equal(a, b)
    with pytest.raises(ValueError, match="calibration expects"):
        FisheyeRemapper(two, H, W).remap(lens0[:-1], lens1)


@pytest.fixture(scope="module")
def sim_frames():
    """Simulated frames of one indoor and one outdoor scene as ERP and as dual fisheye."""
    from dap_core.data.synthetic import make_scene
    from dap_ros.camera_sim import render_frame

    calibration = load_calibration(TWO_IMAGES).for_image(512, 512)
    settings = _sim_settings(width=512)
    frames = [
        render_frame(make_scene(seed, kind), 0.0, settings, seed, calibration)
        for seed, kind in ((4, "indoor"), (5, "outdoor"))
    ]
    return calibration, frames


def test_simulated_fisheye_frames_remap_to_the_simulated_erp(sim_frames):
    calibration, frames = sim_frames
    remapper = FisheyeRemapper(calibration, 256, 512)
    for frame in frames:
        erp = remapper.remap(*frame.fisheye).astype(np.float32)
        diff = np.abs(erp - frame.rgb.astype(np.float32)).mean(axis=-1)
        seam = np.zeros(diff.size, bool)
        seam[remapper.overlap] = True
        seam = seam.reshape(diff.shape)
        # Both are resamplings of one finer render (bilinear twice vs once): textures blur a
        # little; mean colour error of a few levels out of 255, the same at the seam.
        assert diff[~seam].mean() < 8.0 and diff[seam].mean() < 8.0


def test_range_from_fisheye_is_as_good_as_from_erp(sim_frames):
    """The shipped model on both inputs of the same frames: AbsRel within 0.01."""
    from dap_core.metrics import depth_metrics
    from dap_core.runtime import Predictor

    calibration, frames = sim_frames
    predictor = Predictor(REPO / "weights" / "dap_small", backend="torch", threads=1)
    remapper = FisheyeRemapper(calibration, 256, 512)
    for frame in frames:
        from_erp = predictor.predict(frame.rgb).range_m.copy()
        from_fisheye = predictor.predict(remapper.remap(*frame.fisheye)).range_m.copy()
        erp_rel = depth_metrics(from_erp, frame.range_m)["abs_rel"]
        fisheye_rel = depth_metrics(from_fisheye, frame.range_m)["abs_rel"]
        print(f"AbsRel from ERP {erp_rel:.4f}, from fisheye {fisheye_rel:.4f}")
        assert abs(fisheye_rel - erp_rel) < 0.01


def test_fisheye_preview_writes_the_erp_and_refuses_bad_input(tmp_path, capsys):
    import cv2

    from dap_core.cli import main

    calibration = load_calibration(SIDE_BY_SIDE).for_image(256, 128)
    rays = _rays(64, 128).astype(np.float32)
    image = ((erp_to_fisheye(rays, calibration)[0] + 1.0) * 127.0).astype(np.uint8)
    source = tmp_path / "sbs.png"
    cv2.imwrite(str(source), image)
    out = tmp_path / "preview.png"
    args = ["fisheye-preview", "--calibration", str(SIDE_BY_SIDE), str(source), "--out", str(out)]
    assert main([*args, "--height", "64"]) == 0
    preview = cv2.imread(str(out))
    assert preview.shape == (64, 128, 3)
    yellow = (preview == (0, 255, 255)).all(axis=-1)  # BGR: the equal-weight line
    # Back-to-back lenses: the seam is the meridian pair ±90°, crossed by every row twice.
    assert all(np.count_nonzero(yellow[row]) >= 2 for row in range(64))
    assert "100.0% of the sphere seen" in capsys.readouterr().out
    assert main([*args[:2], str(tmp_path / "missing.yaml"), *args[3:]]) == 1
    assert "cannot read" in capsys.readouterr().err
