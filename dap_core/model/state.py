"""State dicts: safe reading from files, key/shape/finite checks, assignment into a model.

Owns the checks every loader shares (our format in dap_core.model.checkpoint, the released
checkpoint in dap_core.model.official). Knows tensors and files, not the DAP class: loaders
import this module, never the other way round. Nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import pickle
from pathlib import Path

import torch

_MAX_NAMES_SHOWN = 8


# --------------------------------------------------------------- key checks
def _names(keys: list[str]) -> str:
    shown = ", ".join(keys[:_MAX_NAMES_SHOWN])
    more = len(keys) - _MAX_NAMES_SHOWN
    return shown + (f" (and {more} more)" if more > 0 else "")


def check_state_dict(
    expected: dict[str, torch.Size],
    state: dict[str, torch.Tensor],
    source: str,
    *,
    allow_missing: bool = False,
    allow_unexpected: bool = False,
) -> tuple[list[str], list[str]]:
    """Compare keys and shapes; raise ValueError naming the offending keys.

    Returns (missing, unexpected) when those are allowed. Shape mismatches always raise.
    """
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing and not allow_missing:
        raise ValueError(f"{source}: missing {len(missing)} key(s): {_names(missing)}")
    if unexpected and not allow_unexpected:
        raise ValueError(f"{source}: {len(unexpected)} unexpected key(s): {_names(unexpected)}")
    for key in sorted(set(expected) & set(state)):
        if tuple(state[key].shape) != tuple(expected[key]):
            raise ValueError(
                f"{source}: shape mismatch for {key}: file has {tuple(state[key].shape)}, "
                f"the model expects {tuple(expected[key])}"
            )
    return missing, unexpected


def check_finite(state: dict[str, torch.Tensor], source: str) -> None:
    """Refuse NaN/inf anywhere (a NaN `bias_mask` or `periods` would poison every output)."""
    for key, tensor in state.items():
        if not tensor.is_floating_point() or tensor.numel() == 0:
            continue
        # Broadcast (stride-0) dimensions hold one value: look at it once.
        for dim in range(tensor.dim()):
            if tensor.stride(dim) == 0 and tensor.shape[dim] > 1:
                tensor = tensor.narrow(dim, 0, 1)
        low, high = torch.aminmax(tensor.detach())
        if not (torch.isfinite(low) and torch.isfinite(high)):
            raise ValueError(f"{source}: non-finite values (NaN or inf) in {key}")


def model_shapes(model: torch.nn.Module) -> dict[str, torch.Size]:
    return {k: v.shape for k, v in model.state_dict().items()}


def assign_state_dict(model: torch.nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Load a complete, checked state dict into a model built on the meta device."""
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"tensors left unloaded after assign: {_names(left)}")


# ------------------------------------------------------------- file reading
def read_torch_state_dict(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> dict[str, torch.Tensor]:
    """torch.load(weights_only=True), memory-mapped when possible, with clear errors."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: {path}")
    try:
        try:
            obj = torch.load(path, map_location=map_location, weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err):
                raise
            obj = torch.load(path, map_location=map_location, weights_only=True)  # legacy format
    except pickle.UnpicklingError as err:
        raise ValueError(
            f"refused to load {path}: it holds Python objects other than tensors, or is not a "
            f"torch checkpoint (loaded with weights_only=True; arbitrary pickles never run): {err}"
        ) from err
    except Exception as err:  # torch raises many types (RuntimeError, EOFError, IndexError...)
        raise ValueError(
            f"cannot read {path}: corrupt or truncated checkpoint, or not a torch file "
            f"({type(err).__name__}: {err})"
        ) from err
    return _as_state_dict(obj, path)


def _as_state_dict(obj: object, path: Path) -> dict[str, torch.Tensor]:
    # Training scripts often wrap the state dict; accept the two common wrappers.
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict):
        raise ValueError(f"{path} does not hold a state dict (found {type(obj).__name__})")
    bad = [str(k) for k, v in obj.items() if not isinstance(k, str) or not torch.is_tensor(v)]
    if bad:
        raise ValueError(f"{path}: entries that are not tensors: {_names(bad)}")
    return obj


def read_safetensors(
    path: str | Path, map_location: str | torch.device = "cpu"
) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """(tensors, metadata) of a .safetensors file, with clear errors for corrupt files."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"weights file not found: {path}")
    try:
        with safe_open(str(path), framework="pt", device=str(map_location)) as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118 (not a dict)
    except Exception as err:  # safetensors raises its own error types for bad headers/sizes
        raise ValueError(f"cannot read {path}: corrupt or truncated safetensors ({err})") from err
    return tensors, metadata
