"""Depth metrics against hand-computed values, and the official protocol's known quirks."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from dap_core.metrics import (
    MetricAccumulator,
    depth_metrics,
    mask_metrics,
    official_ground_truth,
    official_metrics,
    official_postprocess,
    official_sample_metrics,
)


def test_depth_metrics_match_hand_computed_values():
    pred = np.array([1.0, 2.0, 4.0, 3.0], dtype=np.float32)
    gt = np.array([1.0, 1.0, 2.0, np.inf], dtype=np.float32)  # the sky pixel must not count
    m = depth_metrics(pred, gt)
    assert m["n_pixels"] == 3
    # errors 0, 1, 2 m; relative 0, 1, 1; ratios 1, 2, 2
    assert m["abs_rel"] == pytest.approx(2 / 3)
    assert m["mae"] == pytest.approx(1.0)
    assert m["rmse"] == pytest.approx(math.sqrt(5 / 3))
    assert m["sq_rel"] == pytest.approx((0 + 1 + 2) / 3)  # 1/1 and 4/2
    assert m["rmse_log"] == pytest.approx(math.sqrt(2 * math.log(2) ** 2 / 3))
    assert m["log10"] == pytest.approx(2 * math.log10(2) / 3)
    assert m["delta1"] == pytest.approx(1 / 3)
    assert m["delta2"] == pytest.approx(1 / 3)  # 2 > 1.5625
    assert m["delta3"] == pytest.approx(1 / 3)  # 1.25**3 = 1.953 < 2


def test_delta3_threshold_is_strict_and_uses_cubed_base():
    gt = np.ones(3)
    pred = np.array([1.9, 1.25**3 + 1e-6, 1.0])
    m = depth_metrics(pred, gt)
    assert m["delta3"] == pytest.approx(2 / 3)
    assert m["delta1"] == pytest.approx(1 / 3)


def test_valid_mask_and_max_range_drop_pixels():
    pred = torch.tensor([[2.0, 50.0], [10.0, 7.0]])
    gt = torch.tensor([[2.0, 150.0], [float("nan"), 8.0]])
    valid = torch.tensor([[True, True], [True, False]])
    m = depth_metrics(pred, gt, valid, max_range_m=100.0)
    assert m["n_pixels"] == 1 and m["abs_rel"] == 0.0 and m["delta1"] == 1.0


def test_prediction_is_clipped_to_max_range():
    m = depth_metrics(np.array([np.inf, 200.0]), np.array([50.0, 100.0]), max_range_m=100.0)
    assert m["mae"] == pytest.approx((50 + 0) / 2)


def test_silog_is_zero_for_a_global_scale_error():
    gt = np.array([1.0, 3.0, 7.0])
    assert depth_metrics(2.5 * gt, gt)["silog"] == pytest.approx(0.0, abs=1e-6)
    assert depth_metrics(gt + 1.0, gt)["silog"] > 1.0


def test_empty_image_gives_nan_and_is_not_averaged():
    acc = MetricAccumulator()
    acc.add_image(np.ones(4), np.full(4, np.nan))
    acc.add_image(np.array([1.0, 2.0]), np.array([1.0, 1.0]))
    acc.add_image(np.array([1.0, 1.0]), np.array([1.0, 1.0]))
    out = acc.result()
    assert out["images"] == 2 and out["empty_images"] == 1
    assert out["abs_rel"] == pytest.approx((0.5 + 0.0) / 2)
    assert out["rmse"] == pytest.approx((math.sqrt(0.5) + 0.0) / 2)  # pooled would be 0.5


def test_nan_prediction_at_valid_pixel_is_an_error():
    with pytest.raises(ValueError, match="nan"):
        depth_metrics(np.array([np.nan]), np.array([1.0]))
    with pytest.raises(ValueError, match="shape"):
        depth_metrics(np.ones(3), np.ones(4))


def test_mask_metrics_iou_and_accuracy():
    gt = np.array([5.0, 15.0, np.inf, 8.0, np.nan])
    prob = np.array([0.9, 0.6, 0.1, 0.2, 0.9])
    m = mask_metrics(prob, gt, threshold_m=10)
    # target within 10 m: [T, F, F, T, -]; predicted: [T, T, F, F, -]
    assert m["iou"] == pytest.approx(1 / 3)
    assert m["accuracy"] == pytest.approx(2 / 4)


def test_official_rmse_is_really_the_mean_absolute_error():
    gt = torch.tensor([0.1, 0.2, 0.4])
    pred = torch.tensor([0.1, 0.3, 0.1])
    m = official_metrics(gt, pred, torch.ones(3, dtype=torch.bool))
    assert m["rmse"] == pytest.approx((0 + 0.1 + 0.3) / 3, rel=1e-6)
    assert m["rmse"] == pytest.approx(m["abs_"], rel=1e-6)
    true_rmse = math.sqrt((0 + 0.01 + 0.09) / 3)
    assert abs(m["rmse"] - true_rmse) > 0.03  # the bug is large, not a rounding detail
    assert m["abs_rel"] == pytest.approx((0 + 0.5 + 0.75) / 3, rel=1e-6)
    assert m["a1"] == pytest.approx(1 / 3)
    assert m["rmse_log"] == pytest.approx(m["log10"], rel=1e-6)


def test_official_ground_truth_clipping_rules_per_dataset():
    gt = np.array([0.0, 0.05, 50.0, 100.0, 100.5, 120.0, np.inf, np.nan], dtype=np.float32)
    norm, valid = official_ground_truth(gt, "stanford2d3d")
    # Stanford/M3D: clip at 101 -> far pixels fall outside the mask
    assert valid.tolist() == [False, True, True, True, False, False, False, False]
    assert norm[1] == pytest.approx(0.001)  # 0.05 m / 100 = 5e-4 clipped up to 1e-3
    assert norm[2] == pytest.approx(0.5)
    norm, valid = official_ground_truth(gt, "deep360")
    # Deep360/Insta: clip at 100 -> far pixels and sky stay inside at 1.0
    assert valid.tolist() == [False, True, True, True, True, True, True, False]
    assert norm[5] == 1.0 and norm[6] == 1.0
    with pytest.raises(ValueError, match="no official clipping rule"):
        official_ground_truth(gt, "kitti")


def test_official_postprocess_is_literal_float32():
    pred = np.array([0.3, 0.3, 0.3], dtype=np.float32)
    m = np.array([0.2, 0.5, np.float32(0.5) - np.float32(2**-25)], dtype=np.float32)
    out = official_postprocess(pred, m)
    # 1 - (0.5 - 2^-25) rounds to exactly 0.5 in float32, so that pixel is also set to 1
    assert out.tolist() == [pytest.approx(0.3), 1.0, 1.0]


def test_official_sample_metrics_average_per_image_not_per_pixel():
    acc = MetricAccumulator()
    # image A: 1 pixel, error 10 m; image B: 3 pixels, error 0
    acc.add(official_sample_metrics(np.array([30.0]), np.array([20.0]), "insta23k"))
    acc.add(official_sample_metrics(np.full(3, 5.0), np.full(3, 5.0), "insta23k"))
    out = acc.result()
    assert out["abs_rel"] == pytest.approx((0.5 + 0.0) / 2, rel=1e-6)
    assert out["rmse"] == pytest.approx((0.1 + 0.0) / 2, rel=1e-5)  # normalized units


def test_official_and_correct_metrics_agree_where_they_should():
    rng = np.random.default_rng(0)
    gt = rng.uniform(1, 90, size=(8, 16)).astype(np.float32)
    pred = (gt * rng.uniform(0.7, 1.3, size=gt.shape)).astype(np.float32)
    ours = depth_metrics(pred, gt)
    off = official_sample_metrics(pred, gt, "stanford2d3d")
    assert off["abs_rel"] == pytest.approx(ours["abs_rel"], rel=1e-5)
    assert off["a1"] == pytest.approx(ours["delta1"], abs=1e-6)
    assert 100 * off["rmse"] == pytest.approx(ours["mae"], rel=1e-5)
    assert ours["rmse"] > ours["mae"]
