"""`dap predict IMAGE_OR_DIR --out DIR`: range and masks for ERP panoramas, as the node publishes.

For each image it writes, under --out, with `<name>` the file's stem (or its whole file name
when two inputs share a stem, e.g. `a.jpg` and `a.png`):
  <name>_range.npy         float32 range in metres (lossless); +inf where the range mask at
                           --mask-threshold says "beyond" (sky, no return; REP 117), unless
                           --raw-range
  <name>_range_mm.png      16-bit range in millimetres (0 = invalid, 65535 = >= 65.535 m or +inf)
  <name>_range_color.png   colourised range, scale 0..the image's 98th range percentile (rounded
                           up), printed on the colour bar; +inf / beyond is black
  <name>_within_<T>m.png   8-bit probability that the range is within T metres, per mask
  <name>.ply               finite points only, metres, REP 103 frame (x forward, y left, z up),
                           RGB; at most --ply-points points (a stride over rows and columns)

Images that cannot be used (unreadable, truncated, not 2:1) are listed and skipped; the run
goes on and exits 1 if any failed. Weights default to the shipped ones.

Dual-fisheye frames: `--fisheye CALIBRATION.yaml` (config/fisheye/) remaps each input to an
ERP of --fisheye-height rows (dap_core.fisheye) before the model runs: one side-by-side image
per input for a side_by_side calibration; for a two_images calibration the input is lens 0's
image and `--lens1 IMAGE` lens 1's. Outputs are those of the ERP; where no lens sees, range is
NaN (invalid: 0 in the 16-bit PNG, black in the colour preview, no PLY point) and the mask
PNGs hold 0.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dap_core.commands.common import (
    add_predictor_arguments,
    parse_size,
    parse_thresholds,
    positive_int,
    prepare_output_dir,
    resolve_weights,
    write_file,
)

PREPROCESS = ("official_eval", "official_infer")
DEFAULT_PLY_POINTS = 1_000_000  # ~15 MB binary PLY with colour; opens quickly in viewers
DEFAULT_MASK_THRESHOLD_M = 100  # the node's default mask_threshold


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict range and masks for a panorama or a directory of them",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("images", help="an ERP image or a directory of images")
    parser.add_argument("--out", required=True, help="output directory")
    add_predictor_arguments(parser)
    parser.add_argument(
        "--preprocess",
        default="official_eval",
        choices=PREPROCESS,
        help="official_eval (default): resize to the model input, ImageNet mean/std, as the "
        "official evaluation and training readers; official_infer: /255 only, native size "
        "(floored to 16; --input-size overrides), as the official test/infer.py",
    )
    parser.add_argument(
        "--mask-threshold",
        type=positive_int,
        default=DEFAULT_MASK_THRESHOLD_M,
        help="metres: range is +inf where this range mask says 'beyond' (default 100, as the "
        "node); without that head, where range > T",
    )
    parser.add_argument(
        "--raw-range", action="store_true", help="write the ungated range (no +inf beyond)"
    )
    parser.add_argument(
        "--allow-non-panorama",
        action="store_true",
        help="predict images that are not 2:1 equirectangular (refused by default)",
    )
    parser.add_argument(
        "--ply-points",
        type=positive_int,
        default=DEFAULT_PLY_POINTS,
        help=f"most points per PLY, by a row/column stride (default {DEFAULT_PLY_POINTS})",
    )
    parser.add_argument(
        "--ply-stride",
        type=positive_int,
        default=None,
        help="keep every N-th row and column in the PLY (overrides --ply-points)",
    )
    parser.add_argument("--no-ply", action="store_true", help="do not write point clouds")
    parser.add_argument(
        "--fisheye",
        metavar="CALIBRATION",
        help="inputs are dual-fisheye frames of this calibration YAML (config/fisheye/),"
        " remapped to ERP first; NaN range where no lens sees",
    )
    parser.add_argument(
        "--lens1",
        metavar="IMAGE",
        help="with a two_images --fisheye calibration: lens 1's image (the input is lens 0's)",
    )
    parser.add_argument(
        "--fisheye-height",
        type=positive_int,
        default=512,
        help="rows of the ERP built from fisheye input (width 2x; default 512, as the node)",
    )
    parser.set_defaults(func=run)


def output_names(paths: list[Path]) -> dict[Path, str]:
    """A distinct output name per input: its stem, or its file name when stems collide."""
    stems: dict[str, int] = {}
    for path in paths:
        stems[path.stem] = stems.get(path.stem, 0) + 1
    names = {p: p.stem if stems[p.stem] == 1 else p.name for p in paths}
    seen: dict[str, int] = {}
    for path in paths:  # a stem equal to another file's name ("a.jpg.png" vs "a.jpg")
        name = names[path]
        if name in seen:
            seen[name] += 1
            names[path] = f"{name}~{seen[name]}"
        else:
            seen[name] = 1
    return names


def check_panorama(path: Path, shape: tuple[int, ...]) -> None:
    height, width = shape[:2]
    if width != 2 * height:
        raise ValueError(
            f"{path}: {width}x{height} is not a 2:1 equirectangular panorama "
            "(pass --allow-non-panorama to predict it anyway)"
        )


class _Predictors:
    """Builds the Predictor on first use (an unreadable image fails before the model loads);
    for official_infer one per native input size, sharing one loaded model."""

    def __init__(self, args: argparse.Namespace, weights: str) -> None:
        self.args = args
        self.weights = weights
        self.model = None
        self.cache: dict[tuple[int, int], object] = {}

    def _common(self) -> dict:
        args = self.args
        return {
            "backend": args.backend,
            "device": args.device,
            "precision": args.precision,
            "mask_thresholds": parse_thresholds(args.masks),
            "threads": args.threads,
            "cache_dir": args.cache_dir,
            "announce": False,  # run() prints the decision once, on stdout
        }

    def get(self, shape: tuple[int, int]):
        from dap_core.runtime import Predictor

        args = self.args
        if args.preprocess == "official_eval":
            key = (0, 0)
            if key not in self.cache:
                self.cache[key] = Predictor(
                    self.weights, input_size=parse_size(args.input_size), **self._common()
                )
            return self.cache[key]
        size = parse_size(args.input_size) or (
            max(16, shape[0] // 16 * 16),
            max(16, shape[1] // 16 * 16),
        )
        if size not in self.cache:
            if self.model is None:
                self.model = _unnormalized_model(self.weights)
            self.cache[size] = Predictor(self.model, input_size=size, **self._common())
        return self.cache[size]


def _unnormalized_model(weights: str):
    """The torch model with ImageNet normalization off: the official test/infer.py input."""
    from dap_core.model import load_model

    if Path(weights).suffix == ".onnx":
        raise ValueError(
            "--preprocess official_infer runs at each image's native size and needs torch "
            f"weights (a directory, .safetensors or .pth), not the fixed-size export {weights}"
        )
    model = load_model(weights)
    model.config = model.config.replace(normalize=False)
    return model


class _FisheyeInput:
    """--fisheye: reads a frame's lens image(s) and remaps them to ERP (dap_core.fisheye)."""

    def __init__(self, args: argparse.Namespace, paths: list[Path]) -> None:
        from dap_core.fisheye import FisheyeFrames

        self.frames = FisheyeFrames(args.fisheye, args.fisheye_height)  # CalibrationError
        two = self.frames.two_images
        if two and (args.lens1 is None or len(paths) != 1):
            raise ValueError(
                f"{args.fisheye} is a two_images calibration: give lens 0's image as the input"
                " and lens 1's with --lens1 (one frame per run)"
            )
        if not two and args.lens1 is not None:
            raise ValueError(
                f"--lens1 needs a two_images calibration; {args.fisheye} is side_by_side"
            )
        self.lens1 = Path(args.lens1) if two else None

    def read(self, path: Path):
        """(ERP rgb uint8 [h, 2h, 3], unseen bool [h, 2h]); ValueError names the file."""
        from dap_core import io

        images = [io.read_panorama(path)]
        if self.lens1 is not None:
            images.append(io.read_panorama(self.lens1))
        try:
            return self.frames.to_erp(*images)
        except ValueError as err:
            lens1 = f" (--lens1 {self.lens1})" if self.lens1 is not None else ""
            raise ValueError(f"{path}{lens1}: {err}") from None


def _write_outputs(args, out: Path, name: str, rgb, range_m, masks, predictor) -> None:
    from dap_core import io

    scale = io.preview_scale(range_m, predictor.max_range_m)
    write_file(out / f"{name}_range.npy", io.save_range_npy, range_m)
    write_file(out / f"{name}_range_mm.png", io.save_range_png16, range_m)
    write_file(out / f"{name}_range_color.png", io.save_colorized, range_m, scale)
    for threshold, probability in sorted(masks.items()):
        write_file(out / f"{name}_within_{threshold}m.png", io.save_mask_png, probability)
    if not args.no_ply:
        stride = args.ply_stride or io.ply_stride_for(range_m.shape, args.ply_points)
        write_file(out / f"{name}.ply", io.save_ply, range_m, rgb, stride=stride)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    from tqdm import tqdm

    from dap_core import io

    paths = io.list_images(args.images)
    out = Path(args.out)
    prepare_output_dir(out)
    weights, how = resolve_weights(args.weights)
    print(f"weights: {weights} ({how})")
    if args.lens1 is not None and args.fisheye is None:
        raise ValueError("--lens1 is lens 1's image of a two_images --fisheye calibration")
    fisheye = _FisheyeInput(args, paths) if args.fisheye else None
    names = output_names(paths)
    predictors = _Predictors(args, weights)
    failed: list[str] = []
    forward_ms: list[float] = []
    total_ms: list[float] = []
    gating_said = False
    progress = tqdm(paths, unit="image", disable=len(paths) == 1, file=sys.stderr)
    for path in progress:
        unseen = None
        try:
            if fisheye is not None:
                rgb, unseen = fisheye.read(path)
            else:
                rgb = io.read_panorama(path)
            if not args.allow_non_panorama:
                check_panorama(path, rgb.shape)
        except ValueError as err:
            failed.append(str(path))
            print(f"dap predict: skipped {err}", file=sys.stderr)
            continue
        predictor = predictors.get(rgb.shape[:2])
        if not gating_said:
            print(f"backend: {predictor.describe()}")
            print(_gating_line(args, predictor))
            gating_said = True
        prediction = predictor.predict(rgb)
        forward_ms.append(prediction.timings.get("forward", 0.0))
        total_ms.append(prediction.timings["total"])
        range_m = (
            prediction.range_m if args.raw_range else prediction.gated_range(args.mask_threshold)
        )
        masks = prediction.masks
        if unseen is not None:  # no lens sees these pixels: invalid, as the node publishes
            range_m = np.where(unseen, np.float32(np.nan), range_m)
            masks = {t: np.where(unseen, np.float32(0.0), m) for t, m in masks.items()}
        _write_outputs(args, out, names[path], rgb, range_m, masks, predictor)
        progress.set_postfix(ms=f"{prediction.timings['total']:.0f}")
    done = len(paths) - len(failed)
    if done:
        print(
            f"wrote {done} prediction(s) to {out}; per image: forward "
            f"{np.median(forward_ms):.0f} ms, end to end {np.median(total_ms):.0f} ms (median)"
        )
    if failed:
        print(
            f"dap predict: error: {len(failed)} of {len(paths)} image(s) failed: "
            + ", ".join(failed),
            file=sys.stderr,
        )
        return 1
    return 0


def _gating_line(args: argparse.Namespace, predictor) -> str:
    if args.raw_range:
        return "range: raw (not gated by a range mask; --raw-range)"
    threshold = args.mask_threshold
    if threshold in predictor.mask_thresholds:
        return f"range: +inf where the {threshold} m range mask says beyond (REP 117)"
    heads = ", ".join(f"{t} m" for t in predictor.mask_thresholds) or "none"
    return (
        f"range: +inf where range > {threshold} m (no {threshold} m range-mask head ran; "
        f"heads: {heads})"
    )
