"""What the one training loop trains: a depth model (stages 1–3) or the stage-2 critic.

A task owns the trainable module, builds its optimizer parameter groups, and turns a batch
into (loss, logs). The `Trainer` does everything else (data, DDP, autocast, clipping,
checkpoints, logging), so stages differ only by config and task.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from dap_core.model import load_model
from dap_core.train.config import TrainConfig
from dap_core.train.discriminator import DepthCritic, critic_input, critic_loss, fill_invalid


def build_model(cfg: TrainConfig, init: str | Path | None = None):
    """A DAP from the config's preset and overrides (input size = data.size), optionally
    initialised from saved weights (which must have the same architecture)."""
    from dap_core.model import DAP, DAPConfig

    overrides = dict(cfg.model.overrides)
    overrides.setdefault("input_size", tuple(cfg.data.size))
    config = DAPConfig.preset(cfg.model.preset, **overrides)
    torch.manual_seed(cfg.seed)  # identical initial weights on every rank
    model = DAP(config)
    if init is None and cfg.model.start_range_m is not None:
        set_start_range(model, cfg.model.start_range_m)
    if init is not None:
        loaded = load_model(init)
        try:
            model.load_state_dict(loaded.state_dict())
        except RuntimeError as err:
            raise ValueError(
                f"initial weights {init} do not fit model preset "
                f"{cfg.model.preset!r} with {overrides}: {err}"
            ) from err
    return model


def set_start_range(model, range_m: float) -> None:
    """Bias the depth head's last convolution so its sigmoid starts at range_m / D_max (the
    depth channel only: a shared head's mask channels keep theirs)."""
    import math

    fraction = min(max(range_m / model.config.max_range_m, 1e-4), 1 - 1e-4)
    last = [m for m in model.heads["depth"].modules() if isinstance(m, nn.Conv2d)][-1]
    with torch.no_grad():
        last.bias[:1].fill_(math.log(fraction / (1 - fraction)))


def normalize_rgb(rgb: torch.Tensor, config) -> torch.Tensor:
    """[B, 3, H, W] RGB in [0, 1] -> the model's input (ImageNet mean/std when configured)."""
    if not config.normalize:
        return rgb
    mean = torch.tensor(config.mean, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    std = torch.tensor(config.std, device=rgb.device, dtype=rgb.dtype).view(1, 3, 1, 1)
    return (rgb - mean) / std


def unwrap(module: nn.Module) -> nn.Module:
    """The module inside a DistributedDataParallel wrapper."""
    return module.module if hasattr(module, "module") else module


def predict_range(model: nn.Module, rgb: torch.Tensor, mask_thresholds=None):
    """Run a DAP (or its DDP wrapper) on RGB in [0, 1]: (range metres [B,1,H,W], masks)."""
    inner = unwrap(model)
    out = model(normalize_rgb(rgb, inner.config), mask_thresholds)
    if out.depth.shape[-2:] != rgb.shape[-2:]:
        raise ValueError(
            f"input size {tuple(rgb.shape[-2:])} is not a multiple of the patch size; "
            "set data.size to multiples of 16"
        )
    return out.depth * inner.config.max_range_m, out.masks


SKY_DECISION = 0.5  # the 100 m mask below this means "beyond / sky"


@torch.no_grad()
def pseudo_label(
    model: nn.Module, rgb: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A labeler's output as written to pseudo-label shards.

    Returns (label, raw, within): label = range [B,1,H,W] float32 metres with +inf where the
    100 m mask says "beyond"; raw = the depth head's range everywhere; within = the 100 m mask
    probability (ones when the model has no 100 m head).

    The labeler sees the panorama at its own `input_size`, as at run time, and its outputs
    are resized bilinearly to the panorama's size: a labeler trained at 96x192 can label the
    192x384 data of a finer model (run at twice its training size it would see its patches
    at another scale).
    """
    config = unwrap(model).config
    size = tuple(rgb.shape[-2:])
    own = tuple(config.input_size)
    if size != own:
        rgb = F.interpolate(rgb, size=own, mode="bilinear", align_corners=False, antialias=True)
    has_sky = 100 in config.mask_thresholds
    raw, masks = predict_range(model, rgb, (100,) if has_sky else ())
    raw = _resized(raw.float(), size)
    if not has_sky:
        return raw, raw, torch.ones_like(raw)
    within = _resized(masks[100].float(), size)
    return torch.where(within < SKY_DECISION, torch.inf, raw), raw, within


def _resized(x: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(x.shape[-2:]) == size:
        return x
    return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class DepthTask:
    """Train a DAP model with `DAPLoss` on labeled (and pseudo-labeled) batches."""

    name = "depth"

    def __init__(self, cfg: TrainConfig, model: nn.Module) -> None:
        from dap_core.losses import DAPLoss, LossConfig

        self.cfg = cfg
        self.module = model
        self.loss = DAPLoss(LossConfig.from_dict(dict(cfg.loss)))
        self.thresholds = model.config.mask_thresholds if "mask" in self.loss.config.enabled else ()

    def param_groups(self) -> list[dict[str, Any]]:
        o = self.cfg.optim
        backbone = [p for p in self.module.backbone.parameters() if p.requires_grad]
        decoder = [p for p in self.module.decoder_parameters() if p.requires_grad]
        return [
            {"params": backbone, "lr": o.lr_backbone, "name": "backbone"},
            {"params": decoder, "lr": o.lr_decoder, "name": "decoder"},
        ]

    def betas(self) -> tuple[float, float]:
        return tuple(self.cfg.optim.betas)

    def step(self, module: nn.Module, batch: dict[str, Any]):
        pred, masks = predict_range(module, batch["rgb"], self.thresholds)
        total, logs = self.loss(
            pred, batch["range_m"], batch["valid"], masks, unwrap(module).config.max_range_m
        )
        return total, logs, pred


class CriticTask:
    """Train the PatchGAN critic against a frozen labeler (stage 2, first phase).

    Real: ground truth of labeled batches. Fake: the labeler's pseudo labels, on the unlabeled
    images paired into the batch as "fake_rgb" (see `PairedForCritic`) when present, else on
    the labeled images themselves.
    """

    name = "critic"

    def __init__(self, cfg: TrainConfig, labeler: nn.Module) -> None:
        d = cfg.discriminator
        self.cfg = cfg
        self.labeler = labeler.eval().requires_grad_(False)
        torch.manual_seed(cfg.seed + 1)
        self.module = DepthCritic(
            channels=d.channels,
            layers=d.layers,
            use_rgb=d.use_rgb,
            max_range_m=labeler.config.max_range_m,
            sky=d.sky,
            pool=d.pool,
        )

    def param_groups(self) -> list[dict[str, Any]]:
        return [
            {
                "params": list(self.module.parameters()),
                "lr": self.cfg.discriminator.lr,
                "name": "critic",
            }
        ]

    def betas(self) -> tuple[float, float]:
        return (0.5, 0.999)  # the usual GAN setting: a short momentum memory

    def step(self, module: nn.Module, batch: dict[str, Any]):
        self.labeler.to(batch["rgb"].device)  # no-op after the first step
        label, raw, _ = pseudo_label(self.labeler, batch.get("fake_rgb", batch["rgb"]))
        fake = critic_input(self.module, label, raw)
        real = fill_invalid(batch["range_m"], batch["valid"], raw, self.module.sky == "neutral")
        jitter = self.cfg.discriminator.scale_jitter
        if jitter > 0:
            # One random scale per sample for both sides: absolute scale carries no real/fake
            # signal, so the critic cannot learn the labeler's scale bias on synthetic data.
            scale = torch.exp((2 * torch.rand(real.shape[0], 1, 1, 1) - 1) * jitter)
            real, fake = real * scale.to(real), fake * scale.to(fake)
        rgb = normalize_rgb(batch["rgb"], self.labeler.config)
        loss, logs = critic_loss(module, real, fake, rgb)
        return loss, logs, fake


# ----------------------------------------------------------------------------------------------
# Augmentation (paper §4: colour jitter, yaw roll, horizontal flip with consistent geometry)


def build_augment(cfg: TrainConfig):
    """`PanoramaAugment` from the data section (a callable (item, torch.Generator) -> item),
    or None when every augmentation is off."""
    from dap_core.data.camera_effects import CameraEffects
    from dap_core.data.transforms import PanoramaAugment

    d = cfg.data
    if d.color_jitter <= 0 and not d.yaw_roll and d.hflip_prob <= 0 and d.camera_effects <= 0:
        return None
    jitter = max(d.color_jitter, 0.0)
    return PanoramaAugment(
        roll=d.yaw_roll,
        flip_p=d.hflip_prob,
        brightness=jitter,
        contrast=jitter,
        saturation=jitter,
        hue=jitter / 4,  # torchvision-style: hue in turns, a quarter of the other factors
        jitter_p=0.8 if jitter > 0 else 0.0,
        camera=(
            CameraEffects(
                p=d.camera_effects, shading_ev=d.camera_shading_ev, lamps_p=d.camera_lamps
            )
            if d.camera_effects > 0
            else None
        ),
    )
