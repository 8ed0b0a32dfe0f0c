"""Evaluate a DAP model on labeled datasets: the correct metrics or the official protocol.

`evaluate_model` returns one row per dataset: per-image means of `depth_metrics` over all
ground-truth pixels within the model's range, the same restricted to ground truth within each
mask threshold ("abs_rel@10m", ...), and the IoU of each range-mask head. With
`official=True` it instead follows the official `test/eval.py` (normalized units, per-dataset
clipping, mask post-processing, its MAE-valued "rmse"). Datasets wrapped in `HiddenLabels`
are evaluated against their hidden ground truth. Samples the reader could not use (under
`on_error: skip`) are not images of the row: `images` counts only those evaluated, and
`skipped_images` counts the others, listed as "file: cause" under `skipped` when there are any.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from dap_core.data.datasets import SKIPPED
from dap_core.metrics import (
    OFFICIAL_CLIP_M,
    MetricAccumulator,
    depth_metrics,
    mask_metrics,
    official_sample_metrics,
)
from dap_core.train.data import collate

TABLE_COLUMNS = ("abs_rel", "rmse", "mae", "delta1", "delta2", "delta3")
OFFICIAL_COLUMNS = ("abs_rel", "rmse", "a1", "a2", "a3", "abs_")


def _labeled_item(dataset, index: int) -> dict[str, Any]:
    getter = getattr(dataset, "ground_truth", None)
    return getter(index) if getter is not None else dataset[index]


def dataset_kind(dataset) -> str:
    """Reader name used to pick the official clipping rule ("synthetic" for the generator)."""
    inner = getattr(dataset, "dataset", dataset)
    return getattr(inner, "kind", "synthetic")


@torch.no_grad()
def evaluate_model(
    model,
    dataset,
    *,
    device: str | torch.device = "cpu",
    batch_size: int = 4,
    max_samples: int | None = None,
    official: bool = False,
    indices: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Metrics of `model` on `dataset` (see module docstring)."""
    from dap_core.train.tasks import predict_range

    model = model.to(device).eval()
    max_range = model.config.max_range_m
    thresholds = model.config.mask_thresholds
    if indices is None:
        n = len(dataset) if max_samples is None else min(len(dataset), max_samples)
        indices = range(n)
    kind = dataset_kind(dataset)
    if official and kind not in OFFICIAL_CLIP_M:
        raise ValueError(f"no official protocol for dataset type {kind!r}")
    overall = MetricAccumulator()
    per_t = {t: MetricAccumulator() for t in thresholds}
    masks_acc = {t: MetricAccumulator() for t in thresholds}
    indices = list(indices)
    skipped = list(getattr(dataset, "skipped", None) or [])  # left out when it was built
    for start in range(0, len(indices), batch_size):
        items = [_labeled_item(dataset, i) for i in indices[start : start + batch_size]]
        batch = collate(items)
        skipped += batch[SKIPPED]
        items = [it for it in items if SKIPPED not in it]
        if not items:
            continue
        rgb = batch["rgb"].to(device)
        pred, masks = predict_range(model, rgb, thresholds)
        pred = pred.float().cpu()
        masks = {t: m.float().cpu() for t, m in masks.items()}
        for b in range(len(items)):
            gt = batch["range_m"][b, 0]
            valid = batch["valid"][b, 0]
            if official:
                official_mask = 1.0 - masks[100][b, 0] if 100 in masks else None
                overall.add(
                    official_sample_metrics(pred[b, 0], gt, kind, official_mask=official_mask)
                )
                continue
            overall.add(depth_metrics(pred[b, 0], gt, valid, max_range_m=max_range))
            for t in thresholds:
                m = depth_metrics(pred[b, 0], gt, valid, max_range_m=float(t))
                per_t[t].add({k: m[k] for k in ("abs_rel", "rmse", "delta1", "n_pixels")})
                masks_acc[t].add(mask_metrics(masks[t][b, 0], gt, valid, threshold_m=t))
    result: dict[str, Any] = overall.result()
    result["skipped_images"] = len(skipped)
    if skipped:
        result["skipped"] = skipped
    if not official:
        for t in thresholds:
            for key, value in per_t[t].result().items():
                if key in ("abs_rel", "rmse", "delta1"):
                    result[f"{key}@{t}m"] = value
            result[f"mask_iou@{t}m"] = masks_acc[t].result().get("iou", float("nan"))
    return result


def evaluate_many(model, datasets: Mapping[str, Any], **kwargs) -> dict[str, dict[str, float]]:
    """{dataset name: metrics} for several datasets."""
    return {name: evaluate_model(model, ds, **kwargs) for name, ds in datasets.items()}


def skip_report(results: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """One line per skipped sample of every dataset: "NAME: skipped file: cause"."""
    return [
        f"{name}: skipped {reason}"
        for name, row in results.items()
        for reason in row.get("skipped", ())
    ]


def format_table(results: Mapping[str, Mapping[str, float]], *, official: bool = False) -> str:
    """Markdown table, one row per dataset; units in the header (rmse / mae in metres)."""
    columns = list(OFFICIAL_COLUMNS if official else TABLE_COLUMNS)
    if not official:
        extra = sorted(
            {k for r in results.values() for k in r if "@" in k},
            key=lambda k: (k.split("@")[0], float(k.split("@")[1][:-1])),
        )
        columns += extra
    units = {"rmse": "rmse (m)", "mae": "mae (m)"}
    if official:
        units = {"rmse": "rms (=MAE, ×100 m)", "abs_": "abs (×100 m)"}
    header = ["dataset", "images", *(units.get(c, c) for c in columns)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, row in results.items():
        cells = [name, str(int(row.get("images", 0)))]
        cells += [f"{row[c]:.4f}" if _finite(row.get(c)) else "-" for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def _json_safe(results: Mapping[str, Mapping[str, float]]) -> dict:
    """Non-finite metrics (no pixel to average) become null: standard JSON has no NaN."""
    return {
        name: {
            k: (None if isinstance(v, float) and not math.isfinite(v) else v)
            for k, v in row.items()
        }
        for name, row in results.items()
    }


def write_results(
    results: Mapping[str, Mapping[str, float]], directory: str | Path, *, official: bool = False
) -> Path:
    """eval.json and eval.md (the table) in `directory`, each written atomically (a full disk
    leaves the previous file or none, never an empty one); returns the .md path."""
    from dap_core.files import atomic_write_bytes

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    stem = "eval_official" if official else "eval"
    text = json.dumps(_json_safe(results), indent=1, sort_keys=True, allow_nan=False)
    atomic_write_bytes(directory / f"{stem}.json", text.encode())
    md = directory / f"{stem}.md"
    atomic_write_bytes(md, (format_table(results, official=official) + "\n").encode())
    return md
