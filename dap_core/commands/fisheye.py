"""`dap fisheye-preview`: check a dual-fisheye calibration by eye.

Remaps one side-by-side image (or two lens images) to an ERP panorama with the calibration,
and writes it as a PNG with the seam marked: the cross-fade band (blend_deg wide) is tinted
(lens 0 red, lens 1 blue, by which lens weighs more), the line where they weigh the same drawn, and
pixels no lens sees left black. A good calibration shows straight edges continuing across the
band without doubling; a wrong lens rotation or centre shows as ghosted or broken edges there.
"""

from __future__ import annotations

import argparse

import numpy as np


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "fisheye-preview",
        help="ERP preview of dual-fisheye images with the seam marked (calibration check)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--calibration", required=True, help="calibration YAML (config/fisheye/)")
    parser.add_argument("images", nargs="+", help="one side-by-side image, or lens 0 and lens 1")
    parser.add_argument("--out", required=True, help="output PNG")
    parser.add_argument("--height", type=int, default=512, help="ERP height (width = 2x)")
    parser.set_defaults(func=run)


def seam_overlay(erp: np.ndarray, remapper) -> np.ndarray:
    """uint8 RGB [H, W, 3]: `erp` with the overlap band tinted and the equal-weight line drawn."""
    out = erp.copy()
    flat = out.reshape(-1, 3)
    share = remapper.primary_share  # [N] weight of the primary lens in the band
    lens1 = remapper.primary_is_lens1.ravel()[remapper.overlap]
    tint = np.where(lens1[:, None], [0, 0, 255], [255, 0, 0]).astype(np.float32)
    band = flat[remapper.overlap].astype(np.float32)
    flat[remapper.overlap] = (0.7 * band + 0.3 * tint).astype(np.uint8)
    # The equal-weight line, about one ERP pixel wide: across the fade the primary's share
    # grows by 1 / blend per radian from the seam (0.5 there), a pixel spans pi / H radians.
    blend = remapper.calibration.blend
    pixel = np.pi / remapper.height
    near = share < 0.5 + pixel / blend if blend > 0 else np.zeros_like(share, bool)
    flat[remapper.overlap[near]] = (255, 255, 0)
    return out


def run(args: argparse.Namespace) -> int:
    import cv2

    from dap_core.files import atomic_write_bytes
    from dap_core.fisheye import FisheyeRemapper, load_calibration
    from dap_core.io import read_rgb

    if args.height < 2:
        raise ValueError(f"--height must be at least 2, got {args.height}")
    images = [read_rgb(path) for path in args.images]
    calibration = load_calibration(args.calibration)
    calibration = calibration.for_image(images[0].shape[1], images[0].shape[0])
    remapper = FisheyeRemapper(calibration, args.height, 2 * args.height)
    preview = seam_overlay(remapper.remap(*images), remapper)
    ok, png = cv2.imencode(".png", preview[:, :, ::-1])
    if not ok:
        raise RuntimeError("PNG encoding failed")
    atomic_write_bytes(args.out, png.tobytes())
    seen = 1.0 - remapper.unseen.mean()
    band = remapper.overlap.size / remapper.unseen.size
    print(f"wrote {args.out}: {seen:.1%} of the sphere seen, overlap band {band:.1%}")
    return 0
