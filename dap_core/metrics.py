"""Depth metrics: the correct ones, and a faithful copy of the official evaluation.

Two families, documented side by side (README "Evaluation"):

* `depth_metrics` — metres in, metres out. RMSE is a true root-mean-square error in
  metres; every pixel of one image weighs the same. `MetricAccumulator` averages the
  per-image values over a dataset (the usual Eigen-style protocol).
* `official_metrics` / `official_sample_metrics` — reproduce `test/metrics_st.py` and
  `test/eval.py` of the official DAP release exactly (notes/official_dap_spec.md §7–8):
  normalized units (1.0 = 100 m), fp32, per-dataset clipping and valid masks, the
  "mask post-processing" of the prediction, and its "rmse" that is really the mean
  absolute error (`sqrt(x²).mean()`). Use them only to compare with published numbers.

Inputs may be numpy arrays or torch tensors of any matching shape.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

DELTA_BASE = 1.25  # δk counts pixels whose max(pred/gt, gt/pred) < 1.25**k
MIN_RANGE_M = 1e-3  # predictions are floored here so that log and ratios stay finite
OFFICIAL_MAX_RANGE_M = 100.0  # the official normalization: 1.0 = 100 m
OFFICIAL_MIN_NORM = 0.001  # official gt clip floor, normalized units

# Official per-dataset clipping (metres) before the valid mask (gt <= 100) is taken:
# a clip above 100 pushes far pixels out of the mask, a clip at 100 keeps them in at 1.0.
OFFICIAL_CLIP_M: dict[str, float] = {
    "stanford2d3d": 101.0,
    "matterport3d": 101.0,
    "deep360": 100.0,
    "insta23k": 100.0,
    "dap2m": 100.0,
    # Not in the official release; synthetic sky is +inf, treated like Insta/Deep360 far pixels.
    "synthetic": 100.0,
}

METRIC_NAMES = (
    "abs_rel",
    "sq_rel",
    "rmse",
    "rmse_log",
    "mae",
    "log10",
    "silog",
    "delta1",
    "delta2",
    "delta3",
)
OFFICIAL_METRIC_NAMES = ("a1", "a2", "a3", "rmse", "rmse_log", "abs_", "abs_rel", "sq_rel", "log10")


def _to_numpy(x, name: str) -> np.ndarray:
    """Detach a tensor or array into a float64/bool numpy array."""
    if x is None:
        raise ValueError(f"{name} is None")
    if hasattr(x, "detach"):
        x = x.detach().cpu().numpy()
    arr = np.asarray(x)
    if arr.dtype == np.float16 or (arr.dtype.kind == "V"):
        arr = arr.astype(np.float32)
    return arr


def metric_mask(
    gt_m, valid=None, *, max_range_m: float | None = None, min_range_m: float = MIN_RANGE_M
) -> np.ndarray:
    """Pixels that count: `valid` and ground truth finite, above `min_range_m`, within range.

    Sky (+inf) and invalid (nan) ground truth never count; `max_range_m` drops farther pixels.
    """
    gt = _to_numpy(gt_m, "gt_m")
    mask = np.isfinite(gt) & (gt > min_range_m)
    if max_range_m is not None:
        mask &= gt <= max_range_m
    if valid is not None:
        v = _to_numpy(valid, "valid").astype(bool)
        if v.shape != gt.shape:
            raise ValueError(f"valid shape {v.shape} does not match gt_m shape {gt.shape}")
        mask &= v
    return mask


def depth_metrics(
    pred_m,
    gt_m,
    valid=None,
    *,
    max_range_m: float | None = None,
    min_range_m: float = MIN_RANGE_M,
) -> dict[str, float]:
    """Pixel-pooled depth metrics of one image (or of all pixels given), in metres.

    pred_m, gt_m: range in metres, same shape. gt +inf (sky) and nan are ignored;
    valid: optional bool mask of the same shape; max_range_m: ignore gt beyond it and clip
    the prediction to it (a model cannot be asked for more than its range).
    Returns abs_rel, sq_rel (m), rmse (m, a true RMSE), rmse_log (natural log), mae (m),
    log10, silog (λ = 1, ×100 as in KITTI), delta1..3 (fractions) and n_pixels.
    All values are nan when no pixel counts (n_pixels = 0).
    """
    pred = _to_numpy(pred_m, "pred_m")
    gt = _to_numpy(gt_m, "gt_m")
    if pred.shape != gt.shape:
        raise ValueError(f"pred_m shape {pred.shape} does not match gt_m shape {gt.shape}")
    mask = metric_mask(gt, valid, max_range_m=max_range_m, min_range_m=min_range_m)
    n = int(mask.sum())
    if n == 0:
        return {**dict.fromkeys(METRIC_NAMES, float("nan")), "n_pixels": 0}
    g = gt[mask].astype(np.float64)
    p = pred[mask].astype(np.float64)
    if np.isnan(p).any():
        raise ValueError("pred_m is nan at pixels where the ground truth is valid")
    upper = np.inf if max_range_m is None else max_range_m
    p = np.clip(p, min_range_m, upper)
    if not np.isfinite(p).all():
        raise ValueError("pred_m is infinite at valid pixels; pass max_range_m to clip it")
    err = p - g
    ratio = np.maximum(p / g, g / p)
    log_diff = np.log(p) - np.log(g)
    out = {
        "abs_rel": float(np.mean(np.abs(err) / g)),
        "sq_rel": float(np.mean(err**2 / g)),
        "rmse": float(np.sqrt(np.mean(err**2))),
        "rmse_log": float(np.sqrt(np.mean(log_diff**2))),
        "mae": float(np.mean(np.abs(err))),
        "log10": float(np.mean(np.abs(np.log10(p) - np.log10(g)))),
        "silog": float(100.0 * np.sqrt(max(np.mean(log_diff**2) - np.mean(log_diff) ** 2, 0.0))),
    }
    for k in (1, 2, 3):
        out[f"delta{k}"] = float(np.mean(ratio < DELTA_BASE**k))
    out["n_pixels"] = n
    return out


def mask_metrics(prob, gt_m, valid=None, *, threshold_m: float, decision: float = 0.5):
    """Range-mask quality at one threshold: IoU and pixel accuracy of (prob >= decision).

    The target is gt_m <= threshold_m over valid pixels; sky (+inf) is a valid "beyond".
    """
    p = _to_numpy(prob, "prob") >= decision
    gt = _to_numpy(gt_m, "gt_m")
    ok = ~np.isnan(gt)
    if valid is not None:
        ok &= _to_numpy(valid, "valid").astype(bool)
    target = gt <= threshold_m
    inter = np.sum(p & target & ok)
    union = np.sum((p | target) & ok)
    n = int(ok.sum())
    return {
        "iou": float(inter / union) if union else float("nan"),
        "accuracy": float(np.sum((p == target) & ok) / n) if n else float("nan"),
        "n_pixels": n,
    }


@dataclass
class MetricAccumulator:
    """Mean of per-image metric dicts; images with no valid pixel are counted, not averaged."""

    sums: dict[str, float] = field(default_factory=dict)
    count: int = 0
    empty: int = 0

    def add(self, metrics: Mapping[str, float]) -> None:
        if metrics.get("n_pixels", 1) == 0:
            self.empty += 1
            return
        for key, value in metrics.items():
            if key == "n_pixels":
                continue
            self.sums[key] = self.sums.get(key, 0.0) + float(value)
        self.count += 1

    def add_image(self, pred_m, gt_m, valid=None, **kwargs) -> dict[str, float]:
        """Compute `depth_metrics` of one image, add it, and return it."""
        metrics = depth_metrics(pred_m, gt_m, valid, **kwargs)
        self.add(metrics)
        return metrics

    def result(self) -> dict[str, float]:
        """Per-image mean of every metric, plus `images` and `empty_images`."""
        out = {k: v / self.count for k, v in self.sums.items()} if self.count else {}
        out["images"] = self.count
        out["empty_images"] = self.empty
        return out


# ----------------------------------------------------------------------------------------------
# Official protocol (notes/official_dap_spec.md §7–8). Torch, fp32, normalized units.


def official_metrics(gt_norm, pred_norm, mask) -> dict[str, float]:
    """`compute_depth_metrics(gt, pred, mask)` of the official `test/metrics_st.py`, verbatim.

    gt_norm, pred_norm: normalized depth (1.0 = 100 m), [B,1,H,W] or [H,W]; mask: bool, same
    shape. Note the official "rmse" is mean |gt − pred| (sqrt of a square before the mean) and
    "rmse_log" likewise; units of abs_, rmse and sq_rel are 100 m. The official evaluator calls
    this one image at a time.
    """
    import torch

    gt = torch.as_tensor(_to_numpy(gt_norm, "gt_norm"), dtype=torch.float32)
    pred = torch.as_tensor(_to_numpy(pred_norm, "pred_norm"), dtype=torch.float32)
    m = torch.as_tensor(_to_numpy(mask, "mask").astype(bool))
    if gt.dim() == 4:
        gt, pred, m = gt.squeeze(1), pred.squeeze(1), m.squeeze(1)
    gt = gt[m]
    pred = pred[m]
    thresh = torch.max(gt / pred, pred / gt)
    a1 = (thresh < 1.25).float().mean()
    a2 = (thresh < 1.25**2).float().mean()
    a3 = (thresh < 1.25**3).float().mean()
    rmse = torch.sqrt((gt - pred) ** 2).mean()
    rmse_log = torch.sqrt((torch.log10(gt) - torch.log10(pred)) ** 2).mean()
    abs_ = torch.mean(torch.abs(gt - pred))
    abs_rel = torch.mean(torch.abs(gt - pred) / gt)
    sq_rel = torch.mean((gt - pred) ** 2 / gt)
    log10 = torch.mean(torch.abs(torch.log10(pred / gt)))
    values = (a1, a2, a3, rmse, rmse_log, abs_, abs_rel, sq_rel, log10)
    return {name: float(v) for name, v in zip(OFFICIAL_METRIC_NAMES, values, strict=True)}


def official_ground_truth(gt_m, dataset: str) -> tuple[np.ndarray, np.ndarray]:
    """The official dataset classes' GT preparation: (gt_norm float32, val_mask bool).

    gt is clipped per dataset (`OFFICIAL_CLIP_M`), val_mask = (gt > 0) & (gt <= 100) & ~isnan,
    gt_norm = clip(gt / 100, 0.001, 1.0). +inf (sky) becomes the clip value.
    """
    if dataset not in OFFICIAL_CLIP_M:
        raise ValueError(
            f"no official clipping rule for dataset {dataset!r}; known: {sorted(OFFICIAL_CLIP_M)}"
        )
    gt = _to_numpy(gt_m, "gt_m").astype(np.float32).copy()
    clip_m = np.float32(OFFICIAL_CLIP_M[dataset])
    with np.errstate(invalid="ignore"):
        gt[gt > clip_m] = clip_m
        val_mask = (gt > 0) & (gt <= OFFICIAL_MAX_RANGE_M) & ~np.isnan(gt)
    gt_norm = np.clip(gt / np.float32(OFFICIAL_MAX_RANGE_M), OFFICIAL_MIN_NORM, 1.0)
    return gt_norm.astype(np.float32), val_mask


def official_postprocess(pred_norm, official_mask) -> np.ndarray:
    """Official mask post-processing: depth := 1.0 (100 m) where not (1 − mask) > 0.5.

    official_mask is the official head's output, P(beyond 100 m / sky). For this project's
    100 m head (P(range <= 100 m)) pass 1 − mask_100. Computed literally in float32.
    """
    pred = _to_numpy(pred_norm, "pred_norm").astype(np.float32).copy()
    m = _to_numpy(official_mask, "official_mask").astype(np.float32)
    keep = (np.float32(1.0) - m) > np.float32(0.5)
    pred[~keep] = 1.0
    return pred


def official_sample_metrics(
    pred_range_m, gt_m, dataset: str, *, official_mask=None
) -> dict[str, float]:
    """One image through the official protocol: GT prep, optional mask post-processing, metrics.

    pred_range_m: predicted range in metres (converted to normalized units here);
    official_mask: optional P(beyond 100 m) for the post-processing step.
    Average the returned dicts over images (as `AverageMeter` does) with `MetricAccumulator`.
    """
    gt_norm, val_mask = official_ground_truth(gt_m, dataset)
    pred = _to_numpy(pred_range_m, "pred_range_m").astype(np.float32) / np.float32(
        OFFICIAL_MAX_RANGE_M
    )
    if official_mask is not None:
        pred = official_postprocess(pred, official_mask)
    if not val_mask.any():
        return {**dict.fromkeys(OFFICIAL_METRIC_NAMES, float("nan")), "n_pixels": 0}
    out = official_metrics(gt_norm, pred, val_mask)
    out["n_pixels"] = int(val_mask.sum())
    return out
