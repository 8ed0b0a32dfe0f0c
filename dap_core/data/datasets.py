"""Readers for the panorama datasets a user has on disk, all yielding one sample format.

Every reader returns the item format of the synthetic dataset (contract 2), so training,
curation and evaluation never care where a panorama came from:

    rgb      float32 [3, H, W] in [0, 1] (not normalized)
    range_m  float32 [1, H, W] range in metres (REP 103 ERP, centre column looks along +x);
             +inf = sky / beyond, nan = invalid or unlabeled
    valid    bool [1, H, W] (finite ground truth or sky)
    scene    "indoor" / "outdoor" / "" (unknown)     domain  a tag ("real", "sim", ...)
    name     a stable id (relative path)             index   int     labeled  bool

On-disk formats (decoding follows the official readers, notes/official_dap_spec.md §8):

* Structured3D — `scene_*/2D_rendering/<room>/panorama/full/rgb_<light>.png` with `depth.png`
  beside it: uint16 millimetres of range, 0 = missing.
* Stanford2D3D — `.../pano/rgb/<id>_rgb.png` and `.../pano/depth/<id>_depth.png`: uint16,
  metres = value / 512, 65535 = missing.
* Matterport3D (360° renderings) — `<id>_emission_center_0.png` and `<id>_depth_center_0.exr`
  (float metres, first channel), read with the OpenEXR bindings because this OpenCV build has
  no EXR codec.
* Deep360 — `.../rgb/<id>_rgb<k>.png` and `.../depth/<id>_depth.npz` (`arr_0`, float32 metres),
  both in Cassini projection, resampled to ERP with `geometry.cassini_to_erp`.
* DAP-2M style — `<stem>.{jpg,png}` with `erp_distance` range in a .npy found by name (see
  `Dap2mFolder`); optional `metadata.json` gives the scene class.
* Unlabeled folder — any images, optional `metadata.json` / `metadata.csv` with scene classes.

A `list_file` (one "rgb depth" pair of paths per line, relative to the root) replaces the
discovery rule of any labeled reader. Missing files are found when the dataset is built
(an error naming them, or with `on_error="skip"` left out and listed in `.skipped` as
"file: reason"). A file that cannot be used when read (unreadable, truncated, empty, of the
wrong size or dtype) raises `DatasetReadError` naming the file, or with `on_error="skip"`
yields a *skipped item* (`skipped_item`: name, index and the reason) in its place, never
another sample: `train.data.collate` drops it from its batch and lists it, so no sample is
ever counted twice and whoever reads the data decides how to report it.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")
SCENES = ("indoor", "outdoor")
ON_ERROR = ("raise", "skip")
STRUCTURED3D_DEPTH_SCALE = 1000.0  # uint16 millimetres
STANFORD_DEPTH_SCALE = 512.0  # uint16 value / 512 = metres (official reader)
STANFORD_MISSING = 65535
MATTERPORT_PNG_DEPTH_SCALE = 4000.0  # UniFuse / BiFuse pano_depth PNG: value / 4000 = metres
METADATA_FILES = ("metadata.json", "metadata.csv")
SKIPPED = "skipped"  # key of a skipped item: the reason, "file: cause"


class DatasetReadError(RuntimeError):
    """A dataset file is missing, unreadable, or has the wrong content; names the file."""


@dataclass(frozen=True)
class PanoramaRecord:
    """One sample on disk: its RGB file, its range file (None when unlabeled), its class."""

    rgb: Path
    depth: Path | None
    name: str
    scene: str = ""


# ----------------------------------------------------------------------------------------------
# Decoders


def read_rgb(path: Path) -> np.ndarray:
    """uint8 RGB [H, W, 3] from any image OpenCV reads."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise DatasetReadError(f"{path}: cannot read image (missing, truncated or not an image)")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_uint16_png(path: Path) -> np.ndarray:
    """The raw uint16 values of a 16-bit single-channel PNG."""
    img = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if img is None:
        raise DatasetReadError(f"{path}: cannot read 16-bit depth PNG")
    if img.dtype != np.uint16:
        raise DatasetReadError(f"{path}: expected a 16-bit PNG, got {img.dtype}")
    return img[..., 0] if img.ndim == 3 else img


def read_exr_depth(path: Path) -> np.ndarray:
    """float32 [H, W] from the first depth-like channel (R, Y, Z, then alphabetical) of an EXR."""
    try:
        import OpenEXR
    except ImportError as err:  # pragma: no cover - a dependency of the package
        raise DatasetReadError(f"{path}: reading EXR needs the 'openexr' package") from err
    try:
        with OpenEXR.File(str(path), separate_channels=True) as exr:
            channels = {name: ch.pixels for name, ch in exr.channels().items()}
    except (RuntimeError, OSError, ValueError) as err:
        # A truncated file fails while its pixels are read, with "Invalid part index '0':
        # file has 0 parts." (ValueError) that names no file.
        raise DatasetReadError(f"{path}: cannot read EXR ({err})") from err
    for name in ("R", "Y", "Z", "depth", *sorted(channels)):
        if name in channels:
            return np.asarray(channels[name], dtype=np.float32)
    raise DatasetReadError(f"{path}: EXR has no channels")


def read_npy_range(path: Path) -> np.ndarray:
    """float32 [H, W] metres from .npy, or .npz (`arr_0`, else its only array)."""
    try:
        if path.suffix == ".npz":
            with np.load(path) as data:
                key = "arr_0" if "arr_0" in data.files else data.files[0]
                arr = data[key]
        else:
            arr = np.load(path, allow_pickle=False)
    except (OSError, ValueError, EOFError, IndexError) as err:
        raise DatasetReadError(f"{path}: cannot read array ({err})") from err
    arr = np.asarray(arr)
    if arr.dtype.kind not in "fiu":
        raise DatasetReadError(f"{path}: expected a numeric range map, got dtype {arr.dtype}")
    arr = np.squeeze(arr.astype(np.float32, copy=False))
    if arr.ndim != 2 or arr.size == 0:
        raise DatasetReadError(f"{path}: expected a non-empty 2-D range map, got shape {arr.shape}")
    return arr


def check_gt_size(depth_path: Path | None, gt_shape: tuple, rgb_shape: tuple) -> None:
    """Refuse ground truth whose size is not an exact integer scale of its 2:1 panorama.

    Resizing a transposed or wrong-aspect depth map to the image would give a confident,
    wrong metric; a 2:1 map at 1/2, 2x, ... the image's size is the same panorama sampled
    differently and is resized with nearest neighbour as the official readers do.
    """
    (gh, gw), (ih, iw) = gt_shape[:2], rgb_shape[:2]
    if (gh, gw) == (ih, iw):
        return
    panoramas = gw == 2 * gh and iw == 2 * ih
    if panoramas and (ih % gh == 0 or gh % ih == 0):
        return
    raise DatasetReadError(
        f"{depth_path}: ground truth is {gh}x{gw} but its image is {ih}x{iw}; only an exact "
        "integer scale of a 2:1 panorama is resized (a transposed or wrong-aspect map is refused)"
    )


# ----------------------------------------------------------------------------------------------
# Base reader


class PanoramaDataset(Dataset):
    """Base of every reader: records in, contract-2 items out.

    size: (H, W) output size; RGB is resized with INTER_CUBIC on uint8 and range with
    INTER_NEAREST, as the official readers do. None keeps the file's size.
    far_as_sky_m: ranges at or beyond it become +inf (for datasets that encode sky as a large
    finite value). on_error: "raise" or "skip" (see module docstring).
    """

    kind = "panorama"
    default_scene = ""

    def __init__(
        self,
        records: Sequence[PanoramaRecord],
        *,
        size: tuple[int, int] | None = None,
        on_error: str = "raise",
        domain: str = "real",
        far_as_sky_m: float | None = None,
        searched: str = "",
    ) -> None:
        if on_error not in ON_ERROR:
            raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
        if size is not None and (len(size) != 2 or min(size) <= 0):
            raise ValueError(f"size must be (height, width) > 0, got {size}")
        self.on_error = on_error
        self.size = tuple(size) if size is not None else None
        self.domain = domain
        self.far_as_sky_m = far_as_sky_m
        self.skipped: list[str] = []
        self.records = self._check_exist(list(records))
        if not self.records:
            where = f" {searched}" if searched else ""
            raise DatasetReadError(
                f"{self.kind}: no samples found{where}; if the files are laid out otherwise, "
                "give the dataset's list file (list_file in a YAML spec, or on the command "
                "line --dataset TYPE:ROOT:LIST)"
            )

    def _check_exist(self, records: list[PanoramaRecord]) -> list[PanoramaRecord]:
        """Find missing files before training starts, not in the middle of an epoch."""
        kept, missing = [], []
        for rec in records:
            gone = [p for p in (rec.rgb, rec.depth) if p is not None and not p.is_file()]
            if gone:
                missing.extend(f"{p}: missing file" for p in gone)
            else:
                kept.append(rec)
        if missing and self.on_error == "raise":
            shown = ", ".join(missing[:3]) + (
                f" and {len(missing) - 3} more" if len(missing) > 3 else ""
            )
            raise DatasetReadError(f"{self.kind}: missing file(s): {shown}")
        self.skipped.extend(missing)
        return kept

    def __len__(self) -> int:
        return len(self.records)

    # Subclasses override these two.
    def load_rgb(self, rec: PanoramaRecord) -> np.ndarray:
        return read_rgb(rec.rgb)

    def load_range(self, rec: PanoramaRecord) -> np.ndarray:
        """float32 [H, W] metres with nan for missing and +inf for sky."""
        raise NotImplementedError

    def load(self, index: int) -> dict[str, Any]:
        """Read and decode one sample (no error policy)."""
        rec = self.records[index]
        rgb = self.load_rgb(rec)
        if rec.depth is None:
            rng = np.full(rgb.shape[:2], np.nan, dtype=np.float32)
        else:
            rng = self.load_range(rec)
            check_gt_size(rec.depth, rng.shape, rgb.shape)
            if rng.shape != rgb.shape[:2]:
                rng = cv2.resize(rng, rgb.shape[1::-1], interpolation=cv2.INTER_NEAREST)
        if self.far_as_sky_m is not None:
            rng = np.where(rng >= self.far_as_sky_m, np.float32(np.inf), rng)
        if self.size is not None and rgb.shape[:2] != self.size:
            h, w = self.size
            rgb = cv2.resize(rgb, (w, h), interpolation=cv2.INTER_CUBIC)
            rng = cv2.resize(rng, (w, h), interpolation=cv2.INTER_NEAREST)
        return make_item(rgb, rng, rec, index=index, domain=self.domain)

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index < 0 or index >= len(self):
            raise IndexError(f"{self.kind}: index {index} out of range (len {len(self)})")
        try:
            return self.load(index)
        except DatasetReadError as err:
            if self.on_error == "raise":
                raise
            return skipped_item(self.records[index].name, index, str(err))


def skipped_item(name: str, index: int, reason: str) -> dict[str, Any]:
    """What a reader yields for a sample it cannot use: its name, index and why (no tensors)."""
    return {SKIPPED: reason, "name": name, "index": index}


def is_skipped(item: Mapping[str, Any]) -> bool:
    """True for a `skipped_item` (consumers drop it, and report its reason)."""
    return SKIPPED in item


def make_item(
    rgb: np.ndarray, range_m: np.ndarray, rec: PanoramaRecord, *, index: int, domain: str
) -> dict[str, Any]:
    """Build the contract-2 sample dict from uint8 RGB [H, W, 3] and range [H, W] metres."""
    rng = np.ascontiguousarray(range_m, dtype=np.float32)
    valid = ~np.isnan(rng) & (rng > 0)  # +inf sky is valid ground truth ("beyond")
    rng = np.where(valid, rng, np.float32(np.nan))
    return {
        "rgb": torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1))).float() / 255.0,
        "range_m": torch.from_numpy(rng)[None],
        "valid": torch.from_numpy(valid)[None],
        "scene": rec.scene,
        "domain": domain,
        "name": rec.name,
        "index": index,
        "labeled": rec.depth is not None,
    }


def _listed_path(root: Path, text: str) -> Path:
    """A list-file path joined to the root as text, as the official readers do.

    The official lists write some paths with a leading "/" ("/ep1_500frames/...") and join
    them by string concatenation; `Path` would treat them as absolute and drop the root.
    """
    return root / text.lstrip("/")


def _records_from_list(root: Path, list_file: Path, scene: str) -> list[PanoramaRecord]:
    """Read "rgb depth" pairs (paths relative to root; depth may be omitted)."""
    if not list_file.is_file():
        raise DatasetReadError(f"{list_file}: list file not found")
    records = []
    for lineno, line in enumerate(list_file.read_text().splitlines(), 1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        if len(parts) > 2:
            raise DatasetReadError(f"{list_file}:{lineno}: expected 'rgb [depth]', got {line!r}")
        depth = _listed_path(root, parts[1]) if len(parts) == 2 else None
        name = parts[0].lstrip("/")
        records.append(PanoramaRecord(_listed_path(root, parts[0]), depth, name, scene))
    return records


def _root(root: str | os.PathLike) -> Path:
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DatasetReadError(f"{path}: dataset root is not a directory")
    return path


def _rel(path: Path, root: Path) -> str:
    return path.relative_to(root).as_posix()


def load_scene_metadata(root: Path) -> dict[str, str]:
    """Scene class per relative image path from `metadata.json` ({path: scene} or
    {path: {"scene": ...}}) or `metadata.csv` (columns path, scene); {} when absent."""
    for fname in METADATA_FILES:
        path = root / fname
        if not path.is_file():
            continue
        try:
            if fname.endswith(".json"):
                raw = json.loads(path.read_text())
                items = {k: (v["scene"] if isinstance(v, Mapping) else v) for k, v in raw.items()}
            else:
                with path.open(newline="") as f:
                    items = {row["path"]: row["scene"] for row in csv.DictReader(f)}
        except (ValueError, KeyError, TypeError) as err:
            raise DatasetReadError(f"{path}: cannot parse scene metadata ({err})") from err
        bad = {v for v in items.values() if v not in SCENES}
        if bad:
            raise DatasetReadError(f"{path}: unknown scene class(es) {sorted(bad)}; use {SCENES}")
        return items
    return {}


# ----------------------------------------------------------------------------------------------
# Readers


def _find_pairs(
    root,
    list_file,
    rgb_globs: Sequence[str],
    depth_of: Callable[[Path], Path],
    scene: str,
) -> tuple[list[PanoramaRecord], str]:
    """Records from a list file when given, else every match of `rgb_globs` paired by
    `depth_of`; and a description of where they were looked for (for "no samples found")."""
    root = _root(root)
    if list_file is not None:
        return _records_from_list(root, Path(list_file), scene), f"in list file {list_file}"
    found = sorted({p for pattern in rgb_globs for p in root.glob(pattern)})
    records = [PanoramaRecord(p, depth_of(p), _rel(p, root), scene) for p in found]
    return records, f"under {root} (looked for {', '.join(rgb_globs)})"


class Structured3D(PanoramaDataset):
    """Structured3D panoramas: `rgb_<lighting>.png` + `depth.png` (uint16 mm range)."""

    kind = "structured3d"
    default_scene = "indoor"

    def __init__(self, root, *, lighting: str = "rawlight", list_file=None, **kwargs) -> None:
        pattern = f"scene_*/2D_rendering/*/panorama/full/rgb_{lighting}.png"
        records, searched = _find_pairs(
            root, list_file, [pattern], lambda p: p.with_name("depth.png"), self.default_scene
        )
        super().__init__(records, searched=searched, **kwargs)

    def load_range(self, rec: PanoramaRecord) -> np.ndarray:
        raw = read_uint16_png(rec.depth)
        rng = raw.astype(np.float32) / STRUCTURED3D_DEPTH_SCALE
        return np.where(raw == 0, np.float32(np.nan), rng)


class Stanford2D3D(PanoramaDataset):
    """Stanford2D3D panoramas: `<id>_rgb.png` + `../depth/<id>_depth.png` (uint16 / 512).

    The RGB folder is `rgb` (the dataset's `area_X/pano/rgb`) or `rgb_` (the official DAP
    list's `area_X/pano/rgb_` and the UniFuse split's `area_X/rgb_`); depth is the sibling
    `depth` folder in every layout.
    """

    kind = "stanford2d3d"
    default_scene = "indoor"
    RGB_GLOBS = ("**/rgb/*_rgb.png", "**/rgb_/*_rgb.png")

    def __init__(self, root, *, list_file=None, **kwargs) -> None:
        def depth_of(p: Path) -> Path:
            return p.parent.parent / "depth" / (p.name[: -len("_rgb.png")] + "_depth.png")

        records, searched = _find_pairs(
            root, list_file, self.RGB_GLOBS, depth_of, self.default_scene
        )
        super().__init__(records, searched=searched, **kwargs)

    def load_range(self, rec: PanoramaRecord) -> np.ndarray:
        raw = read_uint16_png(rec.depth)
        rng = raw.astype(np.float32) / STANFORD_DEPTH_SCALE
        return np.where((raw == STANFORD_MISSING) | (raw == 0), np.float32(np.nan), rng)


class Matterport3D(PanoramaDataset):
    """Matterport3D panoramas in either published layout.

    * 360° renderings (the official DAP list): `*_emission_center_0.png` +
      `*_depth_center_0.exr` (float metres).
    * UniFuse / BiFuse stitching: `<scan>/pano_skybox_color/<id>.jpg` +
      `<scan>/pano_depth/<id>.png` (uint16, metres = value / 4000, 0 = missing).

    The depth decoder follows the depth file's suffix, so list files may mix both.
    """

    kind = "matterport3d"
    default_scene = "indoor"
    RGB_SUFFIX = "_emission_center_0.png"
    DEPTH_SUFFIX = "_depth_center_0.exr"
    SKYBOX_GLOBS = ("**/pano_skybox_color/*.jpg", "**/pano_skybox_color/*.png")

    def __init__(self, root, *, list_file=None, **kwargs) -> None:
        def depth_of(p: Path) -> Path:
            if p.parent.name == "pano_skybox_color":
                return p.parent.parent / "pano_depth" / f"{p.stem}.png"
            return p.with_name(p.name[: -len(self.RGB_SUFFIX)] + self.DEPTH_SUFFIX)

        globs = (f"**/*{self.RGB_SUFFIX}", *self.SKYBOX_GLOBS)
        records, searched = _find_pairs(root, list_file, globs, depth_of, self.default_scene)
        super().__init__(records, searched=searched, **kwargs)

    def load_range(self, rec: PanoramaRecord) -> np.ndarray:
        if rec.depth.suffix.lower() == ".png":
            raw = read_uint16_png(rec.depth)
            rng = raw.astype(np.float32) / MATTERPORT_PNG_DEPTH_SCALE
            return np.where(raw == 0, np.float32(np.nan), rng)
        rng = read_exr_depth(rec.depth)
        return np.where(np.isfinite(rng) & (rng > 0), rng, np.float32(np.nan))


class Deep360(PanoramaDataset):
    """Deep360: Cassini `rgb/<frame>_<pair>_rgb<k>.png` + `depth/<frame>_depth.npz`.

    Deep360 has six stereo pairs per frame and one depth map per frame, referenced to
    camera 1. Discovery yields one sample per depth map, as the official test list does:
    the frame's `_rgb1` image of its first pair (`<frame>_12_rgb1.png`; every one of the 600
    lines of the official `deep360_test_final.txt` names that image). A per-pair depth
    `depth/<frame>_<pair>_depth.npz` is used when that file exists instead. Both are
    resampled to ERP with `geometry.cassini_to_erp`: the ERP of a Cassini image Hc x Wc is
    Wc x Hc (spec §8). RGB is truncated back to uint8 after bilinear resampling, as the
    official reader does.
    """

    kind = "deep360"
    default_scene = "outdoor"
    RGB_GLOB = "**/rgb/*_rgb*.png"

    def __init__(self, root, *, list_file=None, **kwargs) -> None:
        records, searched = _find_pairs(
            root, list_file, [self.RGB_GLOB], self._depth_of, self.default_scene
        )
        if list_file is None:
            records = self._one_per_depth(records)
        super().__init__(records, searched=searched, **kwargs)

    @staticmethod
    def _depth_of(p: Path) -> Path:
        depth_dir = p.parent.parent / "depth"
        prefix = p.name[: p.name.rindex("_rgb")]  # <frame>_<pair>, or <frame>
        per_pair = depth_dir / f"{prefix}_depth.npz"
        if per_pair.is_file():
            return per_pair
        return depth_dir / f"{prefix.split('_')[0]}_depth.npz"

    @staticmethod
    def _one_per_depth(records: list[PanoramaRecord]) -> list[PanoramaRecord]:
        """One record per depth file: the first `_rgb1` image in name order, else the first."""
        chosen: dict[Path, PanoramaRecord] = {}
        for rec in records:  # sorted by path
            best = chosen.get(rec.depth)
            if best is None or (
                rec.rgb.stem.endswith("_rgb1") and not best.rgb.stem.endswith("_rgb1")
            ):
                chosen[rec.depth] = rec
        return sorted(chosen.values(), key=lambda r: r.rgb)

    def load_rgb(self, rec: PanoramaRecord) -> np.ndarray:
        from dap_core.geometry import cassini_to_erp

        cas = read_rgb(rec.rgb).transpose(2, 0, 1).astype(np.float32)  # [3, Hc, Wc]
        erp = cassini_to_erp(cas)  # [3, Wc, Hc]
        return np.clip(erp, 0, 255).astype(np.uint8).transpose(1, 2, 0)

    def load_range(self, rec: PanoramaRecord) -> np.ndarray:
        from dap_core.geometry import cassini_to_erp

        cas = read_npy_range(rec.depth)
        return cassini_to_erp(cas[None])[0].astype(np.float32)


class Dap2mFolder(PanoramaDataset):
    """DAP-2M-style folder: RGB images with `erp_distance` range arrays (.npy, metres).

    For an image `<dir>/<stem>.<ext>` the range is the first file that exists of
    `<dir>/<stem with 'rgb' replaced by 'erp_distance'>.npy`, `<dir>/erp_distance_<stem>.npy`,
    `<dir>/<stem>_erp_distance.npy` and `<dir>/../erp_distance/<stem>.npy`, and for the
    official DAP-2M / Insta23k layout (`raw_data_0630/sfc_raw_images_panorama/panorama_N.png`
    with `raw_data_0630/sfc_distance_panorama_npy/erp_distance_N.npy`) `erp_distance_N.npy` in
    any sibling folder whose name contains "distance". Images without a range file are
    skipped at discovery (counted in `.skipped`). Scene classes come from `metadata.json` /
    `metadata.csv` at the root when present.
    """

    kind = "dap2m"

    def __init__(self, root, *, list_file=None, **kwargs) -> None:
        root = _root(root)
        meta = load_scene_metadata(root)
        if list_file is not None:
            records = [
                PanoramaRecord(r.rgb, r.depth, r.name, meta.get(r.name, ""))
                for r in _records_from_list(root, Path(list_file), "")
            ]
            super().__init__(records, searched=f"in list file {list_file}", **kwargs)
            return
        records, unpaired = [], []
        for p in _find_images(root):
            if "erp_distance" in p.stem:
                continue
            depth = self._find_range(p)
            if depth is None:
                unpaired.append(str(p))
                continue
            name = _rel(p, root)
            records.append(PanoramaRecord(p, depth, name, meta.get(name, "")))
        searched = (
            f"under {root} (looked for images with an erp_distance .npy beside them, in "
            f"../erp_distance/ or in a sibling *distance* folder; {len(unpaired)} image(s) "
            "had none)"
        )
        super().__init__(records, searched=searched, **kwargs)
        self.skipped.extend(f"{p}: no erp_distance file" for p in unpaired)

    @staticmethod
    def _find_range(image: Path) -> Path | None:
        stem, parent = image.stem, image.parent
        candidates = [
            parent / f"{stem.replace('rgb', 'erp_distance')}.npy" if "rgb" in stem else None,
            parent / f"erp_distance_{stem}.npy",
            parent / f"{stem}_erp_distance.npy",
            parent.parent / "erp_distance" / f"{stem}.npy",
        ]
        if stem.startswith("panorama_"):  # official DAP-2M / Insta23k layout
            number = stem[len("panorama_") :]
            siblings = sorted(d for d in parent.parent.iterdir() if "distance" in d.name)
            candidates += [d / f"erp_distance_{number}.npy" for d in siblings if d.is_dir()]
        return next((c for c in candidates if c is not None and c.is_file()), None)

    def load_range(self, rec: PanoramaRecord) -> np.ndarray:
        rng = read_npy_range(rec.depth)
        return np.where(np.isnan(rng) | (rng <= 0), np.float32(np.nan), rng)


class UnlabeledFolder(PanoramaDataset):
    """Any folder of ERP images (recursive); range is all nan, `labeled` False."""

    kind = "unlabeled"

    def __init__(self, root, *, list_file=None, **kwargs) -> None:
        root = _root(root)
        meta = load_scene_metadata(root)
        if list_file is not None:
            paths = [r.rgb for r in _records_from_list(root, Path(list_file), "")]
        else:
            paths = list(_find_images(root))
        records = [
            PanoramaRecord(p, None, _rel(p, root), meta.get(_rel(p, root), "")) for p in paths
        ]
        kwargs.setdefault("domain", "real")
        super().__init__(records, **kwargs)


def _find_images(root: Path):
    return sorted(p for p in root.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())


# ----------------------------------------------------------------------------------------------
# Synthetic data and hidden ground truth


class SyntheticDataset(Dataset):
    """The procedural generator (`dap_core.data.synthetic`) in this module's item format."""

    kind = "synthetic"

    def __init__(
        self,
        length: int,
        *,
        size: tuple[int, int] = (256, 512),
        domain: str = "sim",
        seed_offset: int = 0,
        scenes: Sequence[str] = SCENES,
    ) -> None:
        from dap_core.data.synthetic import SyntheticPanoramaDataset

        self.inner = SyntheticPanoramaDataset(
            length, size[0], size[1], domain=domain, seed_offset=seed_offset, scenes=tuple(scenes)
        )
        self.domain = domain
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.inner)

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.inner[index])
        valid = item["valid"].bool()
        item["range_m"] = torch.where(valid, item["range_m"].float(), torch.nan)
        item["valid"] = valid
        item.setdefault("name", f"{self.domain}/{item.get('seed', index)}")
        item["index"] = index
        item["labeled"] = True
        return item


class _DatasetView(Dataset):
    """A dataset wrapping another one item for item: same length, same skipped samples."""

    def __init__(self, dataset: Dataset) -> None:
        self.dataset = dataset

    @property
    def skipped(self) -> list[str]:
        return getattr(self.dataset, "skipped", [])

    def __len__(self) -> int:
        return len(self.dataset)


class Cached(_DatasetView):
    """Keeps every item in memory after its first read (small sets: CI, quick experiments)."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset)
        self.kind = getattr(dataset, "kind", type(dataset).__name__)
        self._items: dict[int, dict[str, Any]] = {}

    def __getitem__(self, index: int) -> dict[str, Any]:
        if index not in self._items:
            self._items[index] = self.dataset[index]
        return dict(self._items[index])


class HiddenLabels(_DatasetView):
    """An unlabeled view of a labeled dataset: training sees no range, evaluation can.

    Items have range nan and valid False (labeled False); `ground_truth(i)` returns the
    original item. Used for the real-like synthetic domain, whose labels only measure.
    """

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset)
        self.kind = f"hidden({getattr(dataset, 'kind', type(dataset).__name__)})"

    def __getitem__(self, index: int) -> dict[str, Any]:
        item = dict(self.dataset[index])
        if is_skipped(item):
            return item
        item["range_m"] = torch.full_like(item["range_m"], torch.nan)
        item["valid"] = torch.zeros_like(item["valid"])
        item["labeled"] = False
        return item

    def ground_truth(self, index: int) -> dict[str, Any]:
        return self.dataset[index]


# ----------------------------------------------------------------------------------------------
# Factory for configs and the command line

READERS: dict[str, Callable[..., Dataset]] = {
    "structured3d": Structured3D,
    "stanford2d3d": Stanford2D3D,
    "matterport3d": Matterport3D,
    "deep360": Deep360,
    "dap2m": Dap2mFolder,
    "unlabeled": UnlabeledFolder,
    "synthetic": SyntheticDataset,
}


def build_dataset(spec: Mapping[str, Any]) -> Dataset:
    """Build a dataset from a config mapping: {"type": name, ...reader kwargs...}.

    Extra keys: "cache": true keeps items in memory (`Cached`); "hide_labels": true wraps it
    in `HiddenLabels`. `size` may be a list [H, W].
    """
    spec = dict(spec)
    kind = spec.pop("type", None)
    if kind not in READERS:
        raise ValueError(f"unknown dataset type {kind!r}; known: {sorted(READERS)}")
    hide = bool(spec.pop("hide_labels", False))
    cache = bool(spec.pop("cache", False))
    if "size" in spec and spec["size"] is not None:
        spec["size"] = tuple(int(v) for v in spec["size"])
    try:
        dataset = READERS[kind](**spec)
    except TypeError as err:
        raise ValueError(f"bad options for dataset {kind!r}: {err}") from err
    if cache:
        dataset = Cached(dataset)
    return HiddenLabels(dataset) if hide else dataset
