"""Feature distillation: the student's head inputs pulled towards the teacher's.

Owns `feature_distill_loss` and `FeatureDistillTask`, the training task `dap distill` uses when
`distill.feature_weight` > 0. The student's four adapter grids (what its heads read, at its
`layer_indices`) are compared with the teacher's four (at the teacher's `layer_indices`) on the
same augmented batch, so the teacher runs on every step (without gradients); the loss is added,
weighted, to the stage losses on the cached labels. Why: a student started from the teacher
(`init_from_teacher`) has the teacher's heads, which read the teacher's features; matching
those features gives every backbone block a target, where the labels give only the output.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from dap_core.train.tasks import DepthTask, normalize_rgb, unwrap

__all__ = ["FeatureDistillTask", "feature_distill_loss"]


def feature_distill_loss(student: list[torch.Tensor], teacher: list[torch.Tensor]) -> torch.Tensor:
    """Mean over the grids of |s - t|^2 / |t|^2 (squared norms over the batch): each pyramid
    level counts alike whatever its feature scale, and 1 means "as far as no features"."""
    if len(student) != len(teacher):
        raise ValueError(f"{len(student)} student grids against {len(teacher)} of the teacher")
    terms = []
    for i, (s, t) in enumerate(zip(student, teacher, strict=True)):
        if s.shape != t.shape:
            raise ValueError(
                f"student grid {i} is {tuple(s.shape)}, the teacher's {tuple(t.shape)}: "
                "feature distillation needs the teacher's width and input size"
            )
        t = t.float()
        terms.append((s.float() - t).square().sum() / t.square().sum().clamp_min(1e-12))
    return torch.stack(terms).mean()


class FeatureDistillTask(DepthTask):
    """`DepthTask` plus `weight` x the feature loss against a frozen teacher."""

    name = "depth+features"

    def __init__(self, cfg, model: nn.Module, teacher: nn.Module) -> None:
        super().__init__(cfg, model)
        mine, theirs = model.config.embed_dim, teacher.config.embed_dim
        if mine != theirs:
            raise ValueError(
                f"distill.feature_weight: the student's embed_dim {mine} is not the teacher's "
                f"{theirs}; feature distillation compares their grids channel by channel"
            )
        self.weight = float(cfg.distill.feature_weight)
        self.teacher = teacher.eval().requires_grad_(False)

    def step(self, module: nn.Module, batch: dict[str, Any]):
        grids: list[torch.Tensor] = []
        hook = unwrap(module).adapter.register_forward_hook(lambda _m, _i, out: grids.append(out))
        try:
            total, logs, pred = super().step(module, batch)
        finally:
            hook.remove()
        teacher = self.teacher
        first = next(teacher.parameters())
        if first.device != batch["rgb"].device:
            teacher.to(batch["rgb"].device)
        with torch.no_grad():
            target = teacher.features(normalize_rgb(batch["rgb"], teacher.config))
        feature = feature_distill_loss(grids, target)
        total = total + self.weight * feature
        logs = {**logs, "feature": float(feature.detach()), "total": float(total.detach())}
        return total, logs, pred
