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

Every write is atomic (dap_core.files.atomic_write): a reader, or a full disk, sees the previous
file or the whole new one, never a partial file under the final name.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from io import BytesIO
from pathlib import Path

import numpy as np

from dap_core.files import atomic_write_bytes

MM_PER_M = 1000.0
PNG16_INVALID = 0
PNG16_MAX = np.iinfo(np.uint16).max  # 65535 mm: "at or beyond 65.535 m"
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp")


def _check_range(range_m: np.ndarray) -> np.ndarray:
    range_m = np.asarray(range_m)
    if range_m.ndim != 2:
        raise ValueError(f"range map must be [H, W], got shape {range_m.shape}")
    return range_m.astype(np.float32, copy=False)


def _serialised(write) -> bytes:
    """The bytes `write(handle)` produces, built in memory.

    numpy and plyfile write real files with `tofile`, whose short write on a full disk is an
    OSError without errno ("N requested and M written"); one buffered write of the finished
    bytes fails with ENOSPC instead, which names the cause.
    """
    buffer = BytesIO()
    write(buffer)
    return buffer.getvalue()


def save_image(path: str | Path, image: np.ndarray) -> None:
    """An image (BGR / grey, as OpenCV takes it) encoded by the file's suffix, atomically."""
    import cv2

    path = Path(path)

    ok, encoded = cv2.imencode(path.suffix or ".png", image)
    if not ok:
        raise ValueError(f"could not encode image {path}")
    atomic_write_bytes(path, encoded.tobytes())


def read_rgb(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3] (grey and alpha images are converted)."""
    import cv2

    path = Path(path)
    bgr = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if bgr is None:
        raise ValueError(f"cannot read image {path} (missing, or not an image OpenCV can decode)")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def read_panorama(path: str | Path) -> np.ndarray:
    """An image file as uint8 RGB [H, W, 3], refusing truncated or corrupt files.

    Decoded with Pillow, whose decoders raise on a truncated or damaged stream where OpenCV
    only prints a libjpeg warning and fills the missing rows with grey. Grey, palette, alpha
    and CMYK images are converted to RGB (alpha is dropped, as OpenCV does); 16-bit images
    keep their 8 most significant bits; the EXIF orientation is applied, as OpenCV does.
    """
    from PIL import Image, ImageOps, UnidentifiedImageError

    path = Path(path)
    try:
        with Image.open(path) as image:
            image.load()
            image = ImageOps.exif_transpose(image)
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):
                grey = np.asarray(image)
                if grey.dtype != np.uint8:
                    grey = (np.clip(grey, 0, 65535).astype(np.uint32) >> 8).astype(np.uint8)
                return np.ascontiguousarray(np.repeat(grey[..., None], 3, axis=2))
            if mode == "F":
                raise ValueError(f"{path}: a floating-point image is not a photo (mode F)")
            return np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.uint8))
    except FileNotFoundError as err:
        raise ValueError(f"{path}: no such file") from err
    except UnidentifiedImageError as err:
        raise ValueError(f"{path}: not an image Pillow can decode") from err
    except (OSError, SyntaxError) as err:  # truncated / corrupt stream
        raise ValueError(f"{path}: corrupt or truncated image ({err})") from err
    except Image.DecompressionBombError as err:
        raise ValueError(f"{path}: {err}") from err


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


def save_npy(path: str | Path, array: np.ndarray) -> None:
    """A numpy array as .npy, atomically."""
    atomic_write_bytes(Path(path), _serialised(lambda handle: np.save(handle, array)))


def save_range_npy(path: str | Path, range_m: np.ndarray) -> None:
    save_npy(path, _check_range(range_m))


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
    save_image(path, range_to_png16(range_m))


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


def save_mask_png(path: str | Path, probability: np.ndarray) -> None:
    """One mask as an 8-bit PNG (255 = certainly within the threshold)."""
    save_image(path, mask_to_png8(probability))


def save_mask_pngs(directory: str | Path, stem: str, masks: Mapping[int, np.ndarray]) -> list[Path]:
    """One PNG per threshold: `<stem>_within_<T>m.png`. Returns the paths written."""
    written = []
    for threshold, probability in sorted(masks.items()):
        path = Path(directory) / f"{stem}_within_{threshold}m.png"
        save_image(path, mask_to_png8(probability))
        written.append(path)
    return written


def preview_scale(range_m: np.ndarray, max_range_m: float, percentile: float = 98.0) -> float:
    """The far end of a preview's colour scale: the image's own `percentile` of finite range,
    rounded up to 1, 1.5, 2, 3, 4, 5, 6 or 8 x 10^k metres and capped at `max_range_m`.

    A fixed 0-100 m scale paints every room one colour; the image's own percentile shows its
    structure, and the colour bar says which scale was used.
    """
    finite = np.asarray(range_m)[np.isfinite(range_m)]
    finite = finite[finite > 0]
    if finite.size == 0:
        return float(max_range_m)
    top = float(np.percentile(finite, percentile))
    exponent = np.floor(np.log10(max(top, 1e-3)))
    for step in (1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 6.0, 8.0, 10.0):
        nice = step * 10.0**exponent
        if nice >= top:
            break
    return float(min(nice, max_range_m))


def save_colorized(path: str | Path, range_m: np.ndarray, max_range_m: float) -> None:
    """Colourised range from 0 to `max_range_m` metres with a labelled colour bar (PNG)."""
    import cv2

    from dap_core.visualize import add_colorbar, colorize_range

    rgb = add_colorbar(colorize_range(_check_range(range_m), max_range_m), max_range_m)
    save_image(path, cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


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
    ply = PlyData([PlyElement.describe(vertex, "vertex")], text=False)
    atomic_write_bytes(Path(path), _serialised(ply.write))
    return len(points)


def ply_stride_for(shape: tuple[int, int], max_points: int) -> int:
    """The smallest row/column stride whose grid over an [H, W] map has <= max_points pixels."""
    if max_points < 1:
        raise ValueError(f"a PLY point budget must be >= 1, got {max_points}")
    height, width = shape
    stride = max(1, int(np.floor(np.sqrt(height * width / max_points))))
    while -(-height // stride) * -(-width // stride) > max_points:
        stride += 1
    return stride
