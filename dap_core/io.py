"""Reading panoramas and writing predictions to disk.

Formats written for a range map (metres, float32 [H, W], +inf = sky / beyond, NaN = invalid):
- `.npy`: the float32 range itself, unchanged (the lossless format).
- 16-bit PNG in millimetres: 0 = invalid (NaN), 65535 = at or beyond 65.535 m (+inf included);
  ranges are rounded to the nearest millimetre. 16 bits cannot hold DAP's 100 m scale, so
  far pixels saturate: use the .npy when they matter.
- colourised PNG with a labelled colour bar (dap_core.visualize).
- mask PNGs: 8-bit probability that the range is within T metres (255 = 1.0).
- PLY point cloud (binary, via plyfile): x, y, z float32 metres in the project's REP 103 frame
  (x forward = the image's centre column, y left, z up) and the pixel colour; non-finite
  ranges are left out.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path

import numpy as np

MM_PER_M = 1000.0
PNG16_INVALID = 0
PNG16_MAX = np.iinfo(np.uint16).max  # 65535 mm: "at or beyond 65.535 m"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _check_range(range_m: np.ndarray) -> np.ndarray:
    range_m = np.asarray(range_m)
    if range_m.ndim != 2:
        raise ValueError(f"range map must be [H, W], got shape {range_m.shape}")
    return range_m.astype(np.float32, copy=False)


def _imwrite(path: Path, image: np.ndarray) -> None:
    import cv2

    path.parent.mkdir(parents=True, exist_ok=True)
    if not cv2.imwrite(str(path), image):
        raise OSError(f"could not write image {path}")


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3] (grey and alpha images are converted)."""
    import cv2

    path = Path(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path} (missing, or not an image OpenCV can decode)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def list_images(path: str | Path) -> list[Path]:
    """The image itself, or every image directly inside a directory (sorted by name)."""
    path = Path(path)
    if path.is_file():
        return [path]
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise FileNotFoundError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {path}")
        return found
    raise FileNotFoundError(f"no such image or directory: {path}")


def iter_images(paths: list[Path]) -> Iterator[tuple[Path, np.ndarray]]:
    for path in paths:
        yield path, read_rgb(path)


def save_range_npy(path: str | Path, range_m: np.ndarray) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    np.save(path, _check_range(range_m))


def range_to_png16(range_m: np.ndarray) -> np.ndarray:
    """Range metres -> uint16 millimetres (0 = NaN, 65535 = at or beyond 65.535 m)."""
    range_m = _check_range(range_m)
    if np.any(range_m < 0):
        raise ValueError("range map has negative values; range is a distance, metres >= 0")
    mm = np.rint(np.nan_to_num(range_m, nan=0.0, posinf=np.inf) * MM_PER_M)
    out = np.minimum(mm, PNG16_MAX).astype(np.uint16)
    out[np.isnan(range_m)] = PNG16_INVALID
    return out


def png16_to_range(mm: np.ndarray) -> np.ndarray:
    """uint16 millimetres -> float32 metres (0 -> NaN, 65535 -> +inf)."""
    mm = np.asarray(mm)
    if mm.dtype != np.uint16:
        raise ValueError(f"expected a uint16 millimetre image, got {mm.dtype}")
    out = mm.astype(np.float32) / np.float32(MM_PER_M)
    out[mm == PNG16_INVALID] = np.nan
    out[mm == PNG16_MAX] = np.inf
    return out


def save_range_png16(path: str | Path, range_m: np.ndarray) -> None:
    _imwrite(Path(path), range_to_png16(range_m))


def read_range_png16(path: str | Path) -> np.ndarray:
    import cv2

    mm = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if mm is None:
        raise ValueError(f"cannot read 16-bit range PNG {path}")
    return png16_to_range(mm)


def mask_to_png8(probability: np.ndarray) -> np.ndarray:
    """Probability [H, W] in [0, 1] -> uint8 (rounded; 255 = certainly within T)."""
    probability = np.asarray(probability, np.float32)
    if probability.ndim != 2:
        raise ValueError(f"mask must be [H, W], got shape {probability.shape}")
    return np.rint(np.clip(np.nan_to_num(probability, nan=0.0), 0.0, 1.0) * 255).astype(np.uint8)


def save_mask_pngs(directory: str | Path, stem: str, masks: Mapping[int, np.ndarray]) -> list[Path]:
    """One PNG per threshold: `<stem>_within_<T>m.png`. Returns the paths written."""
    written = []
    for threshold, probability in sorted(masks.items()):
        path = Path(directory) / f"{stem}_within_{threshold}m.png"
        _imwrite(path, mask_to_png8(probability))
        written.append(path)
    return written


def save_colorized(path: str | Path, range_m: np.ndarray, max_range_m: float) -> None:
    """Colourised range with a labelled colour bar (RGB written as an ordinary PNG)."""
    import cv2

    from dap_core.visualize import add_colorbar, colorize_range

    rgb = add_colorbar(colorize_range(_check_range(range_m), max_range_m), max_range_m)
    _imwrite(Path(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def range_to_cloud(
    range_m: np.ndarray, rgb: np.ndarray | None = None, stride: int = 1
) -> tuple[np.ndarray, np.ndarray | None]:
    """Finite points [N, 3] float32 (metres, REP 103 frame) and their colours [N, 3] uint8.

    `stride` keeps every stride-th row and column; the rays are those of the kept pixel
    centres, so subsampling never moves a point.
    """
    from dap_core.geometry import range_to_points

    range_m = _check_range(range_m)
    if stride < 1:
        raise ValueError(f"stride must be >= 1, got {stride}")
    points = range_to_points(range_m)  # [H, W, 3]
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (*range_m.shape, 3) or rgb.dtype != np.uint8:
            raise ValueError(
                f"rgb must be uint8 [H, W, 3] matching the range map {range_m.shape}, "
                f"got {rgb.dtype} {rgb.shape}"
            )
    keep = np.isfinite(range_m)
    if stride > 1:
        grid = np.zeros_like(keep)
        grid[::stride, ::stride] = True
        keep &= grid
    colours = None if rgb is None else rgb[keep]
    return points[keep].astype(np.float32), colours


def save_ply(
    path: str | Path, range_m: np.ndarray, rgb: np.ndarray | None = None, stride: int = 1
) -> int:
    """Write a binary PLY of the finite points; returns the number of points written."""
    from plyfile import PlyData, PlyElement

    points, colours = range_to_cloud(range_m, rgb, stride)
    fields = [("x", "f4"), ("y", "f4"), ("z", "f4")]
    if colours is not None:
        fields += [("red", "u1"), ("green", "u1"), ("blue", "u1")]
    vertex = np.empty(len(points), dtype=fields)
    vertex["x"], vertex["y"], vertex["z"] = points.T
    if colours is not None:
        vertex["red"], vertex["green"], vertex["blue"] = colours.T
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    PlyData([PlyElement.describe(vertex, "vertex")], text=False).write(str(path))
    return len(points)
