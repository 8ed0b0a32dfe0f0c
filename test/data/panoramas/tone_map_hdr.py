#!/usr/bin/env python3
"""Tone-map a Radiance .hdr equirectangular photo to the 8-bit JPEG kept under test/data/panoramas.

How the real panoramas in test/data/panoramas were made (README.md there names each source):
Reinhard global tone mapping (OpenCV, gamma 2.2, light adaptation 0.8), 8-bit, JPEG quality 90,
at the file's own size. Kept so that more real photographs can be added the same way.

    python test/data/panoramas/tone_map_hdr.py IN.hdr OUT.jpg
"""

from __future__ import annotations

import sys
from pathlib import Path

import cv2
import numpy as np


def tone_map(hdr: np.ndarray) -> np.ndarray:
    """Linear float32 BGR radiance -> uint8 BGR for display."""
    operator = cv2.createTonemapReinhard(gamma=2.2, intensity=0.0, light_adapt=0.8, color_adapt=0.0)
    return np.clip(operator.process(hdr) * 255.0, 0, 255).astype(np.uint8)


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    source, target = Path(argv[0]), Path(argv[1])
    hdr = cv2.imread(str(source), cv2.IMREAD_UNCHANGED)
    if hdr is None or hdr.dtype != np.float32 or hdr.ndim != 3:
        print(f"{source}: not a Radiance HDR colour image", file=sys.stderr)
        return 1
    if not cv2.imwrite(str(target), tone_map(hdr), [cv2.IMWRITE_JPEG_QUALITY, 90]):
        print(f"{target}: could not write", file=sys.stderr)
        return 1
    print(f"{target}: {hdr.shape[1]}x{hdr.shape[0]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
