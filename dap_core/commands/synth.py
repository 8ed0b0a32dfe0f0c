"""`dap synth`: write procedural 360° RGB-D panoramas and colourised previews to a folder.

Per sample NNNNN (= its seed): NNNNN_rgb.png, NNNNN_range.npy (float32 metres, +inf sky),
NNNNN_normals.npy (float32 [H, W, 3], camera frame) and NNNNN_preview.png (RGB | range |
normals). index.csv lists seed, scene, domain and files.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

from dap_core.commands.common import parse_panorama_size, prepare_output_dir, write_file

if TYPE_CHECKING:
    import numpy as np

PREVIEW_MAX_RANGE_M = 20.0  # indoor detail stays readable; far outdoor ranges saturate blue


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "synth",
        help="write synthetic panoramas (RGB, range, normals, previews)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--out", required=True, help="output directory (created if missing)")
    parser.add_argument("--n", type=int, default=8, help="number of panoramas")
    parser.add_argument("--size", default="256x512", help="HxW, W = 2H (default 256x512)")
    parser.add_argument("--domain", choices=("sim", "real_like"), default="sim")
    parser.add_argument(
        "--scene", choices=("indoor", "outdoor", "any"), default="any", help="scene kind"
    )
    parser.add_argument("--seed", type=int, default=0, help="seed of the first panorama")
    parser.add_argument("--no-preview", action="store_true", help="skip the preview images")
    parser.set_defaults(func=run)


def preview(sample) -> np.ndarray:
    """RGB | colourised range | normals, side by side (uint8 RGB)."""
    import numpy as np

    from dap_core.visualize import add_colorbar, colorize_range

    rng = add_colorbar(colorize_range(sample.range_m, PREVIEW_MAX_RANGE_M), PREVIEW_MAX_RANGE_M)
    normals = np.round((sample.normals + 1.0) * 127.5).astype(np.uint8)
    # The colour bar sits under the range panel only; the other panels get a black strip.
    pad = ((0, rng.shape[0] - sample.rgb.shape[0]), (0, 0), (0, 0))
    return np.concatenate([np.pad(sample.rgb, pad), rng, np.pad(normals, pad)], axis=1)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dap_core import io
    from dap_core.data.synthetic import generate_panorama
    from dap_core.files import atomic_write_bytes

    if args.n < 1:
        raise ValueError(f"--n must be at least 1, got {args.n}")
    height, width = parse_panorama_size(args.size)
    out = Path(args.out)
    prepare_output_dir(out)  # one line for a path under a file or an immutable folder
    scene = None if args.scene == "any" else args.scene
    rows = ["seed,scene,domain,rgb,range,normals"]
    for i in range(args.n):
        seed = args.seed + i
        s = generate_panorama(seed, height, width, scene=scene, domain=args.domain)
        stem = f"{seed:05d}"
        write_file(out / f"{stem}_rgb.png", io.save_image, s.rgb[:, :, ::-1])
        write_file(out / f"{stem}_range.npy", io.save_npy, s.range_m)
        write_file(out / f"{stem}_normals.npy", io.save_npy, s.normals)
        if not args.no_preview:
            write_file(out / f"{stem}_preview.png", io.save_image, preview(s)[:, :, ::-1])
        rows.append(
            f"{seed},{s.scene},{s.domain},{stem}_rgb.png,{stem}_range.npy,{stem}_normals.npy"
        )
        print(f"{stem}: {s.scene:7s} {s.domain}")
    write_file(out / "index.csv", atomic_write_bytes, ("\n".join(rows) + "\n").encode())
    print(f"wrote {args.n} panoramas ({height}x{width}) to {out}")
    return 0
