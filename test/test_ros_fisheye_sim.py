"""The simulated camera in both dual-fisheye driver layouts, through the node with the shipped
model: range, range mask, cloud and scan come out, and are as good as from the ERP stream.

Three simulated cameras render the same frame of one indoor scene (same seed, one pre-rendered
frame replayed): as an ERP on `image`, as the Insta360 side-by-side image on `image`, and as
the X5's two lens topics `lens0` / `lens1`. Each feeds its own node (dap_small on the torch
CPU backend), which remaps fisheye input to the same ERP grid. Each node's depth image, cloud
and scan are compared with the truth the simulator publishes (ground_truth/depth): the
fisheye paths must be as good as the ERP path, by the issue's criterion (AbsRel within 0.01).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
from ros_harness import NodeProcess, domain_id, ros_client
from sensor_msgs.msg import Image, LaserScan, PointCloud2

from dap_core.metrics import depth_metrics
from dap_ros import conversions as conv
from dap_ros import projection

pytestmark = [pytest.mark.ros, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "config" / "fisheye"
ERP_W = 256  # the simulator's ERP and the node's (fisheye_erp_height = 128)
BEAMS, STRIDE = 64, 2
WAIT_S = 120.0
# name: (simulator parameters, node parameters)
LAYOUTS = {
    "erp": ({}, {}),
    "side_by_side": (
        {"fisheye_calibration": str(CONFIG / "insta360_side_by_side.yaml"), "fisheye_width": 512},
        {"fisheye_calibration": str(CONFIG / "insta360_side_by_side.yaml")},
    ),
    "two_topics": (
        {"fisheye_calibration": str(CONFIG / "x5_two_topics.yaml"), "fisheye_width": 256},
        {"fisheye_calibration": str(CONFIG / "x5_two_topics.yaml")},
    ),
}
OUTPUTS = {
    "depth/image": Image,
    "range_mask/image": Image,
    "points": PointCloud2,
    "scan": LaserScan,
}
# AbsRel is the mean of |x - truth| / truth: one model, two inputs that differ only by the
# remap's resampling (test_fisheye: < 0.05 px off); the issue asks the fisheye path to be
# within 0.01 of the ERP path in AbsRel, for the range and so for what is built from it.
ABS_REL_GAP = 0.01


def _abs_rel(values: np.ndarray, truth: np.ndarray) -> float:
    both = np.isfinite(values) & np.isfinite(truth) & (truth > 0)
    assert both.mean() > 0.3, "too few comparable values"
    return float(np.mean(np.abs(values[both] - truth[both]) / truth[both]))


@pytest.fixture(scope="module")
def streams(tmp_path_factory):
    """name -> {output topic: first message}, and the simulator's truth (float32 [H, W])."""
    tmp = tmp_path_factory.mktemp("fisheye_sim")
    domain = domain_id(__name__)
    common_sim = {
        "width": ERP_W,
        "rate_hz": 2.0,
        "scene": "indoor",
        "seed": 4,
        "precompute_frames": 1,
    }
    common_node = {
        "backend": "torch",
        "threads": 1,
        "input_height": ERP_W // 2,
        "fisheye_erp_height": ERP_W // 2,
        "scan_beams": BEAMS,
        "cloud_stride": STRIDE,
    }
    processes = []
    for name, (sim, node) in LAYOUTS.items():
        ns = f"/e2e_{name}{os.getpid()}"
        processes.append(
            NodeProcess(
                domain,
                tmp / f"sim_{name}.log",
                {**common_sim, **sim},
                module="dap_ros.camera_sim",
                namespace=ns,
            )
        )
        processes.append(
            NodeProcess(domain, tmp / f"node_{name}.log", {**common_node, **node}, namespace=ns)
        )
    for process in processes:
        process.__enter__()
    try:
        with ros_client(domain) as client:
            inboxes = {
                name: {
                    topic: client.inbox(kind, f"/e2e_{name}{os.getpid()}/{topic}")
                    for topic, kind in OUTPUTS.items()
                }
                for name in LAYOUTS
            }
            truth_inbox = client.inbox(Image, f"/e2e_erp{os.getpid()}/ground_truth/depth")
            got = {}
            for name, boxes in inboxes.items():
                got[name] = {}
                for topic, inbox in boxes.items():
                    first = inbox.wait_for(lambda m: m[0] if m else None, WAIT_S)
                    logs = "\n".join(p.log()[-2000:] for p in processes)
                    assert first is not None, f"{name}: no {topic}\n{logs}"
                    got[name][topic] = first
            truth = truth_inbox.wait_for(lambda m: m[0] if m else None, WAIT_S)
            assert truth is not None
    finally:
        for process in processes:
            process.stop()
    return got, conv.image_to_numpy(truth)


def test_every_layout_yields_range_mask_cloud_and_scan_on_the_erp_grid(streams):
    got, truth = streams
    for name, outputs in got.items():
        depth = conv.image_to_numpy(outputs["depth/image"])
        mask = conv.image_to_numpy(outputs["range_mask/image"])
        assert depth.shape == mask.shape == truth.shape, name
        assert np.isfinite(depth).mean() > 0.5, name
        assert outputs["points"].height == truth.shape[0] // STRIDE, name
        assert len(outputs["scan"].ranges) == BEAMS, name
        assert outputs["depth/image"].header.frame_id == "camera_360", name


def _cloud_range(msg: PointCloud2) -> np.ndarray:
    cloud = conv.cloud_to_numpy(msg)
    xyz = np.stack([cloud["x"], cloud["y"], cloud["z"]], axis=-1).astype(np.float64)
    return np.linalg.norm(xyz, axis=-1)  # NaN where no point


def test_fisheye_range_mask_cloud_and_scan_are_as_good_as_from_erp(streams):
    got, truth = streams
    truth_scan, _ = projection.build_scan(truth, BEAMS, -0.2, 0.2, 0.0, 100.0)
    truth_cloud = truth[::STRIDE, ::STRIDE].astype(np.float64)
    known = ~np.isnan(truth)  # +inf (sky) counts for the mask: beyond every threshold
    truth_within = truth <= 100.0  # the node's default mask_threshold
    scores = {}
    for name, outputs in got.items():
        depth = conv.image_to_numpy(outputs["depth/image"])
        within = conv.image_to_numpy(outputs["range_mask/image"]) == 255
        scores[name] = (
            depth_metrics(depth, truth, valid=np.isfinite(depth))["abs_rel"],
            # the mask's error rate (a 0/1 "AbsRel"), held to the same gap
            float(np.mean(within[known] != truth_within[known])),
            _abs_rel(_cloud_range(outputs["points"]), truth_cloud),
            _abs_rel(np.asarray(outputs["scan"].ranges, np.float64), truth_scan),
        )
    print({name: [round(v, 4) for v in values] for name, values in scores.items()})
    for name in ("side_by_side", "two_topics"):
        for what, mine, erp in zip(
            ("range", "mask", "cloud", "scan"), scores[name], scores["erp"], strict=True
        ):
            assert abs(mine - erp) < ABS_REL_GAP, f"{name} {what}: {mine:.4f} vs ERP {erp:.4f}"
