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
    blend_deg: 10.0             # width of the cross-fade where both lenses see (0 = hard seam)
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
    "FisheyeRemapper",
    "LensCalibration",
    "erp_to_fisheye",
    "load_calibration",
]

LAYOUTS = ("side_by_side", "two_images")
_ROW = 4096  # overlap pixels per row of the secondary map


def flat_channels(image: np.ndarray) -> int:
    return 1 if image.ndim == 2 else image.shape[2]


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


def _lens_weights(
    lens: LensCalibration, pixels: np.ndarray, theta: np.ndarray, size, blend: float
) -> np.ndarray:
    """Blend weight in [0, 1] of a lens for each ray: 0 outside its field of view or image,
    rising linearly over `blend` radians inside its field-of-view edge."""
    width, height = size
    inside = (
        (theta <= lens.fov / 2)
        & (pixels[..., 0] >= -0.5)
        & (pixels[..., 0] <= width - 0.5)
        & (pixels[..., 1] >= -0.5)
        & (pixels[..., 1] <= height - 0.5)
    )
    ramp = np.clip((lens.fov / 2 - theta) / blend, 0.0, 1.0) if blend > 0 else np.ones_like(theta)
    return np.where(inside, np.maximum(ramp, 1e-9), 0.0)


class FisheyeRemapper:
    """Dual-fisheye image(s) -> ERP panorama [H, W] with maps built once.

    Every seen ERP pixel reads its primary lens (the one with the larger weight) in one
    cv2.remap over the whole panorama; the pixels where both lenses see and the secondary
    one has weight (the overlap band, a few percent) read it too, through a second remap of
    only those pixels, and are cross-faded. `unseen` marks ERP pixels no lens sees (their
    colour is 0; the node publishes NaN range there).
    Two-image input is placed side by side first (one copy), so both layouts share the path.
    """

    def __init__(self, calibration: DualFisheyeCalibration, height: int, width: int) -> None:
        if width != 2 * height or height < 2:
            raise ValueError(f"ERP size must be W = 2H, got {height}x{width}")
        self.calibration = calibration
        self.height, self.width = height, width
        lens_w, lens_h = calibration.lens_size
        rays = _erp_rays(height, width)
        coords, weights = [], []
        for index, lens in enumerate(calibration.lenses):
            pixels, theta = lens.project(rays)
            weights.append(_lens_weights(lens, pixels, theta, (lens_w, lens_h), calibration.blend))
            pixels[..., 0] += index * lens_w  # lens 1 sits in the right half
            coords.append(pixels)
        w0, w1 = weights
        primary_is_1 = w1 > w0
        self.primary_is_lens1 = primary_is_1  # bool [H, W]
        total = w0 + w1
        self.unseen = total <= 0.0  # bool [H, W]
        primary = np.where(primary_is_1[..., None], coords[1], coords[0]).astype(np.float32)
        primary[self.unseen] = -1e4  # outside the source: the border colour 0
        self._map1, self._map2 = cv2.convertMaps(primary[..., 0], primary[..., 1], cv2.CV_16SC2)
        both = (w0 > 0) & (w1 > 0)
        self.overlap = np.flatnonzero(both)  # flat ERP indices cross-faded
        secondary = np.where(primary_is_1[..., None], coords[0], coords[1]).reshape(-1, 2)
        # cv2.remap takes maps below 32767 columns: the N overlap pixels as rows of _ROW.
        n = self.overlap.size
        rows = -(-n // _ROW)
        sec = np.full((rows * _ROW, 2), -1e4, np.float32)
        sec[:n] = secondary[self.overlap]
        sec = sec.reshape(rows, _ROW, 2)
        self._sec1, self._sec2 = cv2.convertMaps(sec[..., 0], sec[..., 1], cv2.CV_16SC2)
        w_primary = np.maximum(w0, w1).ravel()[self.overlap]
        self._primary_share = (w_primary / total.ravel()[self.overlap]).astype(np.float32)[:, None]
        self._joined: np.ndarray | None = None
        for array in (self.unseen, self.overlap):
            array.setflags(write=False)

    @property
    def primary_share(self) -> np.ndarray:
        """float32 [N]: the primary lens's weight in each overlap pixel (0.5 on the seam)."""
        return self._primary_share[:, 0]

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
        if self.overlap.size:
            n = self.overlap.size
            other = cv2.remap(source, self._sec1, self._sec2, cv2.INTER_LINEAR)
            other = other.reshape(-1, flat_channels(erp))[:n].astype(np.float32)  # [N, C]
            flat = erp.reshape(self.height * self.width, -1)
            mine = flat[self.overlap].astype(np.float32)
            share = self._primary_share
            blended = mine * share + other * (1 - share)
            if np.issubdtype(erp.dtype, np.integer):
                blended = np.rint(blended)
            flat[self.overlap] = blended.astype(erp.dtype)
        return erp


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
