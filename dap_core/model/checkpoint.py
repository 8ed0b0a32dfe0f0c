"""Model files: our format (safetensors + config.json), single mask heads, and `load_model`.

Our format: `<dir>/model.safetensors` (float32 state dict of `DAP`, config JSON also in its
metadata) and `<dir>/config.json` (`DAPConfig.to_dict()`). `load_model` also dispatches
official `.pth` files to `dap_core.model.official`. Loading has one direction: this module
builds DAP models from files (with the checks of dap_core.model.state); the model
(dap_core.model.dap) knows nothing of files. Nothing here unpickles arbitrary objects.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

from dap_core.files import umask_mode
from dap_core.model.config import DAPConfig
from dap_core.model.dap import DAP, mask_head_name
from dap_core.model.official import is_official_state_dict, load_official
from dap_core.model.state import (  # noqa: F401  (read_* re-exported for callers)
    assign_state_dict,
    check_finite,
    check_state_dict,
    model_shapes,
    read_safetensors,
    read_torch_state_dict,
)

WEIGHTS_FILE = "model.safetensors"
CONFIG_FILE = "config.json"
FORMAT_NAME = "dap_ros"
MASK_HEAD_FORMAT = "dap_ros_mask_head"
OFFICIAL_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")


# --------------------------------------------------------------- our format
def _atomic_write(path: Path, write) -> None:  # type: ignore[no-untyped-def]
    """Write through `write(temp_path)`, then rename over `path`. Model files are not
    secrets: they get the umask's mode like any file a user writes (mkstemp's 0600 would keep
    a ROS node running as another user from reading them)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, umask_mode())
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def stable_safetensors_header(path: str | Path) -> None:
    """Rewrite a .safetensors header with its JSON keys sorted, in place.

    safetensors serialises the metadata map in hash order, which changes from save to save,
    so identical weights gave different bytes and file hashes could not name a model. The
    tensors' data offsets do not depend on the header, so only the header changes; a shorter
    header is padded with spaces as the format allows.
    """
    with open(path, "r+b") as handle:
        size = int.from_bytes(handle.read(8), "little")
        header = json.loads(handle.read(size))
        text = json.dumps(header, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
        data = text.encode()
        if len(data) > size:  # cannot happen for the same keys and values; be safe anyway
            raise ValueError(f"{path}: sorted safetensors header does not fit")
        handle.seek(8)
        handle.write(data + b" " * (size - len(data)))


def _save_stable(state: dict[str, torch.Tensor], path: str, metadata: dict[str, str]) -> None:
    from safetensors.torch import save_file

    save_file(state, path, metadata=metadata)
    stable_safetensors_header(path)


def _float32_cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to(torch.float32).contiguous().cpu() for k, v in state.items()}


def save_model(model, directory: str | Path) -> Path:  # type: ignore[no-untyped-def]
    """Write `directory`/model.safetensors + config.json (float32, contiguous)."""

    directory = Path(directory)
    config_json = model.config.to_json()
    state = _float32_cpu(model.state_dict())
    metadata = {"format": FORMAT_NAME, "config": config_json}
    _atomic_write(directory / WEIGHTS_FILE, lambda p: _save_stable(state, p, metadata))
    _atomic_write(directory / CONFIG_FILE, lambda p: Path(p).write_text(config_json + "\n"))
    return directory


def _read_config(path: Path) -> DAPConfig:
    try:
        return DAPConfig.from_json(path.read_text())
    except (json.JSONDecodeError, TypeError, ValueError) as err:
        raise ValueError(f"bad model config {path}: {err}") from err


def load_model(path: str | Path, map_location: str | torch.device = "cpu"):  # type: ignore[no-untyped-def]
    """Load a DAP from our directory, our .safetensors, or an official checkpoint."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"model not found: {path}")
    if path.is_dir():
        weights, config_path = path / WEIGHTS_FILE, path / CONFIG_FILE
    elif path.suffix == ".safetensors":
        weights, config_path = path, path.parent / CONFIG_FILE
    elif path.suffix in OFFICIAL_SUFFIXES:
        return load_official(path, map_location=map_location)
    else:
        raise ValueError(
            f"unknown model file type {path.name!r}: expected a directory, a .safetensors file "
            f"or an official checkpoint ({', '.join(OFFICIAL_SUFFIXES)})"
        )
    state, metadata = read_safetensors(weights, map_location)
    if is_official_state_dict(state):
        return load_official(state, map_location=map_location, source_name=str(weights))
    if config_path.is_file():
        config = _read_config(config_path)
    elif "config" in metadata:
        config = DAPConfig.from_json(metadata["config"])
    else:
        raise FileNotFoundError(f"no {CONFIG_FILE} beside {weights} and none in its metadata")
    with torch.device("meta"):
        model = DAP(config)
    source = str(weights)
    check_state_dict(model_shapes(model), state, source)
    check_finite(state, source)
    state = {k: v.float() if v.is_floating_point() else v for k, v in state.items()}
    assign_state_dict(model, state)
    return model.eval()


# ------------------------------------------------------- single mask heads
def save_mask_head(model, threshold_m: int, path: str | Path) -> Path:  # type: ignore[no-untyped-def]
    """One range-mask head as safetensors; metadata holds what must match when loading."""

    head = model.mask_head(threshold_m)
    state = _float32_cpu(head.state_dict())
    metadata = {
        "format": MASK_HEAD_FORMAT,
        "threshold_m": str(int(threshold_m)),
        "meaning": model.config.mask_head_meaning,
        "head": json.dumps(_head_signature(model.config)),
    }
    path = Path(path)
    _atomic_write(path, lambda p: _save_stable(state, p, metadata))
    return path


def _head_signature(config: DAPConfig) -> dict:
    return {
        "embed_dim": config.embed_dim,
        "head_features": config.head_features,
        "head_out_channels": list(config.head_out_channels),
        "head_hidden": config.head_hidden,
        "patch_size": config.patch_size,
        "adapter": config.adapter,
    }


def load_mask_head(model, threshold_m: int, path: str | Path) -> None:  # type: ignore[no-untyped-def]
    """Load one mask head into `model` (adding the head when the model lacks it)."""
    path = Path(path)
    state, metadata = read_safetensors(path, "cpu")
    if metadata.get("format") != MASK_HEAD_FORMAT:
        raise ValueError(f"{path} is not a DAP mask-head file (format {metadata.get('format')!r})")
    if int(metadata.get("threshold_m", -1)) != int(threshold_m):
        raise ValueError(
            f"{path} holds the {metadata.get('threshold_m')} m mask head, not {threshold_m} m"
        )
    if metadata.get("meaning") != model.config.mask_head_meaning:
        raise ValueError(
            f"{path} was trained as a '{metadata.get('meaning')}' head; this model's heads mean "
            f"'{model.config.mask_head_meaning}'"
        )
    signature = json.loads(metadata.get("head", "{}"))
    if signature != _head_signature(model.config):
        raise ValueError(
            f"{path} does not fit this model: head sizes {signature} vs "
            f"{_head_signature(model.config)}"
        )
    if mask_head_name(threshold_m) not in model.heads:
        model.add_mask_head(threshold_m)
    head = model.mask_head(threshold_m)
    check_state_dict({k: v.shape for k, v in head.state_dict().items()}, state, str(path))
    check_finite(state, str(path))
    head.load_state_dict(state, strict=True)
