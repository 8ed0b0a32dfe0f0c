"""RGB uint8 panoramas -> the float tensor DAP expects. The caller moves it to a device.

Modes:
- "default": resize to `config.input_size`, scale to [0, 1], ImageNet mean/std when
  `config.normalize` (the official evaluation/training convention, spec §5.1).
- "official_infer": the official `test/infer.py` (spec §5.2): /255 in float32, no
  normalization, native size (the model floors outputs to multiples of 16).
"""

from __future__ import annotations

import numpy as np
import torch

from dap_core.model.config import DAPConfig

MODES = ("default", "official_infer")
INTERPOLATIONS = ("auto", "cubic", "area", "linear")


def preprocess(
    rgb: np.ndarray,
    config: DAPConfig,
    mode: str = "default",
    interpolation: str = "auto",
) -> torch.Tensor:
    """rgb uint8 [H, W, 3] or [B, H, W, 3] (RGB order) -> float32 [B, 3, h, w] on the CPU.

    `interpolation` (default mode only): "cubic" is the official dataset resize (cv2
    INTER_CUBIC on uint8); "area" avoids aliasing when shrinking; "auto" uses area when both
    sides shrink, cubic otherwise.
    """
    batch = _as_batch(rgb)
    if mode == "official_infer":
        return torch.from_numpy(batch.astype(np.float32) / np.float32(255)).permute(0, 3, 1, 2)
    if mode != "default":
        raise ValueError(f"unknown preprocess mode {mode!r}; choose from {MODES}")
    if interpolation not in INTERPOLATIONS:
        raise ValueError(f"unknown interpolation {interpolation!r}; choose from {INTERPOLATIONS}")
    height, width = config.input_size
    if batch.shape[1:3] != (height, width):
        batch = np.stack([_resize(img, height, width, interpolation) for img in batch])
    # float64 arithmetic, rounded once to float32 (as the official fixtures were made).
    x = batch.astype(np.float64) / 255.0
    if config.normalize:
        x = (x - np.asarray(config.mean)) / np.asarray(config.std)
    return torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))


def _as_batch(rgb: np.ndarray) -> np.ndarray:
    if not isinstance(rgb, np.ndarray):
        raise ValueError(f"expected a numpy uint8 RGB image, got {type(rgb).__name__}")
    if rgb.dtype != np.uint8:
        raise ValueError(f"expected uint8 RGB pixels, got dtype {rgb.dtype}")
    if rgb.ndim == 3:
        rgb = rgb[None]
    if rgb.ndim != 4 or rgb.shape[-1] != 3:
        raise ValueError(f"expected an RGB image [H, W, 3] or batch [B, H, W, 3], got {rgb.shape}")
    if rgb.shape[0] == 0 or rgb.shape[1] == 0 or rgb.shape[2] == 0:
        raise ValueError(f"empty image batch {rgb.shape}")
    return rgb


def _resize(img: np.ndarray, height: int, width: int, interpolation: str) -> np.ndarray:
    import cv2

    if interpolation == "auto":
        shrink = img.shape[0] >= height and img.shape[1] >= width
        interpolation = "area" if shrink else "cubic"
    flag = {"cubic": cv2.INTER_CUBIC, "area": cv2.INTER_AREA, "linear": cv2.INTER_LINEAR}
    return cv2.resize(img, (width, height), interpolation=flag[interpolation])
