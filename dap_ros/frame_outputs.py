"""One frame's outputs as arrays: what the node publishes, before it becomes a message.

Owns the rules that turn a prediction and the node's Settings into the five outputs (range
mask, REP 117 range image, cloud, scan, preview), with no ROS import, so that `dap bag`
builds the same values as the live node (dap_ros.node) and wraps them in rosbags messages.
The node writes these values in place into messages it keeps between frames; the tests
compare the bytes of both (test/test_bag.py), so the two cannot drift apart unnoticed.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from dap_core.prediction import Prediction
from dap_core.visualize import add_colorbar, colorize_range
from dap_ros import projection
from dap_ros.params import Settings

__all__ = [
    "OUTPUTS",
    "TOPICS",
    "FrameOutputs",
    "clearing_range",
    "compute_outputs",
    "preview_scale",
    "scan_beams",
]

# Output name -> the node's (relative) topic.
TOPICS: dict[str, str] = {
    "range": "depth/image",
    "mask": "range_mask/image",
    "cloud": "points",
    "scan": "scan",
    "preview": "depth/colored",
}
OUTPUTS: tuple[str, ...] = tuple(TOPICS)


@dataclass
class FrameOutputs:
    """Arrays of one frame; None for an output not asked for.

    mask: uint8 [H, W] (255 within mask_threshold); range: float32 [H, W] REP 117 metres;
    cloud: float32 [h, w, 4] records (x, y, z, rgb bits); scan: float32 [B] ranges with its
    layout and (range_min, range_max); preview: uint8 [H + bar, W, 3] RGB with the colour bar.
    """

    mask: np.ndarray | None = None
    range: np.ndarray | None = None
    cloud: np.ndarray | None = None
    cloud_organized: bool = True
    scan: np.ndarray | None = None
    scan_layout: projection.ScanLayout | None = None
    scan_range: tuple[float, float] = (0.0, float("inf"))
    preview: np.ndarray | None = None


def clearing_range(s: Settings) -> float:
    """Range of the clearing points: never beyond what the mask and max_range vouch for."""
    return min(s.cloud_clearing_range, float(s.mask_threshold), s.max_range)


def preview_scale(s: Settings) -> float:
    """Metres at the blue end of the preview's colour scale."""
    return min(float(s.mask_threshold), s.max_range)


def scan_beams(s: Settings, width: int) -> int:
    """Beams of the scan: scan_beams, at most one per image column."""
    return min(s.scan_beams, width)


def compute_outputs(
    s: Settings,
    rgb: np.ndarray,
    prediction: Prediction,
    wanted: frozenset[str] | set[str],
    workspace: projection.Workspace | None = None,
) -> FrameOutputs:
    """The `wanted` outputs (names in OUTPUTS) of one frame, as the node computes them."""
    unknown = set(wanted) - set(OUTPUTS)
    if unknown:
        raise ValueError(f"unknown outputs {sorted(unknown)}; choose from {', '.join(OUTPUTS)}")
    ws = workspace or projection.Workspace()
    result = FrameOutputs()
    within = projection.within_mask(prediction, s.mask_threshold)
    if "mask" in wanted:
        result.mask = np.multiply(within.view(np.uint8), np.uint8(255))
    if "scan" in wanted:
        width = prediction.range_m.shape[1]
        result.scan, result.scan_layout = projection.build_scan(
            prediction.range_m,
            scan_beams(s, width),
            s.scan_min_height,
            s.scan_max_height,
            s.min_range,
            s.max_range,
            within=within,
        )
        result.scan_range = (s.min_range, s.max_range)
    if not {"range", "cloud", "preview"} & set(wanted):
        return result
    range_img = projection.range_image(
        prediction.range_m, within, s.min_range, s.max_range, workspace=ws
    )
    if "range" in wanted:
        result.range = range_img
    if "cloud" in wanted:
        result.cloud = projection.build_cloud(
            range_img,
            rgb,
            s.cloud_stride,
            s.cloud_min_height,
            s.cloud_max_height,
            s.cloud_organized,
            clearing_range=clearing_range(s),
            workspace=ws,
        )
        result.cloud_organized = s.cloud_organized
    if "preview" in wanted:
        scale = preview_scale(s)
        result.preview = add_colorbar(colorize_range(range_img, scale), scale)
    return result
