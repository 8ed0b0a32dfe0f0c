"""Small DAP models and the official fixture checkpoint, shared by the model tests.

Not a test module: imported by test_model_checkpoint.py, test_model_dap.py, test_model_export.py,
test_official_checkpoint.py and test_official_weights.py (like ros_harness.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file

from dap_core.model import DAPConfig

# The fixture checkpoint's intermediate_layer_idx (shared/fixtures/official_dap).
TINY_LAYERS = (0, 2, 3, 4)
TINY_WEIGHTS = "tiny_weights.safetensors"

# A few-thousand-parameter DAP: every code path of the real ones, milliseconds per forward.
_MICRO_FIELDS: dict[str, Any] = dict(
    embed_dim=64,
    depth=4,
    num_heads=2,
    layer_indices=(0, 1, 2, 3),
    head_features=16,
    head_out_channels=(8, 16, 32, 32),
    head_hidden=8,
    input_size=(64, 128),
)


def micro_config(**overrides: Any) -> DAPConfig:
    """The micro DAP config (64x128 input) with `overrides` (e.g. mask_thresholds) applied."""
    return DAPConfig(**{**_MICRO_FIELDS, **overrides})


def tiny_state(official_fixtures: Path) -> dict[str, torch.Tensor]:
    """The official-format state dict of the tiny fixture checkpoint."""
    return load_file(official_fixtures / TINY_WEIGHTS)
