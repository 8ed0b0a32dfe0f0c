"""Import of the released DAP checkpoint (Insta360-Research/DAP-weights `model.pth`).

Key mapping (spec §6): an optional leading `module.` is stripped;
`core.pretrained.model.*` -> `backbone.*`; `core.pretrained.blocks.*` are aliases of
`core.pretrained.model.blocks.*` (checked equal, then ignored); `core.pretrained.norm.*` ->
`adapter.norm.*` (the extra LayerNorm); `core.depth_head.*` -> `heads.depth.*`;
`core.mask_head.*` -> `heads.mask_100.*` (the single head, meaning "beyond 100 m").
`rope_embed.periods` and `qkv.bias_mask` come from the checkpoint when present, else from the
formula (never left NaN). Unknown and missing keys are reported by name.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from dap_core.model.config import DAPConfig
from dap_core.model.dap import DAP, DEPTH_HEAD, mask_head_name
from dap_core.model.state import (
    assign_state_dict,
    check_finite,
    check_state_dict,
    model_shapes,
    read_safetensors,
    read_torch_state_dict,
)

log = logging.getLogger(__name__)

# The released checkpoint on the Hugging Face hub (file size: spec §6.1; hash from the hub's
# LFS pointer of commit bc92bec "add DAP model weights").
OFFICIAL_HUB_REPO = "Insta360-Research/DAP-weights"
OFFICIAL_FILENAME = "model.pth"
OFFICIAL_SIZE_BYTES = 1_460_746_347
OFFICIAL_SHA256 = "247f33754976cae1f76cb9a3b9737f336575e8cbd121c382ab1bff18387bc7d3"

OFFICIAL_MASK_THRESHOLD_M = 100
# Depth Anything V2's `intermediate_layer_idx` per ViT depth (vits/vitb: 12, vitl: 24, vitg: 40).
OFFICIAL_LAYER_INDICES = {12: (2, 5, 8, 11), 24: (4, 11, 17, 23), 40: (9, 19, 29, 39)}

_BACKBONE = "core.pretrained.model."
_ALIASES = "core.pretrained.blocks."
_PREFIX_MAP = (
    (_BACKBONE, "backbone."),
    ("core.pretrained.norm.", "adapter.norm."),
    ("core.depth_head.", f"heads.{DEPTH_HEAD}."),
    ("core.mask_head.", f"heads.{mask_head_name(OFFICIAL_MASK_THRESHOLD_M)}."),
)
_BLOCK_KEY = re.compile(r"^core\.pretrained\.model\.blocks\.(\d+)\.")


@dataclass
class LoadReport:
    """What an official import found: keys by name, and where the buffers came from."""

    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    aliases_checked: int = 0
    buffers_from_checkpoint: list[str] = field(default_factory=list)
    buffers_from_formula: list[str] = field(default_factory=list)


def official_config(**overrides: object) -> DAPConfig:
    """The released model: ViT-L/16, official adapter, one 'beyond 100 m' mask head."""
    base = {
        "adapter": "official",
        "mask_thresholds": (OFFICIAL_MASK_THRESHOLD_M,),
        "mask_head_meaning": "beyond",
    }
    return DAPConfig.preset("vitl", **{**base, **overrides})


def strip_module_prefix(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove one leading 'module.' (DataParallel) from every key that has it."""
    return {k.removeprefix("module."): v for k, v in state.items()}


def is_official_state_dict(state: dict[str, torch.Tensor]) -> bool:
    return any(k.removeprefix("module.").startswith("core.") for k in state)


def config_from_official(
    state: dict[str, torch.Tensor], layer_indices: tuple[int, ...] | None = None
) -> DAPConfig:
    """Read the sizes of an official checkpoint from its tensor shapes.

    Head dim = 4 * len(rope periods) (DINOv3: 64 when the buffer is absent). The block indices
    that feed the heads are not stored: they default to Depth Anything V2's table by depth.
    """
    state = strip_module_prefix(state)

    def shape(key: str) -> tuple[int, ...]:
        if key not in state:
            raise ValueError(f"not an official DAP checkpoint: key {key} is missing")
        return tuple(state[key].shape)

    embed_dim = shape(_BACKBONE + "cls_token")[-1]
    patch_size = shape(_BACKBONE + "patch_embed.proj.weight")[-1]
    blocks = {int(m.group(1)) for k in state if (m := _BLOCK_KEY.match(k))}
    depth = max(blocks) + 1 if blocks else 0
    periods_key = _BACKBONE + "rope_embed.periods"
    head_dim = 4 * shape(periods_key)[0] if periods_key in state else 64
    ffn_hidden = shape(_BACKBONE + "blocks.0.mlp.fc1.weight")[0]
    head = "core.depth_head."
    if layer_indices is None:
        if depth not in OFFICIAL_LAYER_INDICES:
            raise ValueError(
                f"checkpoint has {depth} blocks; pass the 4 block indices that feed the heads "
                f"(known depths: {sorted(OFFICIAL_LAYER_INDICES)})"
            )
        layer_indices = OFFICIAL_LAYER_INDICES[depth]
    return official_config(
        patch_size=patch_size,
        embed_dim=embed_dim,
        depth=depth,
        num_heads=embed_dim // head_dim,
        ffn_ratio=ffn_hidden / embed_dim,
        n_storage_tokens=shape(_BACKBONE + "storage_tokens")[1],
        layer_indices=tuple(layer_indices),
        head_features=shape(head + "scratch.layer1_rn.weight")[0],
        head_out_channels=tuple(shape(f"{head}projects.{i}.weight")[0] for i in range(4)),
        head_hidden=shape(head + "scratch.output_conv2.0.weight")[0],
    )


def convert_official_state_dict(
    state: dict[str, torch.Tensor], report: LoadReport | None = None
) -> dict[str, torch.Tensor]:
    """Official keys -> ours. Aliases must equal their `model.blocks` originals."""
    report = LoadReport() if report is None else report
    state = strip_module_prefix(state)
    out: dict[str, torch.Tensor] = {}
    for key, tensor in state.items():
        if key.startswith(_ALIASES):
            original = _BACKBONE + "blocks." + key.removeprefix(_ALIASES)
            if original not in state:  # only the alias was saved: use it
                out["backbone.blocks." + key.removeprefix(_ALIASES)] = tensor
                continue
            if not _same_values(tensor, state[original]):
                raise ValueError(f"alias {key} differs from {original}: corrupt checkpoint")
            report.aliases_checked += 1
            continue
        for official, ours in _PREFIX_MAP:
            if key.startswith(official):
                out[ours + key.removeprefix(official)] = tensor
                break
        else:
            report.unexpected.append(key)
    return out


def _same_values(a: torch.Tensor, b: torch.Tensor) -> bool:
    if a.shape != b.shape:
        return False
    if a.data_ptr() == b.data_ptr() and a.stride() == b.stride() and a.dtype == b.dtype:
        return True  # the same storage saved twice (torch.save keeps the sharing)
    return torch.equal(a, b.to(a.dtype))


def _default_buffers(config: DAPConfig) -> dict[str, torch.Tensor]:
    """Formula values of the backbone buffers, used only when the checkpoint lacks them."""
    quarter = config.head_dim // 4
    exponents = 2 * torch.arange(quarter, dtype=torch.float32) / (config.head_dim // 2)
    buffers = {"backbone.rope_embed.periods": config.rope_base**exponents}
    dim = config.embed_dim
    mask = torch.cat([torch.ones(dim), torch.zeros(dim), torch.ones(dim)])
    for i in range(config.depth):
        buffers[f"backbone.blocks.{i}.attn.qkv.bias_mask"] = mask
    return buffers


def load_official_report(
    source: str | Path | dict[str, torch.Tensor],
    *,
    layer_indices: tuple[int, ...] | None = None,
    config: DAPConfig | None = None,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
    source_name: str | None = None,
) -> tuple[DAP, LoadReport]:
    """Build a DAP in official mode from a checkpoint path or state dict, with a report.

    strict=True: every model key must come from the checkpoint (buffers excepted) and no
    checkpoint key may be left over. strict=False mirrors the official loader (unknown keys
    dropped, missing ones keep their initial values) but logs both by name. Shape mismatches
    and non-finite values always raise ValueError naming the key.
    """
    name = source_name or ("<state dict>" if isinstance(source, dict) else str(source))
    if isinstance(source, dict):
        raw = source
    elif Path(source).suffix == ".safetensors":
        raw = read_safetensors(source, map_location)[0]
    else:
        raw = read_torch_state_dict(source, map_location)
    if not is_official_state_dict(raw):
        raise ValueError(f"{name} is not an official DAP checkpoint (no 'core.*' keys)")
    config = config_from_official(raw, layer_indices) if config is None else config
    report = LoadReport()
    state = convert_official_state_dict(raw, report)
    for key, value in _default_buffers(config).items():
        if key in state:
            report.buffers_from_checkpoint.append(key)
        else:
            state[key] = value.to(map_location)
            report.buffers_from_formula.append(key)
    state = {
        k: v.float() if v.is_floating_point() and v.dtype != torch.float32 else v
        for k, v in state.items()
    }

    if strict:
        with torch.device("meta"):
            model = DAP(config)
        if report.unexpected:
            n = len(report.unexpected)
            raise ValueError(f"{name}: {n} unexpected key(s): {', '.join(report.unexpected[:8])}")
        check_state_dict(model_shapes(model), state, name)
        check_finite(state, name)
        assign_state_dict(model, state)
    else:
        model = DAP(config).to(map_location)
        missing, unexpected = check_state_dict(
            model_shapes(model), state, name, allow_missing=True, allow_unexpected=True
        )
        check_finite(state, name)
        model.load_state_dict({k: v for k, v in state.items() if k not in unexpected}, strict=False)
        report.missing = missing
        report.unexpected += unexpected
        if report.missing or report.unexpected:
            log.warning(
                "%s: %d missing key(s) kept their initial values (%s); %d unknown key(s) ignored "
                "(%s)",
                name,
                len(report.missing),
                ", ".join(report.missing[:8]),
                len(report.unexpected),
                ", ".join(report.unexpected[:8]),
            )
    return model.eval(), report


def load_official(
    source: str | Path | dict[str, torch.Tensor],
    *,
    layer_indices: tuple[int, ...] | None = None,
    config: DAPConfig | None = None,
    strict: bool = True,
    map_location: str | torch.device = "cpu",
    source_name: str | None = None,
) -> DAP:
    """`load_official_report` without the report."""
    model, _ = load_official_report(
        source,
        layer_indices=layer_indices,
        config=config,
        strict=strict,
        map_location=map_location,
        source_name=source_name,
    )
    return model


def official_postprocess(pred_depth: torch.Tensor, pred_mask: torch.Tensor) -> torch.Tensor:
    """The infer/eval scripts' post-processing: depth := 1.0 (100 m) where (1 - mask) > 0.5 fails.

    Computed literally in float32: (1 - m) > 0.5 is not exactly m < 0.5 (spec §4).
    """
    keep = (1 - pred_mask) > 0.5
    return torch.where(keep, pred_depth, torch.ones_like(pred_depth))
