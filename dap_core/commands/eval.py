"""`dap eval`: depth metrics of a model per dataset, correct or official-protocol.

Datasets are given as TYPE:ROOT[:LIST] (stanford2d3d:/data/s2d3d, matterport3d:..., deep360:...,
structured3d:..., dap2m:...; LIST is the dataset's official list file, one "rgb depth" pair
per line, relative to ROOT), as synthetic:DOMAIN[:COUNT[:SEED_OFFSET]] for the generator, or
as a YAML file holding a list of dataset specs (see dap_core/data/datasets.py).

An image whose ground truth has no valid pixel is left out of the means and reported; a dataset
with no valid ground truth at all is an error. eval.json holds null, never NaN.
"""

from __future__ import annotations

import argparse
import sys

from dap_core.commands.common import positive_int, prepare_output_dir, resolve_weights

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
    parser.add_argument(
        "--weights",
        default=None,
        help="model directory, .safetensors or .pth (default: the shipped weights/dap_small)",
    )
    parser.add_argument(
        "--dataset",
        action="append",
        required=True,
        help="TYPE:ROOT[:LIST], synthetic:DOMAIN[:N], or .yaml",
    )
    parser.add_argument(
        "--official-protocol",
        action="store_true",
        help="reproduce the official eval script (its 'rms' is MAE, ×100 m units)",
    )
    parser.add_argument(
        "--size", default=None, help="HxW the images are resized to (default: model input)"
    )
    parser.add_argument(
        "--max-samples", type=positive_int, default=None, help="first N samples per dataset"
    )
    parser.add_argument("--batch-size", type=positive_int, default=4)
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
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
    root, _, list_file = rest.partition(":")
    spec = {"type": kind, "root": root, "size": list(size)}
    if list_file:
        spec["list_file"] = _find_list(list_file, root)
    return [(text, spec)]


def _find_list(list_file: str, root: str) -> str:
    """The list file as given (relative to the working directory), else relative to ROOT."""
    from pathlib import Path

    given = Path(list_file).expanduser()
    if given.is_file() or given.is_absolute():
        return str(given)
    beside = Path(root).expanduser() / list_file
    return str(beside if beside.is_file() else given)


def check_device(device: str) -> None:
    """Refuse a CUDA device on a machine without CUDA in one line, before the model loads."""
    import torch

    if device == "cpu":
        return
    if not (device == "cuda" or device.startswith("cuda:")):
        raise ValueError(f"--device must be cpu, cuda or cuda:N, got {device!r}")
    if not torch.cuda.is_available():
        build = "built without CUDA" if torch.version.cuda is None else "found no CUDA device"
        raise ValueError(f"--device {device}: CUDA is not available (torch {build}); use cpu")
    index = int(device.partition(":")[2] or 0)
    if index >= torch.cuda.device_count():
        raise ValueError(f"--device {device}: only {torch.cuda.device_count()} CUDA device(s)")


def check_results(results: dict) -> None:
    """Say which samples were skipped and which datasets had images without valid ground
    truth; refuse an empty report."""
    from dap_core.train.evaluate import skip_report

    for line in skip_report(results):
        print(f"dap eval: warning: {line}", file=sys.stderr)
    empty = []
    for name, row in results.items():
        images, skipped = int(row.get("images", 0)), int(row.get("empty_images", 0))
        if images == 0:
            empty.append(f"{name} ({skipped} image(s), none with a valid ground-truth pixel)")
        elif skipped:
            print(
                f"dap eval: warning: {name}: {skipped} of {images + skipped} image(s) have no "
                "valid ground-truth pixel and are left out of the means",
                file=sys.stderr,
            )
    if empty:
        raise ValueError("no valid ground truth to evaluate: " + "; ".join(empty))


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from dap_core.commands.common import os_cause, parse_size
    from dap_core.data.datasets import build_dataset
    from dap_core.model import load_model
    from dap_core.train.evaluate import evaluate_model, format_table, write_results

    check_device(args.device)
    size_given = parse_size(args.size)
    if args.out:
        prepare_output_dir(Path(args.out))
    weights, how = resolve_weights(args.weights)
    print(f"weights: {weights} ({how})")
    model = load_model(weights)
    size = size_given or tuple(model.config.input_size)
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
    check_results(results)
    if args.out:
        try:
            written = write_results(results, args.out, official=args.official_protocol)
        except OSError as err:
            raise RuntimeError(f"cannot write {err.filename or args.out}: {os_cause(err)}") from err
        print(f"written {written}")
    return 0
