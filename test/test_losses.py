"""The DAP losses: hand-computed values, minima at the ground truth, and numerical safety."""

from __future__ import annotations

import math

import pytest
import torch

from dap_core import geometry
from dap_core.losses import (
    PAPER_TERMS,
    SILOG_EPS,
    TERMS,
    DAPLoss,
    LossConfig,
    absrel_loss,
    dense_fidelity_loss,
    edge_mask,
    gradient_loss,
    normal_loss,
    point_loss,
    range_mask_loss,
    silog_loss,
    view_gram_loss,
)

INF = float("inf")
NAN = float("nan")
THRESHOLDS = (10, 20, 50, 100)


def _box_scene(height: int = 16, width: int = 32, batch: int = 2) -> torch.Tensor:
    """Range [B, 1, H, W] from the centre of a 6 x 8 x 2.7 m room (floor 1.5 m below), with the
    ceiling of image 1 open to the sky (+inf) and one NaN pixel in image 0."""
    rays = geometry.pixel_rays(height, width, dtype=torch.float64)  # [H, W, 3]
    half = torch.tensor([3.0, 4.0, 1.2], dtype=torch.float64)  # +x, +y, +z walls
    low = torch.tensor([3.0, 4.0, 1.5], dtype=torch.float64)  # −x, −y, −z walls
    with torch.no_grad():
        t_pos = torch.where(rays > 1e-9, half / rays.clamp_min(1e-9), INF)
        t_neg = torch.where(rays < -1e-9, low / (-rays).clamp_min(1e-9), INF)
        rng = torch.minimum(t_pos, t_neg).amin(dim=-1).float()  # [H, W]
    gt = rng.expand(batch, 1, height, width).clone()
    if batch > 1:
        gt[1, 0, : height // 4] = INF
    gt[0, 0, height // 2, 3] = NAN
    return gt


def _masks_from(range_m: torch.Tensor) -> dict[int, torch.Tensor]:
    return {t: (range_m <= t).float() for t in THRESHOLDS}


def _valid(gt: torch.Tensor) -> torch.Tensor:
    return ~torch.isnan(gt)


# ---------------------------------------------------------------------------------------------
# Config
# ---------------------------------------------------------------------------------------------


def test_default_weights_are_the_papers():
    cfg = LossConfig()
    assert [cfg.weight(t) for t in PAPER_TERMS] == [1.0, 0.4, 5.0, 2.0, 2.0, 2.0]
    assert cfg.enabled == PAPER_TERMS and cfg.silog_lambda == 0.5 and cfg.distortion_weighting
    assert "absrel" in TERMS and "absrel" not in cfg.enabled  # outside the paper: opt-in


def test_config_round_trips_through_a_dict_and_rejects_unknown_keys():
    cfg = LossConfig.from_dict({"enabled": ["silog", "mask"], "grad_weight": 3.0})
    assert cfg.enabled == ("silog", "mask") and cfg.grad_weight == 3.0
    assert LossConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match="grad_wieght"):
        LossConfig.from_dict({"grad_wieght": 1.0})
    with pytest.raises(ValueError, match="sharpness"):
        LossConfig.from_dict({"enabled": ["silog", "sharpness"]})
    with pytest.raises(ValueError, match="list"):
        LossConfig.from_dict({"enabled": "silog"})
    with pytest.raises(ValueError, match="pts_weight"):
        LossConfig(pts_weight=-1.0)
    with pytest.raises(ValueError, match="empty"):
        LossConfig(enabled=())


# ---------------------------------------------------------------------------------------------
# SILog and the distortion weighting
# ---------------------------------------------------------------------------------------------


def test_silog_matches_hand_computation():
    pred = torch.tensor([[[1.0, 2.0]]])
    gt = torch.tensor([[[2.0, 2.0]]])
    mask = torch.ones_like(gt, dtype=torch.bool)
    # d = (ln 2, 0): E[d²] = ln²2 / 2, E[d]² = ln²2 / 4, variance = ln²2 (1/2 − 1/8).
    variance = math.log(2) ** 2 * 3 / 8
    expected = math.sqrt(variance + SILOG_EPS) - math.sqrt(SILOG_EPS)
    assert silog_loss(pred, gt, mask).item() == pytest.approx(expected, rel=1e-6)


def test_absrel_loss_is_the_absrel_metric():
    pred = torch.tensor([[[3.0, 1.0, 4.0, 7.0]]])
    gt = torch.tensor([[[2.0, 2.0, 4.0, 1.0]]])
    mask = torch.tensor([[[True, True, True, False]]])
    # |3-2|/2 = 0.5, |1-2|/2 = 0.5, 0: mean 1/3; the masked-out pixel counts for nothing.
    assert absrel_loss(pred, gt, mask).item() == pytest.approx(1 / 3, rel=1e-6)
    # Independent cross-check: the evaluation's own AbsRel (float64 numpy) on random maps.
    from dap_core.metrics import depth_metrics

    torch.manual_seed(1)
    gt = torch.rand(2, 8, 16) * 50 + 0.5
    pred = gt * torch.exp(0.3 * torch.randn_like(gt))
    mask = torch.ones_like(gt, dtype=torch.bool)
    # float32 sum of 256 relative errors ~0.3: rounding ≲ 256 · 2⁻²⁴ relative, far below 1e-5.
    expected = depth_metrics(pred.numpy(), gt.numpy())["abs_rel"]
    assert absrel_loss(pred, gt, mask).item() == pytest.approx(expected, rel=1e-5)


def test_absrel_gradient_weighs_every_pixels_error_alike():
    # Unlike SILog (RMS of the log error, gradient ∝ each pixel's error), a pixel 10 % off and
    # one 300 % off at the same range pull with the same force: 1 / (gt · N).
    gt = torch.full((1, 1, 2), 4.0)
    pred = torch.tensor([[[4.4, 16.0]]], requires_grad=True)
    absrel_loss(pred, gt, torch.ones_like(gt, dtype=torch.bool)).backward()
    assert pred.grad.tolist() == [[[0.125, 0.125]]]


def test_silog_with_lambda_one_ignores_a_global_scale():
    torch.manual_seed(0)
    gt = torch.rand(2, 8, 16) * 10 + 0.5
    pred = gt * torch.exp(0.2 * torch.randn_like(gt))
    mask = torch.rand_like(gt) > 0.2
    w = geometry.distortion_weights(8, 16)
    base = silog_loss(pred, gt, mask, w, lam=1.0)
    assert silog_loss(pred * 7.3, gt, mask, w, lam=1.0).item() == pytest.approx(base.item(), 1e-4)
    # λ = 0.5 (the default) keeps part of the scale error.
    assert silog_loss(pred * 7.3, gt, mask, w).item() > silog_loss(pred, gt, mask, w).item() + 0.5


def test_distortion_weighted_mean_is_the_solid_angle_weighted_mean():
    H, W = 6, 12
    gt = torch.ones(1, H, W)
    row_error = torch.arange(1.0, H + 1) * 0.1  # log error per row
    pred = gt * torch.exp(-row_error)[None, :, None]
    mask = torch.ones_like(gt, dtype=torch.bool)
    # A pixel's solid angle is proportional to cos(latitude of its centre).
    lat = [math.pi * (0.5 - (v + 0.5) / H) for v in range(H)]
    cos_lat = torch.tensor([math.cos(p) for p in lat])
    manual = (cos_lat * row_error**2).sum() / cos_lat.sum()
    expected = math.sqrt(manual.item() + SILOG_EPS) - math.sqrt(SILOG_EPS)
    weighted = silog_loss(pred, gt, mask, geometry.distortion_weights(H, W), lam=0.0)
    assert weighted.item() == pytest.approx(expected, rel=1e-5)
    unweighted = silog_loss(pred, gt, mask, None, lam=0.0)
    plain = math.sqrt((row_error**2).mean().item() + SILOG_EPS) - math.sqrt(SILOG_EPS)
    assert unweighted.item() == pytest.approx(plain, rel=1e-5)


@pytest.mark.parametrize("pred_value", [0.0, -3.0, 1e-30])
def test_silog_stays_finite_for_collapsed_predictions(pred_value):
    gt = torch.full((1, 4, 8), 5.0)
    pred = torch.full_like(gt, pred_value, requires_grad=True)
    loss = silog_loss(pred, gt, torch.ones_like(gt, dtype=torch.bool))
    loss.backward()
    assert torch.isfinite(loss) and loss.item() > 1.0
    assert torch.isfinite(pred.grad).all() and (pred.grad < 0).all()  # pushes pred upwards


def test_silog_of_an_empty_mask_is_zero_with_a_finite_gradient():
    pred = torch.full((1, 4, 8), 2.0, requires_grad=True)
    loss = silog_loss(pred, torch.full_like(pred, INF), torch.zeros(1, 4, 8, dtype=torch.bool))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(pred.grad).all()


# ---------------------------------------------------------------------------------------------
# Dense fidelity
# ---------------------------------------------------------------------------------------------


def test_view_gram_loss_matches_hand_computation():
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    gt = torch.ones(1, 2, 2)
    # D̂ = pred / 2.5 = [[.4, .8], [1.2, 1.6]]; G = D̂ D̂ᵀ / 2 = [[.4, .88], [.88, 2]];
    # G_gt = 1 everywhere; mean squared difference = (.36 + 2 · .0144 + 1) / 4.
    loss = view_gram_loss(pred, gt, torch.ones(1, 2, 2, dtype=torch.bool))
    assert loss.item() == pytest.approx((0.36 + 2 * 0.0144 + 1.0) / 4, rel=1e-5)


def test_view_gram_loss_is_twice_the_mean_squared_row_error():
    torch.manual_seed(1)
    gt = 4.0 + torch.rand(20, 32, 32)
    delta = 0.02 * torch.randn(20, 32, 1)
    pred = gt * (1 + delta)
    loss = view_gram_loss(pred, gt, torch.ones_like(gt, dtype=torch.bool))
    row_pred = pred.mean(-1) / pred.mean((-2, -1))[:, None]
    row_gt = gt.mean(-1) / gt.mean((-2, -1))[:, None]
    expected = 2 * (row_pred / row_gt - 1).square().mean()
    assert loss.item() == pytest.approx(expected.item(), rel=0.05)


def test_view_gram_loss_skips_empty_views_and_ignores_invalid_pixels():
    gt = torch.ones(2, 2, 2)
    pred = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[5.0, 5.0], [5.0, 99.0]]])
    valid = torch.ones(2, 2, 2, dtype=torch.bool)
    valid[0] = False
    valid[1, 1, 1] = False
    # View 0 is empty; view 1 is constant over its valid pixels, equal to gt after scaling.
    assert view_gram_loss(pred, gt, valid).item() == pytest.approx(0.0, abs=1e-7)


def test_dense_fidelity_is_zero_at_gt_scale_free_and_positive_for_a_wrong_shape():
    gt = _box_scene(16, 32)[:, 0]
    mask = torch.isfinite(gt)
    gt = torch.where(mask, gt, 1.0)
    assert dense_fidelity_loss(gt, gt, mask).item() == pytest.approx(0.0, abs=1e-7)
    assert dense_fidelity_loss(gt * 3.0, gt, mask).item() == pytest.approx(0.0, abs=1e-6)
    H = gt.shape[-2]
    tilt = 1.0 + 0.3 * torch.linspace(-1, 1, H)[:, None]  # brighter floor, darker ceiling
    pred = (gt * tilt).requires_grad_()
    loss = dense_fidelity_loss(pred, gt, mask)
    loss.backward()
    assert loss.item() > 1e-3
    assert torch.isfinite(pred.grad).all() and pred.grad.abs().sum() > 0


# ---------------------------------------------------------------------------------------------
# Edges and the gradient loss
# ---------------------------------------------------------------------------------------------


def test_edge_mask_finds_a_step_on_both_sides_and_across_the_seam():
    H, W = 4, 8
    gt = torch.ones(1, H, W)
    gt[..., 4:] = math.e  # a step of 1 in log range between columns 3|4, and 7|0 at the seam
    edges = edge_mask(gt, torch.ones_like(gt, dtype=torch.bool), 0.1, 100.0)
    # Sobel / 8 answers 4 · 1 / 8 = 0.5 on both sides of each step, 0 elsewhere.
    expected_cols = torch.tensor([1, 0, 0, 1, 1, 0, 0, 1], dtype=torch.bool)
    assert torch.equal(edges[0], expected_cols.expand(H, W))
    assert not edge_mask(gt, torch.ones_like(gt, dtype=torch.bool), 0.6, 100.0).any()


def test_edge_mask_marks_outlines_against_sky_but_not_unknown_neighbourhoods():
    H, W = 6, 8
    gt = torch.full((1, H, W), 20.0)
    gt[:, :2] = INF  # sky in the two top rows
    known = ~torch.isnan(gt)
    edges = edge_mask(gt, known, 0.1, 100.0)
    assert edges[0, 2].all() and not edges[0, 4:].any()  # log(100/20)/2 = 0.8 at row 2
    gt = torch.exp(torch.arange(H, dtype=torch.float32))[:, None].expand(1, H, W).clone()
    assert edge_mask(gt, ~torch.isnan(gt), 0.1, 1e9).all()  # a log-range ramp: edges everywhere
    gt[0, 4, 4] = NAN  # unknown pixel: its 3x3 neighbourhood cannot be an edge
    edges = edge_mask(gt, ~torch.isnan(gt), 0.1, 1e9)
    assert not edges[0, 3:6, 3:6].any() and edges[0, :3].all() and edges[0, :, :3].all()


def test_gradient_loss_only_sees_the_edges():
    H, W = 4, 8
    gt = torch.ones(1, H, W)
    gt[..., 4:] = math.e
    mask = torch.ones_like(gt, dtype=torch.bool)
    edges = edge_mask(gt, mask, 0.1, 100.0)
    off_edge_error = torch.where(edges, gt, gt * 1.5)
    assert gradient_loss(off_edge_error, gt, mask, edges).item() == 0.0
    on_edge_error = torch.where(edges, gt * 1.5, gt)
    assert gradient_loss(on_edge_error, gt, mask, edges).item() > 0.1


# ---------------------------------------------------------------------------------------------
# Normals, points, masks
# ---------------------------------------------------------------------------------------------


def _plane_range(normal: tuple[float, float, float], dist: float, H: int, W: int):
    """Range [1, H, W] of the plane n·p = dist (unit n), +inf where the ray misses it."""
    rays = geometry.pixel_rays(H, W, dtype=torch.float64)
    along = rays @ torch.tensor(normal, dtype=torch.float64)
    return torch.where(along > 1e-6, dist / along.clamp_min(1e-6), INF).float()[None]


def test_normal_loss_between_floor_and_wall_is_two():
    H, W = 16, 32
    floor = _plane_range((0.0, 0.0, -1.0), 1.5, H, W)  # normal facing the camera: +z
    wall = _plane_range((1.0, 0.0, 0.0), 2.0, H, W)  # normal facing the camera: −x
    mask = torch.isfinite(floor) & torch.isfinite(wall)
    # |(0, 0, 1) − (−1, 0, 0)|₁ = 2 wherever both planes are seen.
    assert normal_loss(wall, floor, mask).item() == pytest.approx(2.0, abs=1e-4)
    assert normal_loss(floor, floor, mask).item() == 0.0


def test_point_loss_matches_hand_computation():
    # 2 x 4 ERP: every ray has |x| + |y| + |z| = cos45°(|cos λ| + |sin λ|) + sin45° = 1 + √½.
    gt = torch.ones(1, 2, 4)
    pred = torch.full_like(gt, 3.0)
    loss = point_loss(pred, gt, torch.ones_like(gt, dtype=torch.bool))
    assert loss.item() == pytest.approx(2.0 * (1 + math.sqrt(0.5)), rel=1e-6)


def test_range_mask_loss_matches_hand_computation():
    prob = torch.tensor([[[0.5, 1.0], [0.0, 0.25]]])
    target = torch.tensor([[[True, True], [False, False]]])
    mask = torch.ones_like(target)
    mse = (0.25 + 0.0625) / 4
    dice = 1 - (2 * 1.5 + 1) / (1.75 + 2 + 1)
    loss = range_mask_loss(prob, target, mask)
    assert loss.item() == pytest.approx(mse + 0.5 * dice, rel=1e-6)
    assert range_mask_loss(target.float(), target, mask).item() == 0.0
    # Empty prediction and empty target: nothing within T, nothing to learn.
    assert range_mask_loss(torch.zeros_like(prob), ~mask, mask).item() == 0.0


# ---------------------------------------------------------------------------------------------
# The total
# ---------------------------------------------------------------------------------------------


def test_every_term_is_zero_at_the_ground_truth_and_positive_otherwise():
    gt = _box_scene()
    valid = _valid(gt)
    pred = gt.nan_to_num(nan=3.0, posinf=80.0)  # any value where gt is sky / invalid
    loss = DAPLoss(LossConfig(enabled=TERMS))
    total, logs = loss(pred, gt, valid, _masks_from(gt))
    assert total.item() == 0.0
    assert all(logs[t] == 0.0 for t in TERMS)

    H = gt.shape[-2]
    tilt = 1.0 + 0.3 * torch.linspace(-1, 1, H)[:, None]
    wrong = _masks_from(gt * 3.0)  # the room spans 1.2 to 5.2 m: 3x crosses 10 m
    total, logs = loss(pred * tilt, gt, valid, wrong)
    assert all(logs[t] > 0 for t in TERMS), logs
    assert total.item() > 0


def test_total_is_the_weighted_sum_and_ablations_run_from_config():
    torch.manual_seed(2)
    gt = _box_scene()
    pred = gt.nan_to_num(nan=3.0, posinf=80.0) * torch.exp(0.1 * torch.randn(gt.shape))
    masks = {t: torch.rand(gt.shape) for t in THRESHOLDS}
    total, logs = DAPLoss()(pred, gt, _valid(gt), masks)
    cfg = LossConfig()
    total_all, logs_all = DAPLoss(LossConfig(enabled=TERMS))(pred, gt, _valid(gt), masks)
    weighted_sum = sum(cfg.weight(t) * logs[t] for t in cfg.enabled)
    assert total.item() == pytest.approx(weighted_sum, rel=1e-5)
    assert total_all.item() == pytest.approx(total.item() + logs_all["absrel"], rel=1e-5)
    assert logs["mask"] == pytest.approx(sum(logs[f"mask_{t}"] for t in THRESHOLDS) / 4)
    assert logs["total"] == pytest.approx(total.item())

    no_sharpness = LossConfig.from_dict({"enabled": ["silog", "normal", "pts", "mask"]})
    total2, logs2 = DAPLoss(no_sharpness)(pred, gt, _valid(gt), masks)
    assert "df" not in logs2 and "grad" not in logs2
    assert total2.item() == pytest.approx(total.item() - 0.4 * logs["df"] - 5 * logs["grad"], 1e-5)

    flat = LossConfig(distortion_weighting=False, enabled=("silog",))
    _, logs3 = DAPLoss(flat)(pred, gt, _valid(gt))
    ok = _valid(gt) & torch.isfinite(gt)
    manual = silog_loss(pred[:, 0], gt[:, 0].nan_to_num(1.0), ok[:, 0], None)
    assert logs3["silog"] == pytest.approx(manual.item(), rel=1e-6)
    assert logs3["silog"] != pytest.approx(logs["silog"], rel=1e-3)


def test_sky_is_beyond_every_threshold_and_outside_the_depth_terms():
    gt = torch.full((1, 1, 8, 16), INF)
    valid = torch.zeros_like(gt, dtype=torch.bool)  # sky counts as beyond even if not "valid"
    pred = torch.full_like(gt, 50.0, requires_grad=True)
    cfg = LossConfig(enabled=("silog", "pts", "normal", "mask"))
    beyond = {t: torch.zeros_like(gt) for t in THRESHOLDS}
    total, logs = DAPLoss(cfg)(pred, gt, valid, beyond)
    assert total.item() == 0.0
    within = {t: torch.ones_like(gt) for t in THRESHOLDS}
    _, logs = DAPLoss(cfg)(pred, gt, valid, within)
    assert logs["mask"] > 1.0 and logs["silog"] == 0.0 and logs["pts"] == 0.0


def test_ground_truth_beyond_max_range_is_clamped_for_depth_but_beyond_for_masks():
    gt = torch.full((1, 1, 8, 16), 150.0)
    pred = torch.full_like(gt, 100.0)
    masks = {100: torch.zeros_like(gt)}
    _, logs = DAPLoss()(pred, gt, torch.ones_like(gt, dtype=torch.bool), masks, max_range_m=100.0)
    assert logs["silog"] == 0.0 and logs["pts"] == 0.0 and logs["mask_100"] == 0.0


def _edge_case(name: str) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    gt = _box_scene()
    valid = _valid(gt)
    pred = gt.nan_to_num(nan=3.0, posinf=80.0) * 1.1
    if name == "nothing valid":
        valid = torch.zeros_like(valid)
    elif name == "zero prediction":
        pred = torch.zeros_like(pred)
    elif name == "negative prediction":
        pred = -pred
    elif name == "all sky":
        gt = torch.full_like(gt, INF)
    elif name == "nan ground truth":
        gt = torch.full_like(gt, NAN)
    elif name == "zero ground truth":
        gt = torch.zeros_like(gt)
    return pred, gt, valid


@pytest.mark.parametrize(
    "case",
    [
        "nothing valid",
        "zero prediction",
        "negative prediction",
        "all sky",
        "nan ground truth",
        "zero ground truth",
    ],
)
def test_no_nan_or_inf_in_loss_or_gradient(case):
    pred, gt, valid = _edge_case(case)
    pred = pred.clone().requires_grad_()
    masks = {t: torch.full_like(gt, 0.5, requires_grad=True) for t in THRESHOLDS}
    total, logs = DAPLoss()(pred, gt, valid, masks)
    total.backward()
    assert torch.isfinite(total) and all(math.isfinite(v) for v in logs.values()), logs
    assert torch.isfinite(pred.grad).all()
    assert all(torch.isfinite(m.grad).all() for m in masks.values())


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs_under_autocast_match_float32(dtype):
    torch.manual_seed(3)
    gt = _box_scene().to(dtype)
    pred = (gt.float().nan_to_num(nan=3.0, posinf=80.0) * 1.05).to(dtype).requires_grad_()
    masks = {t: torch.rand(gt.shape).to(dtype) for t in THRESHOLDS}
    with torch.autocast("cpu", dtype=torch.bfloat16):
        total, logs = DAPLoss()(pred, gt, _valid(gt), masks)
    total.backward()
    assert total.dtype == torch.float32 and torch.isfinite(total)
    assert pred.grad.dtype == dtype and torch.isfinite(pred.grad.float()).all()
    _, ref_logs = DAPLoss()(
        pred.detach().float(), gt.float(), _valid(gt), {t: m.float() for t, m in masks.items()}
    )
    for name, value in ref_logs.items():
        assert logs[name] == pytest.approx(value, rel=1e-5, abs=1e-7), name


def test_gradients_reach_the_prediction_through_every_term():
    torch.manual_seed(4)
    gt = _box_scene()
    base = gt.nan_to_num(nan=3.0, posinf=80.0)
    for term in TERMS:
        pred = (base * torch.exp(0.1 * torch.randn(gt.shape))).requires_grad_()
        masks = {t: torch.rand(gt.shape, requires_grad=True) for t in THRESHOLDS}
        total, _ = DAPLoss(LossConfig(enabled=(term,)))(pred, gt, _valid(gt), masks)
        total.backward()
        reached = masks[10].grad if term == "mask" else pred.grad
        assert reached is not None and reached.abs().sum() > 0, term
        assert torch.isfinite(reached).all(), term


def test_bad_inputs_get_clear_errors():
    gt = _box_scene()
    loss = DAPLoss()
    with pytest.raises(ValueError, match=r"pred_range_m must be \[B, 1, H, W\]"):
        loss(gt[:, 0], gt, _valid(gt), _masks_from(gt))
    with pytest.raises(ValueError, match="valid has shape"):
        loss(gt, gt, _valid(gt)[:1], _masks_from(gt))
    with pytest.raises(ValueError, match="pred_masks is empty"):
        loss(gt, gt, _valid(gt), {})
    with pytest.raises(ValueError, match=r"pred_masks\[10\]"):
        loss(gt, gt, _valid(gt), {10: gt[:, :, :4]})
