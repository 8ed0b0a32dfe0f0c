"""Consumer-camera degradations: only RGB changes, seeded, physically sensible pieces."""

from __future__ import annotations

import math

import pytest
import torch

from dap_core.data.camera_effects import CameraEffects, gaussian_blur_wrapped, jpeg_round_trip
from dap_core.geometry import pixel_rays, range_to_points


def _only(**effect) -> CameraEffects:
    """Effects that always apply but change nothing beyond `effect`'s settings (effect_p = 0
    switches every optional effect off)."""
    neutral = dict(p=1.0, effect_p=0.0, haze_p=0.0, exposure_ev=0.0, white_balance=0.0)
    return CameraEffects(**{**neutral, "gamma": (1.0, 1.0), **effect})


def _sample(height: int = 32, width: int = 64) -> dict:
    gen = torch.Generator().manual_seed(3)
    range_m = torch.rand(1, height, width, generator=gen) * 20 + 0.5
    range_m[:, :4] = math.inf  # a band of sky
    return {
        "rgb": torch.rand(3, height, width, generator=gen),
        "range_m": range_m,
        "valid": torch.ones(1, height, width, dtype=torch.bool),
    }


def test_only_rgb_changes_and_a_seed_reproduces_it():
    sample = _sample()
    effects = CameraEffects(p=1.0, effect_p=1.0, haze_p=1.0)
    a = effects(sample, torch.Generator().manual_seed(5))
    b = effects(sample, torch.Generator().manual_seed(5))
    c = effects(sample, torch.Generator().manual_seed(6))
    assert torch.equal(a["rgb"], b["rgb"]) and not torch.equal(a["rgb"], c["rgb"])
    assert a["range_m"] is sample["range_m"] and a["valid"] is sample["valid"]
    assert a["rgb"].shape == sample["rgb"].shape and a["rgb"].dtype == torch.float32
    assert float(a["rgb"].min()) >= 0.0 and float(a["rgb"].max()) <= 1.0
    assert not torch.equal(a["rgb"], sample["rgb"])
    assert CameraEffects(p=0.0)(sample, torch.Generator()) is sample
    photo = {**sample, "domain": "pseudo"}  # already a camera image: left alone
    assert effects(photo, torch.Generator().manual_seed(5)) is photo


def test_haze_turns_sky_into_the_haze_colour_and_leaves_near_pixels():
    sample = _sample()
    sample["range_m"][:, 20:] = 0.0  # at the lens: no haze
    haze_only = CameraEffects(
        p=1.0, effect_p=0.0, haze_p=1.0, exposure_ev=0.0, white_balance=0.0, gamma=(1.0, 1.0)
    )
    out = haze_only(sample, torch.Generator().manual_seed(0))["rgb"]
    sky = out[:, :4]
    colour = sky[:, 0, 0]
    assert torch.allclose(sky, colour.view(3, 1, 1).expand_as(sky), atol=1e-6)
    assert float(colour.min()) >= 0.6 * 0.95 - 1e-6 and float(colour.max()) <= 0.9 * 1.05 + 1e-6
    assert torch.allclose(out[:, 20:], sample["rgb"][:, 20:], atol=1e-6)


def test_blur_keeps_mass_and_wraps_across_the_seam():
    img = torch.zeros(3, 16, 32)
    img[:, 8, 0] = 1.0
    out = gaussian_blur_wrapped(img, 1.0)
    assert float(out.sum()) == pytest.approx(3.0, abs=1e-5)  # no energy lost at the seam
    assert torch.allclose(out[:, 8, 31], out[:, 8, 1])  # symmetric around column 0
    # 3-sigma kernel, sigma 1: g(0) = 1 / 2.5058, g(1) = e^-0.5 / 2.5058, so (row 0, col 1) = g0 g1
    norm = 1 + 2 * (math.exp(-0.5) + math.exp(-2) + math.exp(-4.5))  # 2.50584
    g0, g1 = 1 / norm, math.exp(-0.5) / norm
    assert float(out[0, 8, 1]) == pytest.approx(g0 * g1, abs=1e-5)
    assert float(out[0, 8, 0]) == pytest.approx(g0 * g0, abs=1e-5)
    flat = torch.full((3, 16, 32), 0.4)
    assert torch.allclose(gaussian_blur_wrapped(flat, 2.0), flat, atol=1e-6)
    assert gaussian_blur_wrapped(img, 0.0) is img


def test_jpeg_round_trip_is_close_on_a_smooth_image():
    y, x = torch.meshgrid(torch.linspace(0, 1, 32), torch.linspace(0, 1, 64), indexing="ij")
    img = torch.stack([x, y, 0.5 * (x + y)])
    out = jpeg_round_trip(img, 90)
    assert out.shape == img.shape and out.dtype == torch.float32
    assert float((out - img).abs().mean()) < 0.02
    assert float((jpeg_round_trip(img, 10) - img).abs().mean()) > float((out - img).abs().mean())


def test_shading_is_a_smooth_seamless_gain_within_its_bound():
    effects = CameraEffects(shading_ev=2.0)
    gen = torch.Generator().manual_seed(4)
    for _ in range(10):
        stops = effects._shading(32, 64, gen).log2()
        assert stops.shape == (1, 32, 64)
        assert float(stops.abs().max()) <= 2.0 + 1e-6
        step = (stops[..., 1:] - stops[..., :-1]).abs().max()
        seam = (stops[..., 0] - stops[..., -1]).abs().max()
        assert float(seam) <= float(step) + 1e-6  # no edge at ±180°: like any neighbour pair
    sample = _sample()
    only_shading = _only(shading_ev=2.0)
    # effect_p = 0 switches shading off like every other optional effect
    assert torch.allclose(only_shading(sample, gen)["rgb"], sample["rgb"], atol=1e-6)


def _box_room_range(height: int, width: int) -> torch.Tensor:
    """Range [H, W] seen from the origin inside a 4 x 6 m room, floor 1.5 m below, ceiling 1 m
    above (the nearest plane hit along every ray)."""
    rays = pixel_rays(height, width, dtype=torch.float64)
    hits = []
    for axis, (lo, hi) in enumerate(((-2.0, 2.0), (-3.0, 3.0), (-1.5, 1.0))):
        d = rays[..., axis]
        t_hi = torch.where(d > 1e-9, hi / d.clamp_min(1e-9), torch.full_like(d, math.inf))
        t_lo = torch.where(d < -1e-9, lo / d.clamp_max(-1e-9), torch.full_like(d, math.inf))
        hits += [t_hi, t_lo]
    return torch.stack(hits).min(0).values.float()


def _only_lamps(n_lamps: int) -> CameraEffects:
    return _only(lamps_p=1.0, lamps=(n_lamps, n_lamps))


def test_lamps_light_a_room_from_above_by_falloff_and_keep_its_exposure():
    height, width = 48, 96
    range_m = _box_room_range(height, width)
    points = range_to_points(range_m.double())
    sample = {"rgb": torch.full((3, height, width), 0.2), "range_m": range_m[None]}
    for seed in range(8):
        out = _only_lamps(1)(sample, torch.Generator().manual_seed(seed))
        gain = out["rgb"][0] / 0.2
        assert torch.allclose(out["rgb"], out["rgb"][:1].expand(3, -1, -1))  # grey stays grey
        assert float(gain.min()) > 0 and float(gain.max()) <= 4.0 + 1e-5
        # auto-exposure: the 70th-percentile pixel keeps its level (the cap only cuts the top)
        assert abs(float(torch.quantile(gain.flatten(), 0.7)) - 1.0) < 0.02
        # one lamp hangs above the camera: the brightest surface point, the one nearest to it,
        # is above the camera, and the gain falls away with 3D distance from that point
        row, col = divmod(int(gain.argmax()), width)
        brightest = points[row, col]
        assert float(brightest[2]) > 0
        far = (points - brightest).norm(dim=-1)
        assert float(gain[far > 3].mean()) < 0.5 * float(gain[far < 0.5].mean())
    a = _only_lamps(3)(sample, torch.Generator().manual_seed(1))["rgb"]
    assert torch.equal(a, _only_lamps(3)(sample, torch.Generator().manual_seed(1))["rgb"])


def test_lamps_leave_open_scenes_and_off_leaves_the_random_stream_alone():
    sample = _sample()  # a sky band: not an enclosed room
    relit = _only_lamps(2)(sample, torch.Generator().manual_seed(2))
    assert torch.allclose(relit["rgb"], sample["rgb"])
    # lamps_p = 0 draws nothing: the other effects come out as they did before lamps existed
    # (sums and pixels recorded from the camera effects of commit 5c79b4c, the last without
    # lamps; JPEG output is k/255, so a pixel matches to one code step)
    effects = CameraEffects(p=1.0, effect_p=1.0, haze_p=1.0, shading_ev=1.5)
    before_lamps = {7: (2605.0118, 106, 91), 8: (4187.1648, 122, 151)}
    for seed, (total, code_a, code_b) in before_lamps.items():
        rgb = effects(sample, torch.Generator().manual_seed(seed))["rgb"]
        assert abs(float(rgb.double().sum()) - total) < 0.5
        assert abs(float(rgb[0, 5, 7]) * 255 - code_a) <= 1.01
        assert abs(float(rgb[2, 20, 40]) * 255 - code_b) <= 1.01
