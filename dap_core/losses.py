"""The DAP training losses (paper eqs. 1–6): SILog, dense fidelity, gradient, normal, point and
range-mask terms, with ERP distortion weighting; and one term outside the paper, "absrel" (the
AbsRel metric itself, for students trained to follow a teacher by that measure; off by default).

Units and frames: every range is metres along the pixel's ray (see `dap_core.geometry`),
+inf = sky / beyond, NaN = invalid. Tensors are [B, 1, H, W] at the `DAPLoss` boundary and
[B, H, W] inside. All arithmetic runs in float32 with autocast disabled (see `DAPLoss`).

Where the paper is silent, this module chooses (each choice is named again where it is made):
- Ground truth beyond `max_range_m` (finite) is clamped to it, as the official data readers do
  (`> 100 -> 100`); the model cannot predict more. Sky (+inf) is excluded from every depth term
  and counts as "beyond T" for every range mask, whatever `valid` says there.
- SILog means are taken over all valid pixels of the batch at once (as the official
  `SiLogLoss`), weighted by the distortion map.
- The distortion map weights every per-pixel ERP term (SILog, gradient, normal, point, mask);
  the dense fidelity term lives in perspective views, which have no ERP distortion, so it is
  not weighted.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F
from torch import nn

from dap_core import geometry

__all__ = [
    "PAPER_TERMS",
    "TERMS",
    "DAPLoss",
    "LossConfig",
    "absrel_loss",
    "dense_fidelity_loss",
    "edge_mask",
    "gradient_loss",
    "normal_loss",
    "point_loss",
    "range_mask_loss",
    "silog_loss",
    "view_gram_loss",
]

PAPER_TERMS = ("silog", "df", "grad", "normal", "pts", "mask")  # eq. 6, the default
TERMS = (*PAPER_TERMS, "absrel")

MIN_RANGE_M = 1e-3  # below 1 mm the log is continued linearly, so pred <= 0 stays finite
SILOG_EPS = 1e-6  # sqrt(v + eps) − sqrt(eps): 0 at the minimum, gradient bounded by 1/(2√eps)
WEIGHT_SUM_FLOOR = 1e-12  # denominator floor: an empty mask gives a mean of 0, not 0/0
DICE_SMOOTH = 1.0  # Dice smoothing, in (mean-1-weighted) pixels: empty vs empty scores 0
SOBEL_NORM = 8.0  # Sobel / 8 = per-pixel slope on a linear ramp; a step Δ answers Δ / 2


@dataclass(frozen=True)
class LossConfig:
    """Weights and knobs of the DAP loss (eq. 6). Build from YAML with `LossConfig.from_dict`.

    A term is computed only when its name is in `enabled` (the Table 5 ablations: drop "df" and
    "grad" for "w/o sharpness", "normal" and "pts" for "w/o geometry", "mask" for "w/o range
    mask", set `distortion_weighting: false` for "w/o distortion map"). The default is the
    paper's six terms; "absrel" (outside the paper) is computed only when named.
    """

    silog_weight: float = 1.0
    df_weight: float = 0.4
    grad_weight: float = 5.0
    normal_weight: float = 2.0
    pts_weight: float = 2.0
    mask_weight: float = 2.0
    absrel_weight: float = 1.0
    enabled: tuple[str, ...] = PAPER_TERMS
    silog_lambda: float = 0.5  # variance weight λ of SILog (official 0.5; 1.0 = scale-invariant)
    edge_threshold: float = 0.1  # on |Sobel(log range)| / 8: a ~22 % range step between pixels
    df_fov_deg: float = 90.0  # 12 views of 90° cover the sphere (vertices are 63.4° apart)
    df_view_size: int | None = None  # None: match the ERP's angular resolution at view centre
    distortion_weighting: bool = True
    mask_dice_weight: float = 0.5

    def __post_init__(self) -> None:
        object.__setattr__(self, "enabled", tuple(self.enabled))
        unknown = [t for t in self.enabled if t not in TERMS]
        if unknown:
            raise ValueError(f"unknown loss terms {unknown} in 'enabled'; known: {list(TERMS)}")
        if not self.enabled:
            raise ValueError("LossConfig.enabled is empty: enable at least one loss term")
        for term in TERMS:
            w = getattr(self, f"{term}_weight")
            if not (math.isfinite(w) and w >= 0):
                raise ValueError(f"{term}_weight must be finite and >= 0, got {w}")
        if not 0.0 <= self.silog_lambda <= 1.0:
            raise ValueError(f"silog_lambda must be in [0, 1], got {self.silog_lambda}")
        if not self.edge_threshold >= 0:
            raise ValueError(f"edge_threshold must be >= 0, got {self.edge_threshold}")
        if not 0.0 < self.df_fov_deg < 180.0:
            raise ValueError(f"df_fov_deg must be in (0, 180), got {self.df_fov_deg}")
        if self.df_view_size is not None and self.df_view_size < 2:
            raise ValueError(f"df_view_size must be >= 2 or null, got {self.df_view_size}")
        if not self.mask_dice_weight >= 0:
            raise ValueError(f"mask_dice_weight must be >= 0, got {self.mask_dice_weight}")

    @classmethod
    def from_dict(cls, values: Mapping[str, object] | None) -> LossConfig:
        """Config from a (YAML) mapping; missing keys keep their defaults, unknown keys fail."""
        values = dict(values or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown LossConfig keys {unknown}; known: {sorted(known)}")
        if "enabled" in values:
            enabled = values["enabled"]
            if isinstance(enabled, str) or not isinstance(enabled, (list, tuple)):
                raise ValueError(f"'enabled' must be a list of term names, got {enabled!r}")
            values["enabled"] = tuple(enabled)
        return cls(**values)  # type: ignore[arg-type]

    def to_dict(self) -> dict[str, object]:
        """Plain mapping (YAML / JSON friendly) that `from_dict` reads back."""
        out = asdict(self)
        out["enabled"] = list(self.enabled)
        return out

    def weight(self, term: str) -> float:
        return float(getattr(self, f"{term}_weight"))


# ---------------------------------------------------------------------------------------------
# Small helpers
# ---------------------------------------------------------------------------------------------


def _weighted_mean(
    values: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """Σ w·x / Σ w over `mask`; 0 (still attached to the graph) when the mask is empty.

    `values` must already be finite everywhere: `where` alone does not stop NaN gradients.
    """
    w = mask.to(values.dtype)
    if weight is not None:
        w = w * weight
    return (values * w).sum() / w.sum().clamp_min(WEIGHT_SUM_FLOOR)


def _safe_log(x: torch.Tensor, floor: float = MIN_RANGE_M) -> torch.Tensor:
    """log(x) above `floor`, continued by its tangent below: finite value and gradient for x <= 0.

    The linear continuation keeps pushing a collapsed prediction upwards instead of clamping its
    gradient to zero.
    """
    log_part = torch.log(x.clamp_min(floor))
    linear_part = math.log(floor) + (x - floor) / floor
    return torch.where(x > floor, log_part, linear_part)


def _pad_erp(x: torch.Tensor) -> torch.Tensor:
    """Pad [B, 1, H, W] by one pixel: columns wrap (the seam is continuous), rows replicate."""
    x = torch.cat([x[..., -1:], x, x[..., :1]], dim=-1)
    return F.pad(x, (0, 0, 1, 1), mode="replicate")


# ---------------------------------------------------------------------------------------------
# The terms. Inputs: pred / gt [B, H, W] metres, masks bool [B, H, W], weight [H, W] or None.
# ---------------------------------------------------------------------------------------------


def silog_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor | None = None,
    lam: float = 0.5,
) -> torch.Tensor:
    """Scale-invariant log loss sqrt(E[d²] − λ E[d]²), d = log gt − log pred (eq. 1, official).

    E is the (weighted) mean over `mask` across the whole batch. Natural log, no ×10 scale, as
    the official `SiLogLoss`. Chosen guards (the official code has none): pred below 1 mm uses
    a linear continuation of the log; the root is sqrt(v + ε) − sqrt(ε) so the minimum is
    exactly 0 with a finite gradient; an empty mask gives 0.
    """
    gt_safe = torch.where(mask, gt, torch.ones_like(gt))
    pred_safe = torch.where(mask, pred, torch.ones_like(pred))
    d = torch.log(gt_safe) - _safe_log(pred_safe)  # [B, H, W], 0 outside the mask
    mean_d2 = _weighted_mean(d * d, mask, weight)
    mean_d = _weighted_mean(d, mask, weight)
    # With λ = 1 rounding can make the variance slightly negative.
    variance = (mean_d2 - lam * mean_d * mean_d).clamp_min(0.0)
    return torch.sqrt(variance + SILOG_EPS) - math.sqrt(SILOG_EPS)


def absrel_loss(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Mean |pred − gt| / gt over `mask` (weighted): the AbsRel metric as a loss.

    Why beside SILog: SILog with λ = 0 is the RMS of the log error, whose gradient grows with
    each pixel's error, so a few pixels a small model cannot get right (depth edges) draw most
    of the effort; AbsRel weighs every pixel's error alike, which is what a student judged by
    AbsRel against its teacher should minimise. Not in the paper; `gt` must be > 0 on `mask`.
    """
    gt_safe = torch.where(mask, gt, torch.ones_like(gt))
    pred_safe = torch.where(mask, pred, gt_safe)  # 0 error outside the mask
    return _weighted_mean((pred_safe - gt_safe).abs() / gt_safe, mask, weight)


def _view_size(height: int, fov_deg: float) -> int:
    """View side (pixels) whose centre pixel spans the ERP pixel angle π / H."""
    return max(2, round(2.0 * math.tan(math.radians(fov_deg) / 2) * height / math.pi))


def view_gram_loss(
    pred_views: torch.Tensor, gt_views: torch.Tensor, views_valid: torch.Tensor
) -> torch.Tensor:
    """Mean over views of ‖G(D̂_pred) − G(D̂_gt)‖²_F / s², views [N, s, s] metres, valid bool.

    Chosen where the paper is silent:
    - Normalisation: each view map D is divided by its own mean over valid pixels (invalid
      pixels are 0 in both), so the term is scale-invariant per view (metric scale is SILog's
      job) and the entries of D̂ are ~1.
    - Gram: G = D̂ D̂ᵀ / s, row correlations with entries ~1; ‖ΔG‖²_F / s² is the mean squared
      Gram entry difference, independent of the view size. Views without valid pixels are
      left out of the mean.
    Scale: to first order ΔG_ij = δ_i + δ_j, with δ_i the relative error of row i's mean, so
    the term is ≈ 2·mean(δ²): twice the mean squared relative error of view-row means. It is
    insensitive to pixel noise that averages out along a row.
    """
    m = views_valid.to(gt_views.dtype)
    count = m.sum(dim=(-2, -1))  # [N]
    maps = torch.stack([pred_views, gt_views], dim=1) * m[:, None]  # [N, 2, s, s]
    mean = maps.sum(dim=(-2, -1)) / count[:, None].clamp_min(1.0)  # [N, 2]
    # A collapsed prediction (mean <= 0) must not divide by zero.
    normed = maps / mean.clamp_min(MIN_RANGE_M)[..., None, None]
    gram = normed @ normed.transpose(-1, -2) / normed.shape[-1]  # [N, 2, s, s]
    per_view = (gram[:, 0] - gram[:, 1]).square().mean(dim=(-2, -1))  # [N]
    has_pixels = (count > 0).to(per_view.dtype)
    return (per_view * has_pixels).sum() / has_pixels.sum().clamp_min(1.0)


def dense_fidelity_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    fov_deg: float = 90.0,
    size: int | None = None,
) -> torch.Tensor:
    """Dense fidelity (eq. 2): Gram matrices of normalised depth in the 12 icosahedron views.

    Both range maps [B, H, W] are sampled (bilinear, renormalised over valid ERP pixels, see
    `geometry.erp_to_views`) into square pinhole views of `fov_deg` looking at the 12
    icosahedron vertices, then compared by `view_gram_loss` averaged over all B·12 views.
    `size` None matches the ERP's angular resolution at the view centre. It is 0 for equal
    maps (and maps equal up to a per-view scale) and positive otherwise.
    """
    s = size if size is not None else _view_size(gt.shape[-2], fov_deg)
    directions = geometry.icosahedron_vertices(dtype=torch.float32).to(gt.device)
    gt_safe = torch.where(mask, gt, torch.zeros_like(gt))
    pred_safe = torch.where(mask, pred, torch.zeros_like(pred))
    erp = torch.stack([pred_safe, gt_safe], dim=1)  # [B, 2, H, W]
    views, views_valid = geometry.erp_to_views(erp, directions, fov_deg, s, valid=mask)
    # views [B, V, 2, s, s], views_valid [B, V, s, s]
    views, views_valid = views.flatten(0, 1), views_valid.flatten(0, 1)
    return view_gram_loss(views[:, 0], views[:, 1], views_valid)


@torch.no_grad()
def edge_mask(
    gt: torch.Tensor, known: torch.Tensor, threshold: float, max_range_m: float
) -> torch.Tensor:
    """Ground-truth depth edges: |Sobel(log range)| / 8 > threshold, [B, H, W] bool (eq. 3).

    Chosen where the paper is silent: the Sobel runs on log range (a relative, scale-free edge
    strength that matches SILog) and is divided by 8, so a ramp answers its per-pixel slope and
    a step of Δ log-range answers Δ / 2 at the two pixels beside it. Columns wrap at the seam,
    rows replicate at the poles. Sky is filled with `max_range_m`, so an object's outline
    against the sky is an edge. A pixel is an edge only when its 3×3 neighbourhood is `known`
    (valid depth or sky); the caller intersects the result with depth validity. `gt` may hold
    +inf (clamped to `max_range_m`) and NaN (must be outside `known`).
    """
    log_gt = gt.clamp(MIN_RANGE_M, max_range_m).log()
    log_gt = torch.where(known, torch.nan_to_num(log_gt, nan=0.0), 0.0)[:, None]  # [B, 1, H, W]
    padded = _pad_erp(log_gt)  # [B, 1, H+2, W+2]
    kx = torch.tensor([[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]], device=gt.device)
    kernels = torch.stack([kx, kx.T])[:, None] / SOBEL_NORM  # [2, 1, 3, 3]
    grad = F.conv2d(padded, kernels.to(log_gt.dtype))  # [B, 2, H, W]
    magnitude = torch.linalg.vector_norm(grad, dim=1)  # [B, H, W]
    unknown = 1.0 - known.to(log_gt.dtype)[:, None]
    all_known = F.max_pool2d(_pad_erp(unknown), 3, stride=1)[:, 0] == 0
    return (magnitude > threshold) & all_known


def gradient_loss(
    pred: torch.Tensor,
    gt: torch.Tensor,
    mask: torch.Tensor,
    edges: torch.Tensor,
    weight: torch.Tensor | None = None,
    lam: float = 0.5,
) -> torch.Tensor:
    """Gradient loss (eq. 3): SILog restricted to the ground-truth edge mask (see `edge_mask`)."""
    return silog_loss(pred, gt, mask & edges, weight, lam)


def normal_loss(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Normal loss (eq. 4): mean over valid pixels of ‖n_pred − n_gt‖₁ (sum over x, y, z).

    Normals come from `geometry.range_to_normals` on both maps with the pixels outside `mask`
    removed from *both*, so the two normals at a pixel use the same neighbours (a prediction
    equal to the ground truth on valid pixels scores exactly 0). Range [0, 2√3].
    """
    nan = torch.full_like(gt, float("nan"))
    n_pred, ok_pred = geometry.range_to_normals(torch.where(mask, pred, nan))
    n_gt, ok_gt = geometry.range_to_normals(torch.where(mask, gt, nan))
    ok = mask & ok_pred & ok_gt
    # geometry zeroes invalid normals, so the difference is finite everywhere.
    per_pixel = (n_pred - n_gt).abs().sum(dim=-1)  # [B, H, W]
    return _weighted_mean(per_pixel, ok, weight)


def point_loss(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, weight: torch.Tensor | None = None
) -> torch.Tensor:
    """Point loss (eq. 5): mean over valid pixels of ‖P_pred − P_gt‖₁ in metres (sum of x, y, z).

    As both points lie on the pixel's ray this equals |Δrange|·‖ray‖₁; it is kept in metres as
    the paper writes it, so its value grows with scene size while its gradient stays bounded.
    """
    p_pred = geometry.range_to_points(torch.where(mask, pred, torch.zeros_like(pred)))
    p_gt = geometry.range_to_points(torch.where(mask, gt, torch.zeros_like(gt)))
    per_pixel = (p_pred - p_gt).abs().sum(dim=-1)  # [B, H, W]
    return _weighted_mean(per_pixel, mask, weight)


def range_mask_loss(
    prob: torch.Tensor,
    target: torch.Tensor,
    mask: torch.Tensor,
    weight: torch.Tensor | None = None,
    dice_weight: float = 0.5,
) -> torch.Tensor:
    """Range-mask loss for one threshold: ‖M − M_gt‖² + dice_weight · Dice(M, M_gt).

    `prob` [B, H, W] is the head's probability that range <= T, `target` the same from ground
    truth (bool), both over `mask`. Chosen: the squared error is a weighted mean over the batch;
    Dice = 1 − (2 Σ w M M_gt + 1) / (Σ w M + Σ w M_gt + 1) per image, averaged over images.
    Both are 0 when M equals M_gt and positive otherwise.
    """
    t = target.to(prob.dtype)
    prob = torch.where(mask, prob, torch.zeros_like(prob))
    mse = _weighted_mean((prob - t).square(), mask, weight)
    w = mask.to(prob.dtype)
    if weight is not None:
        w = w * weight
    inter = (w * prob * t).sum(dim=(-2, -1))  # [B]
    total = (w * prob).sum(dim=(-2, -1)) + (w * t).sum(dim=(-2, -1))
    dice = 1.0 - (2.0 * inter + DICE_SMOOTH) / (total + DICE_SMOOTH)
    return mse + dice_weight * dice.mean()


# ---------------------------------------------------------------------------------------------
# The total
# ---------------------------------------------------------------------------------------------


def _check_map(name: str, x: torch.Tensor, shape: torch.Size | None = None) -> None:
    if x.ndim != 4 or x.shape[1] != 1:
        raise ValueError(f"{name} must be [B, 1, H, W], got shape {tuple(x.shape)}")
    if shape is not None and x.shape != shape:
        raise ValueError(f"{name} has shape {tuple(x.shape)}, expected {tuple(shape)}")


class DAPLoss(nn.Module):
    """The weighted total of eq. 6 and every term for logging.

    Numerics: the loss always runs in float32 with autocast switched off, whatever the input
    dtype (bf16/fp16 inputs are upcast; gradients flow back in their dtype). In bf16 the Gram
    differences of L_DF (entries ~1, differences ~1e-3) and the log / sqrt of SILog near its
    minimum would be lost to its 8-bit mantissa.
    """

    def __init__(self, config: LossConfig | None = None) -> None:
        super().__init__()
        self.config = config if config is not None else LossConfig()

    def forward(
        self,
        pred_range_m: torch.Tensor,
        gt_range_m: torch.Tensor,
        valid: torch.Tensor,
        pred_masks: Mapping[int, torch.Tensor] | None = None,
        max_range_m: float = 100.0,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """Total loss (scalar) and a log: each enabled term's unweighted value, "mask_<T>" per
        threshold, "grad_edge_fraction" (share of valid pixels on edges) and "total".

        pred_range_m, gt_range_m [B, 1, H, W] metres (gt: +inf sky, NaN invalid); valid
        [B, 1, H, W] bool; pred_masks {T metres: probability [B, 1, H, W] that range <= T}.
        """
        _check_map("pred_range_m", pred_range_m)
        _check_map("gt_range_m", gt_range_m, pred_range_m.shape)
        _check_map("valid", valid, pred_range_m.shape)
        if not max_range_m > 0:
            raise ValueError(f"max_range_m must be > 0, got {max_range_m}")
        cfg = self.config
        pred_masks = dict(pred_masks or {})
        if "mask" in cfg.enabled:
            if not pred_masks:
                raise ValueError(
                    "the mask loss is enabled but pred_masks is empty; pass the mask heads' "
                    "probabilities or remove 'mask' from LossConfig.enabled"
                )
            for t, prob in pred_masks.items():
                _check_map(f"pred_masks[{t}]", prob, pred_range_m.shape)
                if not t > 0:
                    raise ValueError(f"mask threshold must be > 0 metres, got {t}")

        with torch.autocast(device_type=pred_range_m.device.type, enabled=False):
            terms = self._terms(pred_range_m, gt_range_m, valid, pred_masks, max_range_m)
        total = torch.stack([cfg.weight(t) * terms[t] for t in TERMS if t in terms]).sum()
        names = [*terms, "total"]
        logged = torch.stack([*terms.values(), total]).detach().cpu().tolist()  # one sync
        return total, dict(zip(names, logged, strict=True))

    def _terms(
        self,
        pred_range_m: torch.Tensor,
        gt_range_m: torch.Tensor,
        valid: torch.Tensor,
        pred_masks: dict[int, torch.Tensor],
        max_range_m: float,
    ) -> dict[str, torch.Tensor]:
        cfg = self.config
        pred = pred_range_m[:, 0].float()  # [B, H, W]
        gt_raw = gt_range_m[:, 0].float()
        valid = valid[:, 0].to(torch.bool)
        depth_ok = valid & torch.isfinite(gt_raw) & (gt_raw > 0)
        sky = torch.isposinf(gt_raw)
        # Clamp far returns to D_max (official readers do the same); invalid pixels become 1 m
        # placeholders so that no inf/NaN enters any arithmetic below.
        gt = torch.where(depth_ok, gt_raw.clamp(max=max_range_m), torch.ones_like(gt_raw))
        H, W = gt.shape[-2:]
        weight = (
            geometry.distortion_weights(H, W, device=gt.device, dtype=torch.float32)
            if cfg.distortion_weighting
            else None
        )

        # Pixels whose range is known: a depth, or sky (+inf is "beyond" by convention, REP 117,
        # even where `valid` is False).
        known = depth_ok | sky
        terms: dict[str, torch.Tensor] = {}
        if "silog" in cfg.enabled:
            terms["silog"] = silog_loss(pred, gt, depth_ok, weight, cfg.silog_lambda)
        if "absrel" in cfg.enabled:
            terms["absrel"] = absrel_loss(pred, gt, depth_ok, weight)
        if "df" in cfg.enabled:
            terms["df"] = dense_fidelity_loss(pred, gt, depth_ok, cfg.df_fov_deg, cfg.df_view_size)
        if "grad" in cfg.enabled:
            edges = edge_mask(gt_raw, known, cfg.edge_threshold, max_range_m) & depth_ok
            terms["grad"] = gradient_loss(pred, gt, depth_ok, edges, weight, cfg.silog_lambda)
            terms["grad_edge_fraction"] = _weighted_mean(edges.float(), depth_ok, weight).detach()
        if "normal" in cfg.enabled:
            terms["normal"] = normal_loss(pred, gt, depth_ok, weight)
        if "pts" in cfg.enabled:
            terms["pts"] = point_loss(pred, gt, depth_ok, weight)
        if "mask" in cfg.enabled:
            per_threshold = []
            for t in sorted(pred_masks):
                target = depth_ok & (gt_raw <= t)
                value = range_mask_loss(
                    pred_masks[t][:, 0].float(), target, known, weight, cfg.mask_dice_weight
                )
                terms[f"mask_{t}"] = value
                per_threshold.append(value)
            # Averaged over thresholds, so the weight does not depend on the number of heads.
            terms["mask"] = torch.stack(per_threshold).mean()
        return terms
