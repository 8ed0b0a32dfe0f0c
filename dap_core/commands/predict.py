"""`dap predict IMAGE_OR_DIR --weights W --out DIR`: range and masks for ERP panoramas.

For each image `<stem>` it writes, under --out:
  <stem>_range.npy         float32 range in metres (lossless)
  <stem>_range_mm.png      16-bit range in millimetres (0 = invalid, 65535 = >= 65.535 m)
  <stem>_range_color.png   colourised range with a labelled colour bar
  <stem>_within_<T>m.png   8-bit probability that the range is within T metres, per mask
  <stem>.ply               point cloud, metres, REP 103 frame (x forward, y left, z up), RGB
"""

from __future__ import annotations

import argparse
import sys

from dap_core.commands.common import add_predictor_arguments, make_predictor


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "predict", help="predict range and masks for a panorama or a directory of them"
    )
    parser.add_argument("images", help="an ERP image or a directory of images")
    parser.add_argument("--out", required=True, help="output directory")
    add_predictor_arguments(parser)
    parser.add_argument(
        "--ply-stride", type=int, default=1, help="keep every N-th row and column in the PLY"
    )
    parser.add_argument("--no-ply", action="store_true", help="do not write point clouds")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    import numpy as np
    from tqdm import tqdm

    from dap_core import io

    paths = io.list_images(args.images)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    predictor = make_predictor(args)
    print(f"backend: {predictor.describe()}")
    forward_ms: list[float] = []
    total_ms: list[float] = []
    progress = tqdm(paths, unit="image", disable=len(paths) == 1, file=sys.stderr)
    for path in progress:
        rgb = io.read_rgb(path)
        prediction = predictor.predict(rgb)
        forward_ms.append(prediction.timings.get("forward", 0.0))
        total_ms.append(prediction.timings["total"])
        stem = path.stem
        range_m = prediction.range_m
        io.save_range_npy(out / f"{stem}_range.npy", range_m)
        io.save_range_png16(out / f"{stem}_range_mm.png", range_m)
        io.save_colorized(out / f"{stem}_range_color.png", range_m, predictor.max_range_m)
        io.save_mask_pngs(out, stem, prediction.masks)
        if not args.no_ply:
            io.save_ply(out / f"{stem}.ply", range_m, rgb, stride=args.ply_stride)
        progress.set_postfix(ms=f"{prediction.timings['total']:.0f}")
    print(
        f"wrote {len(paths)} prediction(s) to {out}; per image: forward "
        f"{np.median(forward_ms):.0f} ms, end to end {np.median(total_ms):.0f} ms (median)"
    )
    return 0
