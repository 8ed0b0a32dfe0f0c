"""Procedural 360° RGB-D panoramas with exact metric ground truth, and a torch Dataset over them.

`generate_panorama(seed)` builds the scene of `seed` (`make_scene`), places a camera at a
random free spot with a random yaw, and renders it in one of two appearance domains ("sim",
"real_like"; see `dap_core.data.appearance`). The same seed always gives the same bytes, and
the same seed in both domains gives the same geometry.
"""

from __future__ import annotations

import numpy as np

from dap_core.data.appearance import DOMAINS, check_domain
from dap_core.data.render import PanoramaSample
from dap_core.data.scenes import SCENE_KINDS, Scene, gc_paused, make_scene

__all__ = [
    "DOMAINS",
    "SCENE_KINDS",
    "PanoramaSample",
    "Scene",
    "SyntheticPanoramaDataset",
    "generate_panorama",
    "make_scene",
]


def generate_panorama(
    seed: int,
    height: int = 256,
    width: int = 512,
    scene: str | None = None,
    domain: str = "sim",
) -> PanoramaSample:
    """Render the panorama of `seed` ([height, width], width = 2 * height).

    scene: "indoor", "outdoor" or None (chosen by the seed). domain: "sim" or "real_like".
    The camera position, yaw and height depend on the seed only, not on the domain.
    """
    check_domain(domain)
    with gc_paused():  # the scene's objects all die with it (see gc_paused)
        sc = make_scene(seed, scene)
        rng = np.random.default_rng([int(seed), 0xCA3E7A])
        position, yaw = sc.sample_camera(rng)
        sample = sc.render(position, yaw, height, width, domain, noise_seed=int(seed))
        del sc
    sample.seed = int(seed)
    return sample


try:
    import torch
    from torch.utils.data import Dataset
except ImportError:  # pragma: no cover - torch is a hard dependency of dap_core
    Dataset = object  # type: ignore[assignment,misc]


class SyntheticPanoramaDataset(Dataset):
    """On-the-fly synthetic panoramas, deterministic per index.

    Item i renders seed = seed_offset + i with scene kind scenes[i % len(scenes)]. Items:
    rgb float32 [3, H, W] in [0, 1] (not normalised), range_m float32 [1, H, W] metres (+inf
    sky), valid bool [1, H, W], scene str, domain str, seed int.
    """

    def __init__(
        self,
        length: int,
        height: int = 256,
        width: int = 512,
        domain: str = "sim",
        seed_offset: int = 0,
        scenes: tuple[str, ...] = ("indoor", "outdoor"),
    ):
        check_domain(domain)
        if length < 0:
            raise ValueError(f"length must be >= 0, got {length}")
        if not scenes or any(s not in SCENE_KINDS for s in scenes):
            raise ValueError(f"scenes must be a non-empty subset of {SCENE_KINDS}, got {scenes}")
        if height < 2 or width != 2 * height:
            raise ValueError(f"panorama size must be H x 2H, got {height}x{width}")
        self.length = int(length)
        self.height, self.width = int(height), int(width)
        self.domain = domain
        self.seed_offset = int(seed_offset)
        self.scenes = tuple(scenes)

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        if not 0 <= index < self.length:
            raise IndexError(f"index {index} out of range for {self.length} samples")
        seed = self.seed_offset + int(index)
        kind = self.scenes[int(index) % len(self.scenes)]
        s = generate_panorama(seed, self.height, self.width, kind, self.domain)
        rgb = torch.from_numpy(s.rgb).permute(2, 0, 1).float().div_(255.0)
        return {
            "rgb": rgb.contiguous(),
            "range_m": torch.from_numpy(s.range_m)[None],
            "valid": torch.from_numpy(s.valid)[None],
            "scene": s.scene,
            "domain": s.domain,
            "seed": s.seed,
        }
