"""`dap eval`: depth metrics of a model per dataset, correct or official-protocol.

Datasets are given as TYPE:ROOT (stanford2d3d:/data/s2d3d, matterport3d:..., deep360:...,
structured3d:..., dap2m:...), as synthetic:DOMAIN[:COUNT[:SEED_OFFSET]] for the generator,
or as a YAML file holding a list of dataset specs (see dap_core/data/datasets.py).
"""

from __future__ import annotations

import argparse

SYNTHETIC_DEFAULT_COUNT = 64
# Seeds of evaluation panoramas start far from those the training configs use.
SYNTHETIC_EVAL_SEED_OFFSET = 900_000


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "eval",
        help="evaluate a model on datasets (AbsRel, RMSE in metres, δ1..δ3)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--weights", required=True, help="model directory, .safetensors or .pth")
    parser.add_argument(
        "--dataset",
        action="append",
        required=True,
        help="TYPE:ROOT, synthetic:DOMAIN[:N], or .yaml",
    )
    parser.add_argument(
        "--official-protocol",
        action="store_true",
        help="reproduce the official eval script (its 'rms' is MAE, ×100 m units)",
    )
    parser.add_argument(
        "--size", default=None, help="HxW the images are resized to (default: model input)"
    )
    parser.add_argument("--max-samples", type=int, default=None, help="first N samples per dataset")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="directory for eval.md / eval.json")
    parser.set_defaults(func=run)


def parse_dataset(
    text: str, size: tuple[int, int], max_samples: int | None
) -> list[tuple[str, dict]]:
    """(name, spec) pairs from one --dataset argument."""
    from pathlib import Path

    import yaml

    if text.endswith((".yaml", ".yml")):
        path = Path(text)
        if not path.is_file():
            raise FileNotFoundError(f"dataset list {path} not found")
        specs = yaml.safe_load(path.read_text())
        specs = specs if isinstance(specs, list) else [specs]
        out = []
        for spec in specs:
            spec = dict(spec)
            spec.setdefault("size", list(size))
            out.append((spec.pop("name", f"{spec.get('type')}"), spec))
        return out
    kind, _, rest = text.partition(":")
    if not rest:
        raise ValueError(f"--dataset {text!r}: expected TYPE:ROOT or synthetic:DOMAIN")
    if kind == "synthetic":
        parts = rest.split(":")
        count = int(parts[1]) if len(parts) > 1 else (max_samples or SYNTHETIC_DEFAULT_COUNT)
        offset = int(parts[2]) if len(parts) > 2 else SYNTHETIC_EVAL_SEED_OFFSET
        spec = {
            "type": "synthetic",
            "length": count,
            "domain": parts[0],
            "seed_offset": offset,
            "size": list(size),
        }
        return [(f"synthetic:{parts[0]}", spec)]
    return [(text, {"type": kind, "root": rest, "size": list(size)})]


def run(args: argparse.Namespace) -> int:
    from dap_core.data.datasets import build_dataset
    from dap_core.model import load_model
    from dap_core.train.evaluate import evaluate_model, format_table, write_results

    model = load_model(args.weights)
    if args.size:
        h, _, w = args.size.lower().partition("x")
        size = (int(h), int(w))
    else:
        size = tuple(model.config.input_size)
    results = {}
    for text in args.dataset:
        for name, spec in parse_dataset(text, size, args.max_samples):
            dataset = build_dataset(spec)
            results[name] = evaluate_model(
                model,
                dataset,
                device=args.device,
                batch_size=args.batch_size,
                max_samples=args.max_samples,
                official=args.official_protocol,
            )
    print(format_table(results, official=args.official_protocol))
    if args.out:
        print(f"written {write_results(results, args.out, official=args.official_protocol)}")
    return 0
