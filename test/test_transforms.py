"""Sample augmentations: yaw roll and flip keep geometric meaning; colour jitter is sane."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dap_core.data.appearance import Lighting, Material
from dap_core.data.raycast import Room
from dap_core.data.scenes import INDOOR_CAMERA_HEIGHT, CameraPath, Scene
from dap_core.data.transforms import PanoramaAugment, color_jitter, horizontal_flip, yaw_roll

H, W = 32, 64


def room(y0: float, y1: float) -> Scene:
    return Scene(
        seed=1,
        kind="indoor",
        layout="room",
        primitives=(),
        materials=(Material("paint", (0.5, 0.5, 0.5)),),
        lighting=Lighting(key_dir=(0.0, 0.0, 1.0)),
        path=CameraPath(3.0, 2.0, 0.5, 0.5, 0.0, 1.5, 0.5),
        camera_height=INDOOR_CAMERA_HEIGHT,
        room=Room(0.0, 7.0, y0, y1, 2.8),
        shell=Room(-2.0, 9.0, y0 - 2, y1 + 2, 2.8),
    )


def as_sample(s) -> dict:
    return {
        "rgb": torch.from_numpy(s.rgb).permute(2, 0, 1).float() / 255,
        "range_m": torch.from_numpy(s.range_m)[None],
        "valid": torch.from_numpy(s.valid)[None],
        "normals": torch.from_numpy(s.normals).permute(2, 0, 1),
        "scene": s.scene,
    }


def test_yaw_roll_equals_rendering_with_the_camera_yawed():
    cam, yaw, k = np.array([2.0, 1.3, 1.4]), 0.3, 5
    before = as_sample(room(0.0, 4.0).render(cam, yaw, H, W))
    rolled = yaw_roll(before, k)
    after = as_sample(room(0.0, 4.0).render(cam, yaw + 2 * math.pi * k / W, H, W))
    assert torch.allclose(rolled["range_m"], after["range_m"], rtol=1e-5)
    assert torch.allclose(rolled["normals"], after["normals"], atol=1e-5)
    assert rolled["scene"] == "indoor"
    assert torch.equal(yaw_roll(rolled, -k)["range_m"], before["range_m"])


def test_flip_equals_rendering_the_mirrored_room():
    cam = np.array([2.0, 1.3, 1.4])
    before = as_sample(room(0.0, 4.0).render(cam, 0.0, H, W))
    flipped = horizontal_flip(before)
    # Mirror through the plane y = 1.3 (the camera's): the room spans y in [-1.4, 2.6].
    mirrored = as_sample(room(2 * 1.3 - 4.0, 2 * 1.3).render(cam, 0.0, H, W))
    assert torch.allclose(flipped["range_m"], mirrored["range_m"], rtol=1e-5)
    assert torch.allclose(flipped["normals"], mirrored["normals"], atol=1e-5)
    assert torch.equal(horizontal_flip(flipped)["normals"], before["normals"])


def test_color_jitter_hand_computed_cases():
    rgb = torch.rand(3, 4, 8, generator=torch.Generator().manual_seed(0)) * 0.8
    assert torch.allclose(color_jitter(rgb), rgb, atol=1e-6)
    assert torch.allclose(color_jitter(rgb, brightness=0.5), rgb * 0.5, atol=1e-6)
    assert torch.allclose(color_jitter(rgb, hue=1.0), rgb, atol=1e-5)  # a full turn
    grey = color_jitter(rgb, saturation=0.0)
    luma = 0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]
    for c in range(3):
        assert torch.allclose(grey[c], luma, atol=1e-5)
    shifted = color_jitter(rgb, hue=0.3)
    luma2 = 0.299 * shifted[0] + 0.587 * shifted[1] + 0.114 * shifted[2]
    inside = (shifted > 0) & (shifted < 1)  # where nothing clipped, luminance is kept
    assert torch.allclose(luma2[inside.all(0)], luma[inside.all(0)], atol=1e-5)
    flat = color_jitter(rgb, contrast=0.0)
    assert torch.allclose(flat, flat[:, :1, :1].expand_as(flat), atol=1e-6)


def test_augment_moves_maps_together_and_is_reproducible():
    rng = torch.Generator().manual_seed(0)
    rgb = torch.rand(3, H, W, generator=rng)
    marker = torch.zeros(1, H, W)
    marker[0, 5, 7] = 1.0
    sample = {"rgb": rgb, "range_m": marker.clone(), "valid": marker.bool(), "seed": 3}
    aug = PanoramaAugment(flip_p=1.0, jitter_p=1.0)
    a = aug(sample, torch.Generator().manual_seed(42))
    b = aug(sample, torch.Generator().manual_seed(42))
    assert torch.equal(a["rgb"], b["rgb"]) and torch.equal(a["range_m"], b["range_m"])
    assert a["seed"] == 3 and torch.equal(a["valid"], a["range_m"].bool())
    r, c = (a["range_m"][0] == 1).nonzero()[0].tolist()
    assert r == 5 and c != 7  # rolled and flipped along columns, rows untouched
    assert not torch.equal(a["rgb"], rgb)
    assert sample["range_m"][0, 5, 7] == 1  # the input is not modified


def test_maps_of_other_sizes_are_left_alone():
    sample = {"rgb": torch.rand(3, H, W), "thumb": torch.rand(1, 4, 8)}
    assert torch.equal(horizontal_flip(sample)["thumb"], sample["thumb"])
    with pytest.raises(KeyError, match="rgb"):
        yaw_roll({"range_m": torch.zeros(1, H, W)}, 3)
