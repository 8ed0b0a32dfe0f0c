"""Dual-fisheye 360° cameras: calibration files, ERP remapping with precomputed maps, seam blend.

Owns the calibration format (YAML, below), the remapper that turns one side-by-side image (or
two lens images) into an ERP panorama with one cv2.remap per frame plus a small blend of the
overlap band, the mask of ERP pixels no lens sees, and the inverse (ERP -> lens images) that
the simulated camera uses. Lens projection itself lives in dap_core.geometry
(`fisheye_project` / `fisheye_unproject`). No ROS here: the node, `dap predict` and `dap bag`
share it.

Calibration YAML (pixel coordinates in OpenCV's convention: the centre of pixel (0, 0) is at
(0, 0); angles in degrees where the key says so, else radians):

    source: where the numbers come from (free text, required)
    layout: side_by_side        # one image, lens 0 left half, lens 1 right half
            | two_images        # two images (two topics), lens 0 and lens 1
    image_size: [width, height] # of the whole image (side_by_side) or of each lens image;
                                # frames of another size with the same aspect are scaled
    blend_deg: 10.0             # width of the cross-fade, centred on the seam, where both
                                # lenses see (0 = hard seam)
    lenses:                     # exactly two
      - name: front
        centre: [cx, cy]        # principal point, pixels, in this lens's own image / half
        focal: 305.9            # pixels per radian at the centre, or instead
        radius: 480.0           #   the image radius (pixels) at θ = fov_deg / 2
        fov_deg: 195.0          # the lens's usable field of view
        model: equidistant      # | equisolid | kannala_brandt (then k: [k1, k2, k3, k4])
        rpy: [0.0, 0.0, 0.0]    # lens orientation in the panorama frame (REP 103, the lens
                                # looks along its +x): rear lens of a back-to-back pair = yaw π
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import torch

from dap_core.geometry import (
    FISHEYE_MODELS,
    fisheye_project,
    fisheye_unproject,
    pixel_rays,
    rays_to_pixel,
    rpy_to_matrix,
)

__all__ = [
    "LAYOUTS",
    "CalibrationError",
    "DualFisheyeCalibration",
    "FisheyeFrames",
    "FisheyeRemapper",
    "LensCalibration",
    "erp_to_fisheye",
    "load_calibration",
]

LAYOUTS = ("side_by_side", "two_images")
# Cross-faded pixels are blended in rectangles: _BAND rows high, joining column runs less
# than _JOIN_GAP apart (fewer, slightly larger rectangles: each costs two OpenCV calls).
_BAND = 16
_JOIN_GAP = 8


class CalibrationError(ValueError):
    """A calibration file that cannot be used; the message names the file and the key."""


@dataclass(frozen=True)
class LensCalibration:
    """One lens: principal point and focal in pixels of its own image, usable field of view
    (radians), projection model (+ Kannala-Brandt k) and its rotation into the panorama frame."""

    name: str
    centre: tuple[float, float]
    focal: float
    fov: float
    model: str
    k: tuple[float, ...]
    rotation: np.ndarray  # float64 [3, 3], p_pano = R p_lens

    def project(self, rays: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pixel coordinates [..., 2] in this lens's image and θ [...] of panorama rays."""
        return fisheye_project(rays, self.rotation, self.centre, self.focal, self.model, self.k)

    def unproject(self, pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return fisheye_unproject(pixels, self.rotation, self.centre, self.focal, self.model, self.k)

    def scaled(self, factor: float) -> LensCalibration:
        """The same lens in an image `factor` times as large (pixel-centre convention kept)."""
        cx, cy = self.centre
        centre = ((cx + 0.5) * factor - 0.5, (cy + 0.5) * factor - 0.5)
        return replace(self, centre=centre, focal=self.focal * factor)


@dataclass(frozen=True)
class DualFisheyeCalibration:
    """Two lenses and how their images arrive (`layout`, `lens_size` of each lens image)."""

    layout: str
    lens_size: tuple[int, int]  # (width, height) of one lens's image
    lenses: tuple[LensCalibration, LensCalibration]
    blend: float  # radians
    source: str

    @property
    def image_size(self) -> tuple[int, int]:
        """(width, height) of the incoming image: both halves, or one lens image."""
        w, h = self.lens_size
        return (2 * w, h) if self.layout == "side_by_side" else (w, h)

    def for_image(self, width: int, height: int) -> DualFisheyeCalibration:
        """This calibration for incoming images of `width` x `height` (same aspect, scaled)."""
        ref_w, ref_h = self.image_size
        if (width, height) == (ref_w, ref_h):
            return self
        if width * ref_h != height * ref_w or (self.layout == "side_by_side" and width % 2):
            raise CalibrationError(
                f"image {width}x{height} does not have the calibration's aspect {ref_w}x{ref_h}"
            )
        factor = width / ref_w
        lens_w = width // 2 if self.layout == "side_by_side" else width
        return replace(
            self,
            lens_size=(lens_w, height),
            lenses=tuple(lens.scaled(factor) for lens in self.lenses),
        )


def _need(table: dict, key: str, where: str):
    if key not in table:
        raise CalibrationError(f"{where}: missing '{key}'")
    return table[key]


def _numbers(value, count: int, where: str) -> tuple[float, ...]:
    if not isinstance(value, (list, tuple)) or len(value) != count:
        raise CalibrationError(f"{where}: expected a list of {count} numbers, got {value!r}")
    try:
        numbers = tuple(float(v) for v in value)
    except (TypeError, ValueError):
        raise CalibrationError(f"{where}: expected numbers, got {value!r}") from None
    if not all(math.isfinite(v) for v in numbers) or any(isinstance(v, bool) for v in value):
        raise CalibrationError(f"{where}: expected finite numbers, got {value!r}")
    return numbers


def _positive(value, where: str) -> float:
    number = _numbers([value], 1, where)[0]
    if number <= 0:
        raise CalibrationError(f"{where}: must be positive, got {value!r}")
    return number


def _lens(table, index: int, path: str) -> LensCalibration:
    where = f"{path}: lenses[{index}]"
    if not isinstance(table, dict):
        raise CalibrationError(f"{where}: expected a mapping")
    model = table.get("model", "equidistant")
    if model not in FISHEYE_MODELS:
        raise CalibrationError(
            f"{where}.model: '{model}' is not one of {', '.join(FISHEYE_MODELS)}"
        )
    k = _numbers(table.get("k", [0.0] * 4), 4, f"{where}.k") if model == "kannala_brandt" else ()
    fov_deg = _positive(_need(table, "fov_deg", where), f"{where}.fov_deg")
    if not 90.0 <= fov_deg <= 270.0:
        raise CalibrationError(f"{where}.fov_deg: {fov_deg} is not a fisheye field of view")
    fov = math.radians(fov_deg)
    if ("focal" in table) == ("radius" in table):
        raise CalibrationError(f"{where}: give exactly one of 'focal' and 'radius'")
    if "focal" in table:
        focal = _positive(table["focal"], f"{where}.focal")
    else:
        unit, _ = fisheye_project(
            np.array([[math.cos(fov / 2), 0.0, math.sin(fov / 2)]]),
            np.eye(3),
            (0.0, 0.0),
            1.0,
            model,
            k,
        )
        focal = _positive(table["radius"], f"{where}.radius") / float(np.hypot(*unit[0]))
    angles = np.linspace(0.0, fov / 2, 256)
    radii, _ = fisheye_project(
        np.stack([np.cos(angles), np.zeros_like(angles), np.sin(angles)], -1),
        np.eye(3),
        (0.0, 0.0),
        focal,
        model,
        k,
    )
    if not (np.diff(np.hypot(radii[:, 0], radii[:, 1])) > 0).all():
        raise CalibrationError(f"{where}: the lens model does not grow over its field of view")
    centre = _numbers(_need(table, "centre", where), 2, f"{where}.centre")
    rpy = _numbers(table.get("rpy", [0.0, 0.0, 0.0]), 3, f"{where}.rpy")
    name = str(table.get("name", f"lens{index}"))
    return LensCalibration(name, centre, focal, fov, model, k, rpy_to_matrix(*rpy))


def load_calibration(path: str | Path) -> DualFisheyeCalibration:
    """Read and check a dual-fisheye calibration YAML (CalibrationError names the problem)."""
    import yaml

    path = str(path)
    try:
        with open(path, encoding="utf-8") as handle:
            table = yaml.safe_load(handle)
    except OSError as err:
        raise CalibrationError(f"{path}: cannot read: {err.strerror or err}") from None
    except yaml.YAMLError as err:
        raise CalibrationError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(table, dict):
        raise CalibrationError(f"{path}: expected a mapping at the top level")
    layout = _need(table, "layout", path)
    if layout not in LAYOUTS:
        raise CalibrationError(f"{path}: layout '{layout}' is not one of {', '.join(LAYOUTS)}")
    source = str(_need(table, "source", path)).strip()
    width, height = (
        int(v) for v in _numbers(_need(table, "image_size", path), 2, f"{path}: image_size")
    )
    if width < 2 or height < 2 or (layout == "side_by_side" and width % 2):
        raise CalibrationError(f"{path}: image_size {width}x{height} is not usable for {layout}")
    lenses = _need(table, "lenses", path)
    if not isinstance(lenses, list) or len(lenses) != 2:
        raise CalibrationError(f"{path}: 'lenses' must list exactly two lenses")
    blend_deg = float(table.get("blend_deg", 10.0))
    if not 0.0 <= blend_deg <= 90.0:
        raise CalibrationError(f"{path}: blend_deg {blend_deg} is not in [0, 90]")
    lens_size = (width // 2, height) if layout == "side_by_side" else (width, height)
    return DualFisheyeCalibration(
        layout,
        lens_size,
        (_lens(lenses[0], 0, path), _lens(lenses[1], 1, path)),
        math.radians(blend_deg),
        source,
    )


def _erp_rays(height: int, width: int) -> np.ndarray:
    return pixel_rays(height, width, dtype=torch.float64).numpy()  # [H, W, 3]


def _lens_view(
    lens: LensCalibration, rays: np.ndarray, size: tuple[int, int]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(pixels [..., 2], seen bool [...], margin [...]) of panorama rays in one lens: `seen`
    where the ray is inside its field of view and its image, `margin` = fov / 2 − θ (radians,
    how far inside the field-of-view edge the ray lies)."""
    width, height = size
    pixels, theta = lens.project(rays)
    margin = lens.fov / 2 - theta
    with np.errstate(invalid="ignore"):  # NaN θ (no inverse) is not seen
        seen = (
            (margin >= 0)
            & (pixels[..., 0] >= -0.5)
            & (pixels[..., 0] <= width - 0.5)
            & (pixels[..., 1] >= -0.5)
            & (pixels[..., 1] <= height - 0.5)
        )
    return pixels, seen, margin


def _lens0_share(seen0, seen1, margin0, margin1, blend: float) -> np.ndarray:
    """Lens 0's weight in [0, 1] per ray: 1 where only it sees, 0 where only lens 1 does;
    where both see, a cross-fade `blend` radians wide centred on the seam (the rays equally
    far inside both fields of view), lens 0 winning ties with blend 0 (a hard seam)."""
    # gap > 0: deeper inside lens 0. Across the seam of back-to-back lenses it changes by 2
    # per radian (one margin grows as the other shrinks), hence the 2 * blend.
    gap = np.where(seen0 & seen1, margin0 - margin1, 0.0)
    hard = (gap >= 0).astype(np.float64)
    fade = np.clip(0.5 + gap / (2 * blend), 0.0, 1.0) if blend > 0 else hard
    return np.where(seen0 & seen1, fade, seen0.astype(np.float64))


def _column_runs(columns: np.ndarray, gap: int) -> list[tuple[int, int]]:
    """[start, end) runs of sorted column indices, joining runs less than `gap` apart."""
    breaks = np.flatnonzero(np.diff(columns) > gap)
    starts = np.r_[columns[0], columns[breaks + 1]]
    ends = np.r_[columns[breaks], columns[-1]] + 1
    return list(zip(starts.tolist(), ends.tolist(), strict=True))


@dataclass(frozen=True)
class _Box:
    """One rectangle of the ERP holding cross-faded pixels (rows, cols) and where it lies in
    the packed canvases (rows, cols)."""

    erp: tuple[slice, slice]
    canvas: tuple[slice, slice]


class FisheyeRemapper:
    """Dual-fisheye image(s) -> ERP panorama [H, W] with maps built once.

    Every seen ERP pixel reads its primary lens (the one with the larger weight) in one
    cv2.remap over the whole panorama. The cross-faded pixels (both lenses see, within
    `blend` of the seam: about 15 % of the ERP for 195° lenses) are covered by rectangles
    (_BAND rows high, one per run of columns), packed side by side into a small canvas: a
    second cv2.remap reads the secondary lens there, the primary's pixels are copied there,
    and the cross-fade runs once over the canvas with weights precomputed at start (the
    primary's weight is 1 where a rectangle holds a pixel that is not faded). For uint8
    images the fade is fixed point (cv2.multiply by weights in 1/255 steps, cv2.add): within
    1.5 levels of the exact blend (two roundings of at most half a level, and the weight
    rounded to 1/255 moves the result by at most half a level), and exact outside the fade.
    `unseen` marks ERP pixels no lens sees (their colour is 0; the node publishes NaN range).
    Two-image input is placed side by side first (one copy), so both layouts share the path.
    """

    def __init__(self, calibration: DualFisheyeCalibration, height: int, width: int) -> None:
        if width != 2 * height or height < 2:
            raise ValueError(f"ERP size must be W = 2H, got {height}x{width}")
        self.calibration = calibration
        self.height, self.width = height, width
        lens_w, lens_h = calibration.lens_size
        rays = _erp_rays(height, width)
        (px0, seen0, m0), (px1, seen1, m1) = (
            _lens_view(lens, rays, (lens_w, lens_h)) for lens in calibration.lenses
        )
        px1[..., 0] += lens_w  # lens 1 sits in the right half
        share0 = _lens0_share(seen0, seen1, m0, m1, calibration.blend)
        primary_is_1 = share0 < 0.5
        self.primary_is_lens1 = primary_is_1  # bool [H, W]
        self.unseen = ~(seen0 | seen1)  # bool [H, W]
        primary = np.where(primary_is_1[..., None], px1, px0).astype(np.float32)
        primary[self.unseen] = -1e4  # outside the source: the border colour 0
        self._map1, self._map2 = cv2.convertMaps(primary[..., 0], primary[..., 1], cv2.CV_16SC2)
        faded = (share0 > 0) & (share0 < 1)
        self.overlap = np.flatnonzero(faded)  # flat ERP indices cross-faded
        share = np.maximum(share0, 1.0 - share0).astype(np.float32)  # the primary's weight
        self._share = share  # [H, W]
        secondary = np.where(primary_is_1[..., None], px0, px1).astype(np.float32)
        self._boxes, canvas_map, weight = self._pack(faded, share, secondary)
        self._canvas_maps = (
            cv2.convertMaps(canvas_map[..., 0], canvas_map[..., 1], cv2.CV_16SC2)
            if self._boxes
            else None
        )
        self._weight = weight  # float32 [rows, W]: the primary's weight on the canvas
        self._weight8 = np.rint(weight * 255).astype(np.uint8)  # the same in 1/255 steps
        self._canvases: dict = {}  # (shape, dtype) -> canvases and weights for that input
        self._joined: np.ndarray | None = None
        for array in (self.unseen, self.overlap, self.primary_is_lens1):
            array.setflags(write=False)

    def _pack(
        self, faded: np.ndarray, share: np.ndarray, secondary: np.ndarray
    ) -> tuple[list[_Box], np.ndarray, np.ndarray]:
        """Rectangles covering the faded pixels, packed in shelves _BAND rows high into a
        canvas as wide as the ERP; the canvas's secondary-lens map [rows, W, 2] and the
        primary's weight there [rows, W]."""
        boxes, placed = [], []
        x = y = 0
        for top in range(0, self.height, _BAND):
            bottom = min(top + _BAND, self.height)
            columns = np.flatnonzero(faded[top:bottom].any(axis=0))
            if not columns.size:
                continue
            for left, right in _column_runs(columns, _JOIN_GAP):
                if x + right - left > self.width:  # next shelf
                    x, y = 0, y + _BAND
                placed.append(((top, bottom, left, right), (y, x)))
                x += right - left
        rows_needed = y + _BAND if placed else 0
        canvas_map = np.full((rows_needed, self.width, 2), -1e4, np.float32)
        weight = np.ones((rows_needed, self.width), np.float32)
        for (top, bottom, left, right), (row, col) in placed:
            rows = slice(row, row + bottom - top)
            cols = slice(col, col + right - left)
            canvas_map[rows, cols] = secondary[top:bottom, left:right]
            box = (slice(top, bottom), slice(left, right))
            weight[rows, cols] = np.where(faded[box], share[box], 1.0)
            boxes.append(_Box(box, (rows, cols)))
        return boxes, canvas_map, weight

    @property
    def primary_share(self) -> np.ndarray:
        """float32 [N]: the primary lens's weight in each overlap pixel (0.5 on the seam)."""
        return self._share.ravel()[self.overlap]

    @property
    def primary_maps(self) -> tuple[np.ndarray, np.ndarray]:
        """The fixed-point cv2.remap maps of the primary lens (e.g. for a bare-remap peer)."""
        return self._map1, self._map2

    @property
    def input_size(self) -> tuple[int, int]:
        return self.calibration.image_size

    def _source(self, images: tuple[np.ndarray, ...]) -> np.ndarray:
        lens_w, lens_h = self.calibration.lens_size
        expected = (
            (lens_h, 2 * lens_w) if self.calibration.layout == "side_by_side" else (lens_h, lens_w)
        )
        wanted = 1 if self.calibration.layout == "side_by_side" else 2
        if len(images) != wanted:
            raise ValueError(
                f"{self.calibration.layout} takes {wanted} image(s), got {len(images)}"
            )
        for image in images:
            if image.shape[:2] != expected:
                raise ValueError(
                    f"fisheye image {image.shape[1]}x{image.shape[0]}, calibration expects"
                    f" {expected[1]}x{expected[0]}"
                )
        if len(images) == 1:
            return images[0]
        shape = (lens_h, 2 * lens_w, *images[0].shape[2:])
        if (
            self._joined is None
            or self._joined.shape != shape
            or self._joined.dtype != images[0].dtype
        ):
            self._joined = np.empty(shape, images[0].dtype)
        self._joined[:, :lens_w] = images[0]
        self._joined[:, lens_w:] = images[1]
        return self._joined

    def remap(self, *images: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """ERP [H, W, C] (the input's dtype) from one side-by-side image or two lens images."""
        source = self._source(images)
        erp = cv2.remap(
            source,
            self._map1,
            self._map2,
            cv2.INTER_LINEAR,
            dst=out,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        if not self._boxes:
            return erp
        mine, other, w_mine, w_other = self._canvases_for(source, erp.dtype)
        cv2.remap(
            source,
            *self._canvas_maps,
            cv2.INTER_LINEAR,
            dst=other,
            borderMode=cv2.BORDER_CONSTANT,
            borderValue=0,
        )
        for box in self._boxes:
            mine[box.canvas] = erp[box.erp]
        if erp.dtype == np.uint8:
            cv2.multiply(mine, w_mine, dst=mine, scale=1 / 255)
            cv2.multiply(other, w_other, dst=other, scale=1 / 255)
            cv2.add(mine, other, dst=mine)
        else:
            blended = mine * w_mine + other * w_other
            if np.issubdtype(erp.dtype, np.integer):
                blended = np.rint(blended)
            mine[...] = blended.astype(erp.dtype)
        for box in self._boxes:
            erp[box.erp] = mine[box.canvas]
        return erp

    def _canvases_for(self, source: np.ndarray, dtype: np.dtype) -> tuple[np.ndarray, ...]:
        """(primary canvas, secondary canvas, their weights) shaped like the input's pixels:
        uint8 weights in 1/255 steps for uint8 images, float32 otherwise; built once each."""
        channels = source.shape[2:]
        key = (channels, np.dtype(dtype))
        if key not in self._canvases:
            shape = (*self._weight.shape, *channels)
            weight = self._weight8 if dtype == np.uint8 else self._weight
            if channels:
                weight = np.repeat(weight[..., None], channels[0], axis=-1)
            other = (255 - weight) if dtype == np.uint8 else (1 - weight)
            self._canvases[key] = (np.zeros(shape, dtype), np.zeros(shape, dtype), weight, other)
        return self._canvases[key]


class FisheyeFrames:
    """Dual-fisheye frames of one calibration file -> (ERP RGB [h, 2h, 3], unseen bool [h, 2h]).

    The node, `dap predict` and `dap bag` take frames through this: the calibration is read
    once (CalibrationError: one line), the remapper is built for the first frame size and kept
    (rebuilt only if the camera changes resolution). side_by_side takes one image per frame,
    two_images the two lens images.
    """

    def __init__(self, path: str | Path, erp_height: int) -> None:
        self.calibration = load_calibration(path)
        self.erp_height = erp_height
        self._remapper: FisheyeRemapper | None = None
        self._size: tuple[int, int] | None = None

    @property
    def two_images(self) -> bool:
        """True when the lenses arrive as two images (two topics, two files)."""
        return self.calibration.layout == "two_images"

    def to_erp(self, *rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """ERP of one frame; ValueError (CalibrationError) for a size the file cannot serve."""
        wanted = 2 if self.two_images else 1
        if len(rgb) != wanted:
            raise ValueError(f"{self.calibration.layout} takes {wanted} image(s), got {len(rgb)}")
        sizes = {(image.shape[1], image.shape[0]) for image in rgb}
        if len(sizes) > 1:
            a, b = ((image.shape[1], image.shape[0]) for image in rgb)
            raise ValueError(f"lens images differ in size: {a[0]}x{a[1]} and {b[0]}x{b[1]}")
        size = sizes.pop()
        if size != self._size:
            calibration = self.calibration.for_image(*size)
            self._remapper = FisheyeRemapper(calibration, self.erp_height, 2 * self.erp_height)
            self._size = size
        return self._remapper.remap(*rgb), self._remapper.unseen


def erp_to_fisheye(
    erp: np.ndarray,
    calibration: DualFisheyeCalibration,
    interpolation: int = cv2.INTER_LINEAR,
    outside: float = 0.0,
) -> tuple[np.ndarray, ...]:
    """What the two lenses see of an ERP panorama [H, W, ...] (e.g. a simulator's render).

    Returns (side_by_side_image,) or (lens0, lens1) per the layout, in the ERP's dtype;
    pixels beyond a lens's field of view get `outside`. The simulated camera renders through
    this, so its dual-fisheye frames come from the same scene as its ERP frames.
    """
    height, width = erp.shape[:2]
    lens_w, lens_h = calibration.lens_size
    v, u = np.mgrid[0:lens_h, 0:lens_w].astype(np.float64)
    pixels = np.stack([u, v], axis=-1)
    views = []
    for lens in calibration.lenses:
        rays, theta = lens.unproject(pixels)
        uv = rays_to_pixel(rays, height, width)  # ERP coordinates, centres on k + 0.5
        map_x = (uv[..., 0] - 0.5).astype(np.float32)
        map_y = np.clip(uv[..., 1] - 0.5, 0.0, height - 1.0).astype(np.float32)
        view = cv2.remap(erp, map_x, map_y, interpolation, borderMode=cv2.BORDER_WRAP)
        hidden = ~(theta <= lens.fov / 2)  # NaN θ (no inverse) is hidden too
        view[hidden] = outside
        views.append(view)
    if calibration.layout == "side_by_side":
        return (np.concatenate(views, axis=1),)
    return tuple(views)
