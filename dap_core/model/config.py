"""DAPConfig: every size and flag of a DAP model, in one frozen dataclass with named presets.

The backbone is a DINOv3-style ViT (patch 16, class + storage tokens, RoPE); the heads are
DPT heads (one for depth, one per range-mask threshold). See ../shared/notes/official_dap_spec.md
for the released model these defaults reproduce.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

ADAPTERS = ("official", "clean")
MASK_MEANINGS = ("within", "beyond")


@dataclass(frozen=True)
class DAPConfig:
    """Sizes and flags of a DAP model.

    Backbone: `embed_dim`, `depth`, `num_heads` (head dim = embed_dim / num_heads, a multiple
    of 4 for RoPE), `layer_indices` (0-based blocks whose outputs feed the heads, 4 of them).
    Heads: `head_features` (DPT fusion width), `head_out_channels` (per pyramid level),
    `head_hidden` (the 32-channel layer before the 1-channel output in the official code).

    `adapter`: "official" reproduces the released model's adapter (extra LayerNorm, first
    patch token dropped, token-axis resample, spec §2); "clean" feeds the patch grid
    straight to the heads (for models we train).
    `mask_thresholds`: metres; one range-mask head each. `mask_head_meaning`: "within" means
    a head outputs P(range <= T); "beyond" (the released single head) outputs P(range > T),
    and the model reports 1 - that.
    `shared_head`: one DPT head computes depth (channel 0) and every range mask (channel
    1 + i for mask_thresholds[i]) instead of one head each: half the head work with one mask,
    for distilled students on small CPUs (`training/distill/shared.yaml`). The released
    layout is separate heads (False).
    `head_low_res_output`: each head's last two convolutions (3x3 to `head_hidden`, 1x1 to
    the outputs) run at half the output size, where the fusion ends, and only their logits
    are resized: a quarter of their pixels, about a fifth of a small student's CPU time.
    The released head runs them at full size (False).
    `input_size`: (H, W) pixels the model expects, multiples of `patch_size`.
    `normalize`: apply ImageNet mean/std after scaling RGB to [0, 1].
    """

    # Backbone (DINOv3 ViT)
    patch_size: int = 16
    embed_dim: int = 1024
    depth: int = 24
    num_heads: int = 16
    ffn_ratio: float = 4.0
    n_storage_tokens: int = 4
    layer_indices: tuple[int, ...] = (4, 11, 17, 23)
    rope_base: float = 100.0
    norm_eps: float = 1e-5
    layerscale_init: float = 1e-5
    # DPT heads
    head_features: int = 256
    head_out_channels: tuple[int, ...] = (256, 512, 1024, 1024)
    head_hidden: int = 32
    # DAP
    adapter: str = "clean"
    max_range_m: float = 100.0
    mask_thresholds: tuple[int, ...] = (10, 20, 50, 100)
    mask_head_meaning: str = "within"
    shared_head: bool = False
    head_low_res_output: bool = False
    input_size: tuple[int, int] = (512, 1024)
    normalize: bool = True
    mean: tuple[float, float, float] = field(default=IMAGENET_MEAN)
    std: tuple[float, float, float] = field(default=IMAGENET_STD)

    def __post_init__(self) -> None:
        # Lists from JSON become tuples so configs compare and hash as values.
        for name in ("layer_indices", "head_out_channels", "mask_thresholds", "input_size"):
            object.__setattr__(self, name, tuple(int(v) for v in getattr(self, name)))
        for name in ("mean", "std"):
            object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        self._validate()

    def _validate(self) -> None:
        def bad(msg: str) -> None:
            raise ValueError(f"DAPConfig: {msg}")

        if self.embed_dim % self.num_heads:
            bad(f"embed_dim {self.embed_dim} is not divisible by num_heads {self.num_heads}")
        if self.head_dim % 4:
            bad(f"head dim {self.head_dim} must be a multiple of 4 (RoPE on rows and columns)")
        if len(self.layer_indices) != 4:
            bad(f"layer_indices needs 4 entries, got {self.layer_indices}")
        if list(self.layer_indices) != sorted(set(self.layer_indices)):
            bad(f"layer_indices must be strictly increasing, got {self.layer_indices}")
        if not all(0 <= i < self.depth for i in self.layer_indices):
            bad(f"layer_indices {self.layer_indices} out of range for depth {self.depth}")
        if len(self.head_out_channels) != 4:
            bad(f"head_out_channels needs 4 entries, got {self.head_out_channels}")
        if self.adapter not in ADAPTERS:
            bad(f"adapter must be one of {ADAPTERS}, got {self.adapter!r}")
        if self.mask_head_meaning not in MASK_MEANINGS:
            bad(f"mask_head_meaning must be one of {MASK_MEANINGS}, got {self.mask_head_meaning!r}")
        if len(set(self.mask_thresholds)) != len(self.mask_thresholds):
            bad(f"mask_thresholds has duplicates: {self.mask_thresholds}")
        if any(t <= 0 for t in self.mask_thresholds):
            bad(f"mask_thresholds must be positive metres, got {self.mask_thresholds}")
        if len(self.input_size) != 2 or any(s % self.patch_size or s <= 0 for s in self.input_size):
            bad(f"input_size {self.input_size} must be two positive multiples of {self.patch_size}")
        if not isinstance(self.shared_head, bool):
            bad(f"shared_head must be true or false, got {self.shared_head!r}")
        if self.shared_head and self.adapter == "official":
            bad("shared_head is not the released layout: the official adapter has separate heads")
        if not isinstance(self.head_low_res_output, bool):
            bad(f"head_low_res_output must be true or false, got {self.head_low_res_output!r}")
        if self.head_low_res_output and self.adapter == "official":
            bad("head_low_res_output is not the released layout: its heads end at full size")
        if self.max_range_m <= 0:
            bad(f"max_range_m must be positive, got {self.max_range_m}")

    @property
    def head_dim(self) -> int:
        return self.embed_dim // self.num_heads

    @classmethod
    def preset(cls, name: str, **overrides: Any) -> DAPConfig:
        """A named size: "tiny", "vits", "vitb", "vitl" (the released size) or "vitg"."""
        if name not in PRESETS:
            raise ValueError(f"unknown DAP preset {name!r}; choose from {sorted(PRESETS)}")
        return dataclasses.replace(PRESETS[name], **overrides)

    def replace(self, **changes: Any) -> DAPConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        return {f.name: _jsonable(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DAPConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ValueError(f"DAPConfig: unknown field(s) {unknown}")
        return cls(**data)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=1)

    @classmethod
    def from_json(cls, text: str) -> DAPConfig:
        return cls.from_dict(json.loads(text))


def _jsonable(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


# Sizes follow DINOv3 (head dim 64) and Depth-Anything-V2's DPT heads for each ViT size.
# "vitg" is ViT-g shaped (1536 x 40, 24 heads) with the MLP FFN used throughout this project.
# "tiny" is the shipped CPU model: ViT-Ti widths, 8 blocks, 64-channel DPT heads whose last
# full-resolution conv is 16 wide (32 in the release; that one layer is 15 % of a head's FLOPs).
# At 256x512: backbone 5.5 GFLOP, each head 7.1 GFLOP (dap_core.model.flops).
PRESETS: dict[str, DAPConfig] = {
    "tiny": DAPConfig(
        embed_dim=192,
        depth=8,
        num_heads=3,
        layer_indices=(1, 3, 5, 7),
        head_features=64,
        head_out_channels=(48, 96, 192, 192),
        head_hidden=16,
        input_size=(256, 512),
    ),
    "vits": DAPConfig(
        embed_dim=384,
        depth=12,
        num_heads=6,
        layer_indices=(2, 5, 8, 11),
        head_features=64,
        head_out_channels=(48, 96, 192, 384),
    ),
    "vitb": DAPConfig(
        embed_dim=768,
        depth=12,
        num_heads=12,
        layer_indices=(2, 5, 8, 11),
        head_features=128,
        head_out_channels=(96, 192, 384, 768),
    ),
    "vitl": DAPConfig(),
    "vitg": DAPConfig(
        embed_dim=1536,
        depth=40,
        num_heads=24,
        layer_indices=(9, 19, 29, 39),
        head_features=384,
        head_out_channels=(1536, 1536, 1536, 1536),
    ),
}
