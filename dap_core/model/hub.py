"""Download, verify and convert the released DAP checkpoint into the local cache.

The released `model.pth` (Hugging Face hub, Insta360-Research/DAP-weights) is fetched with
huggingface_hub, its size and SHA-256 are checked, and it is converted once to our format under
`<cache>/dap_official_vitl/` (model.safetensors + config.json). The cache is
$DAP_ROS_CACHE, else $XDG_CACHE_HOME/dap_ros, else ~/.cache/dap_ros.
"""

from __future__ import annotations

import os
from pathlib import Path

from dap_core.files import sha256_file
from dap_core.model import official, save_model
from dap_core.model.checkpoint import CONFIG_FILE, WEIGHTS_FILE

OFFICIAL_DIR_NAME = "dap_official_vitl"
_HASH_CHUNK = 16 << 20


def default_cache_dir() -> Path:
    if os.environ.get("DAP_ROS_CACHE"):
        return Path(os.environ["DAP_ROS_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dap_ros"


def download_checkpoint(cache_dir: Path, revision: str = "main") -> Path:
    """Fetch the released model.pth with huggingface_hub (resumes; hub cache under cache_dir)."""
    from huggingface_hub import hf_hub_download

    try:
        return Path(
            hf_hub_download(
                repo_id=official.OFFICIAL_HUB_REPO,
                filename=official.OFFICIAL_FILENAME,
                revision=revision,
                cache_dir=str(cache_dir / "hub"),
            )
        )
    except Exception as err:  # network, auth, missing file: all end the same way for a user
        url = (
            f"https://huggingface.co/{official.OFFICIAL_HUB_REPO}/resolve/{revision}/"
            f"{official.OFFICIAL_FILENAME}"
        )
        raise RuntimeError(
            f"could not download {url}: {err}. Fetch it by hand, then run "
            f"`dap convert official model.pth OUT_DIR`"
        ) from err


def verify_checkpoint(path: Path, size: int | None = None, sha256: str | None = None) -> None:
    """Raise ValueError unless the file has the released size and SHA-256."""
    size = official.OFFICIAL_SIZE_BYTES if size is None else size
    sha256 = official.OFFICIAL_SHA256 if sha256 is None else sha256
    actual = path.stat().st_size
    if actual != size:
        raise ValueError(
            f"{path} has {actual} bytes, the released checkpoint has {size}: incomplete or "
            f"different file (delete it and download again)"
        )
    digest = sha256_file(path, _HASH_CHUNK)
    if digest != sha256:
        raise ValueError(f"{path}: SHA-256 {digest} differs from the release {sha256}")


def install_official(
    checkpoint: Path, out_dir: Path, layer_indices: tuple[int, ...] | None = None
) -> Path:
    """Convert an official checkpoint to our format in out_dir (strict key checks)."""
    model = official.load_official(checkpoint, layer_indices=layer_indices)
    return save_model(model, out_dir)


def fetch_official_weights(
    cache_dir: Path | None = None,
    *,
    force: bool = False,
    revision: str = "main",
    layer_indices: tuple[int, ...] | None = None,
) -> Path:
    """The directory of the converted released model, downloading and converting if needed."""
    cache_dir = default_cache_dir() if cache_dir is None else Path(cache_dir)
    out_dir = cache_dir / OFFICIAL_DIR_NAME
    if not force and (out_dir / WEIGHTS_FILE).is_file() and (out_dir / CONFIG_FILE).is_file():
        return out_dir
    checkpoint = download_checkpoint(cache_dir, revision)
    verify_checkpoint(checkpoint)
    return install_official(checkpoint, out_dir, layer_indices)
