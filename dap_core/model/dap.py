"""DAP: DINOv3 ViT backbone -> adapter -> one DPT depth head + one DPT head per range mask.

With `config.shared_head` one DPT head (under the name "depth") computes depth and every mask
as its output channels.

Output depth is range / max_range_m in (0, 1) (official scale: 1.0 = 100 m); each mask is the
probability that a pixel's range is within T metres. Only the mask heads asked for run.
Output size is 16 * floor(input / 16) per side, as in the official code, unless
`resize_to_input=True`.

The model knows nothing of files: dap_core.model.checkpoint builds models from weights files
(`load_model`, `save_model`) and dap_core.model.official from the released checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from dap_core.model.adapter import CleanAdapter, OfficialAdapter
from dap_core.model.config import DAPConfig
from dap_core.model.dpt import DPTHead
from dap_core.model.vit import DinoViT

DEPTH_HEAD = "depth"


def mask_head_name(threshold_m: int) -> str:
    """Key of a range-mask head in `DAP.heads` (and in saved state dicts)."""
    return f"mask_{int(threshold_m)}"


@dataclass
class DAPOutput:
    """depth [B, 1, H', W'] = range / max_range_m in (0, 1); masks T -> P(range <= T m)."""

    depth: torch.Tensor
    masks: dict[int, torch.Tensor] = field(default_factory=dict)


class DAP(nn.Module):
    """Depth Any Panoramas. Input: [B, 3, H, W] float, already preprocessed (see preprocess.py).

    Parts: `backbone` (DinoViT), `adapter`, `heads` (ModuleDict: "depth", "mask_<T>"; only
    "depth" with `config.shared_head`).
    """

    def __init__(self, config: DAPConfig | None = None) -> None:
        super().__init__()
        config = DAPConfig() if config is None else config
        self.config = config
        self.backbone = DinoViT(config)
        if config.adapter == "official":
            self.adapter: nn.Module = OfficialAdapter(config.embed_dim, config.norm_eps)
        else:
            self.adapter = CleanAdapter()
        if config.shared_head:
            outputs = 1 + len(config.mask_thresholds)
            self.heads = nn.ModuleDict({DEPTH_HEAD: self._new_head(outputs)})
            return
        self.heads = nn.ModuleDict({DEPTH_HEAD: self._new_head()})
        for threshold in config.mask_thresholds:
            self.heads[mask_head_name(threshold)] = self._new_head()

    def _new_head(self, outputs: int = 1) -> DPTHead:
        c = self.config
        return DPTHead(
            c.embed_dim,
            c.head_features,
            c.head_out_channels,
            c.head_hidden,
            c.patch_size,
            outputs,
            low_res_output=c.head_low_res_output,
        )

    # ----------------------------------------------------------------- forward
    def features(self, x: torch.Tensor) -> list[torch.Tensor]:
        """The four adapter grids [B, embed_dim, h, w] that every head consumes."""
        _check_input(x, self.config.patch_size)
        tokens, (h, w) = self.backbone.intermediate_layers(x)
        return [self.adapter(t, h, w) for t in tokens]

    def forward(
        self,
        x: torch.Tensor,
        mask_thresholds: Iterable[int] | None = None,
        resize_to_input: bool = False,
    ) -> DAPOutput:
        """Depth and the requested range masks (None = every head the model has, () = none).

        `resize_to_input` resizes outputs from 16*floor(H/16) x 16*floor(W/16) back to H x W
        (bilinear, align_corners=True, as the official `infer_image`).
        """
        thresholds = self._resolve_thresholds(mask_thresholds)
        grids = self.features(x)
        depth = self.heads[DEPTH_HEAD](grids)
        masks = {}
        for threshold in thresholds:
            if self.config.shared_head:
                c = 1 + self.config.mask_thresholds.index(threshold)
                prob = depth[:, c : c + 1]
            else:
                prob = self.heads[mask_head_name(threshold)](grids)
            # The released head means "beyond T"; ours always report "within T".
            masks[threshold] = 1.0 - prob if self.config.mask_head_meaning == "beyond" else prob
        if self.config.shared_head:
            depth = depth[:, :1]
        if resize_to_input and depth.shape[-2:] != x.shape[-2:]:
            depth = _resize(depth, x.shape[-2:])
            masks = {t: _resize(m, x.shape[-2:]) for t, m in masks.items()}
        return DAPOutput(depth=depth, masks=masks)

    def forward_tensors(
        self, x: torch.Tensor, mask_thresholds: Iterable[int] | None = None
    ) -> tuple[torch.Tensor, ...]:
        """(depth, mask_T1, mask_T2, ...) in the order asked: a plain tuple for export.

        Call `precompute(H, W)` (or run one forward) before exporting at a fixed size so that
        the RoPE sin/cos tables are baked in as constants.
        """
        thresholds = self._resolve_thresholds(mask_thresholds)
        out = self.forward(x, thresholds)
        return (out.depth, *(out.masks[t] for t in thresholds))

    def precompute(self, height: int, width: int) -> None:
        """Build the cached RoPE tables for input size (height, width) in pixels."""
        p = self.config.patch_size
        self.backbone.rope_embed(height // p, width // p)

    def forward_official(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """The released model's raw outputs, bit-exact: {'pred_depth', 'pred_mask'} [B,1,H',W'].

        pred_mask is the single official head's P(beyond 100 m), not inverted.
        """
        c = self.config
        if (
            c.adapter != "official"
            or c.mask_head_meaning != "beyond"
            or len(c.mask_thresholds) != 1
        ):
            raise ValueError(
                "forward_official needs a model in official mode (adapter='official', one mask "
                f"head with meaning 'beyond'); this one has adapter={c.adapter!r}, "
                f"mask_thresholds={c.mask_thresholds}, mask_head_meaning={c.mask_head_meaning!r}"
            )
        if x.dim() == 3:  # the official forward accepts an unbatched image
            x = x.unsqueeze(0)
        grids = self.features(x)
        return {
            "pred_depth": self.heads[DEPTH_HEAD](grids),
            "pred_mask": self.heads[mask_head_name(c.mask_thresholds[0])](grids),
        }

    def _resolve_thresholds(self, mask_thresholds: Iterable[int] | None) -> tuple[int, ...]:
        if mask_thresholds is None:
            return self.config.mask_thresholds
        thresholds = tuple(int(t) for t in mask_thresholds)
        unknown = [t for t in thresholds if t not in self.config.mask_thresholds]
        if unknown:
            raise ValueError(
                f"no range-mask head for {unknown} m; this model has {self.config.mask_thresholds}"
            )
        return thresholds

    # ------------------------------------------------------- parameter groups
    def decoder_parameters(self) -> Iterator[nn.Parameter]:
        """Everything but the backbone (adapter + heads), for a separate learning rate."""
        yield from self.adapter.parameters()
        yield from self.heads.parameters()

    def mask_head(self, threshold_m: int) -> DPTHead:
        self._refuse_shared("a separate range-mask head")
        name = mask_head_name(threshold_m)
        if name not in self.heads:
            raise ValueError(f"no range-mask head for {threshold_m} m")
        return self.heads[name]

    def add_mask_head(self, threshold_m: int) -> DPTHead:
        """Add a freshly initialised mask head for `threshold_m` metres (config updated)."""
        self._refuse_shared("a mask head added")
        name = mask_head_name(threshold_m)
        if name in self.heads:
            raise ValueError(f"the model already has a range-mask head for {threshold_m} m")
        reference = next(self.heads[DEPTH_HEAD].parameters())
        self.heads[name] = self._new_head().to(device=reference.device, dtype=reference.dtype)
        thresholds = tuple(sorted((*self.config.mask_thresholds, int(threshold_m))))
        self.config = self.config.replace(mask_thresholds=thresholds)
        return self.heads[name]

    def freeze_all_but_mask_head(self, threshold_m: int) -> list[nn.Parameter]:
        """Train one mask head on its own: every other parameter gets requires_grad=False.

        Returns that head's parameters (to hand to the optimizer).
        """
        head = self.mask_head(threshold_m)
        self.requires_grad_(False)
        head.requires_grad_(True)
        return list(head.parameters())

    def _refuse_shared(self, what: str) -> None:
        if self.config.shared_head:
            raise ValueError(
                f"this model computes depth and masks in one shared head; it cannot have {what}"
            )


def _resize(t: torch.Tensor, size: torch.Size) -> torch.Tensor:
    return F.interpolate(t, size=tuple(size), mode="bilinear", align_corners=True)


def _check_input(x: torch.Tensor, patch_size: int) -> None:
    if torch.jit.is_tracing():  # shapes are traced tensors there; the export fixes them anyway
        return
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.shape[1] != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"DAP input must be a [B, 3, H, W] tensor, got {shape}")
    if not x.is_floating_point():
        raise ValueError(f"DAP input must be float (preprocessed), got {x.dtype}")
    if x.shape[2] < patch_size or x.shape[3] < patch_size:
        raise ValueError(f"DAP input {tuple(x.shape[2:])} is smaller than one {patch_size}px patch")
