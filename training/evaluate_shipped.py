"""Evaluation table of a DAP model on the synthetic domains, at camera resolution, per range band.

Runs the production inference path (dap_core.runtime.Predictor: resize to the model input and
back) on held-out synthetic panoramas of both appearance domains and prints a Markdown table:
AbsRel, RMSE (m, a true RMSE), δ1 on pixels whose true range is within each threshold, the
100 m range-mask IoU, and a reference row per domain: the best constant guess (each image's
true median range, an oracle scale no model has) to show what the numbers mean.

    python training/evaluate_shipped.py --weights weights/dap_small [--n 64] [--size 256x512]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dap_core.commands.common import parse_panorama_size
from dap_core.data.synthetic import generate_panorama
from dap_core.metrics import depth_metrics
from dap_core.runtime import Predictor

THRESHOLDS_M = (10, 20, 50, 100)
EVAL_SEED_OFFSET = 900_000  # the held-out seeds the training configs evaluate on


def evaluate(predictor, domain: str, n: int, size: tuple[int, int]) -> dict[str, dict]:
    """Pixel-pooled metrics per threshold for the model and for the median-constant reference."""
    pooled = {("model", t): [] for t in THRESHOLDS_M} | {("median", t): [] for t in THRESHOLDS_M}
    iou_inter = iou_union = 0
    for i in range(n):
        sample = generate_panorama(EVAL_SEED_OFFSET + i, *size, domain=domain)
        gt = sample.range_m
        pred = predictor.predict(sample.rgb)
        finite = np.isfinite(gt) & sample.valid
        constant = np.full_like(gt, np.median(gt[finite & (gt <= 100)]))
        for t in THRESHOLDS_M:
            band = finite & (gt <= t)
            pooled[("model", t)].append((pred.range_m[band], gt[band]))
            pooled[("median", t)].append((constant[band], gt[band]))
        within_true = finite & (gt <= 100)
        within_pred = pred.within(100)
        iou_inter += int((within_true & within_pred).sum())
        iou_union += int((within_true | within_pred).sum())
    table = {}
    for (who, t), parts in pooled.items():
        p = np.concatenate([a for a, _ in parts])
        g = np.concatenate([b for _, b in parts])
        table[(who, t)] = depth_metrics(p, g, np.ones_like(g, dtype=bool))
    table["mask_iou_100"] = iou_inter / max(iou_union, 1)
    return table


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=Path("weights/dap_small"))
    parser.add_argument("--n", type=int, default=64, help="panoramas per domain")
    parser.add_argument("--size", default="256x512", help="camera resolution HxW")
    args = parser.parse_args()
    size = parse_panorama_size(args.size)
    predictor = Predictor(args.weights, backend="torch", device="cpu")
    print(
        f"{args.weights}: {args.n} panoramas per domain at {size[0]}x{size[1]}, seeds from "
        f"{EVAL_SEED_OFFSET}; metrics on pixels whose true range is within the threshold\n"
    )
    print("| domain | prediction | range ≤ | AbsRel | RMSE (m) | δ1 |")
    print("|---|---|---|---|---|---|")
    for domain in ("sim", "real_like"):
        table = evaluate(predictor, domain, args.n, size)
        for who, label in (("model", "DAP (shipped)"), ("median", "per-image true median")):
            for t in THRESHOLDS_M:
                m = table[(who, t)]
                print(
                    f"| {domain} | {label} | {t} m | {m['abs_rel']:.3f} | {m['rmse']:.2f} | "
                    f"{m['delta1']:.3f} |"
                )
        print(f"| {domain} | DAP (shipped) | 100 m mask IoU | {table['mask_iou_100']:.3f} | | |")


if __name__ == "__main__":
    main()
