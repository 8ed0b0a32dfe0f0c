"""`dap convert official model.pth OUT`: official checkpoint -> our safetensors + config.json."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "convert", help="convert an official DAP checkpoint to dap_ros format"
    )
    parser.add_argument("kind", choices=["official"], help="checkpoint flavour")
    parser.add_argument("checkpoint", help="official model.pth (or its .safetensors)")
    parser.add_argument("output", help="output directory (model.safetensors + config.json)")
    parser.add_argument(
        "--layers",
        default=None,
        help="4 comma-separated block indices feeding the heads (default: by ViT depth, "
        "4,11,17,23 for ViT-L)",
    )
    parser.add_argument(
        "--permissive",
        action="store_true",
        help="as the official loader: keep initial values for missing keys, ignore unknown ones",
    )
    parser.set_defaults(func=run)


def parse_layers(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    try:
        layers = tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise ValueError(f"--layers must be comma-separated integers, got {text!r}") from err
    if len(layers) != 4:
        raise ValueError(f"--layers needs 4 block indices, got {len(layers)}")
    return layers


def run(args: argparse.Namespace) -> int:
    from dap_core.model import save_model
    from dap_core.model.official import load_official_report

    model, report = load_official_report(
        args.checkpoint, layer_indices=parse_layers(args.layers), strict=not args.permissive
    )
    out = save_model(model, args.output)
    c = model.config
    print(f"wrote {out} (ViT {c.embed_dim}x{c.depth}, {c.num_heads} heads, adapter {c.adapter})")
    print(
        f"  aliases checked: {report.aliases_checked}; buffers from checkpoint: "
        f"{len(report.buffers_from_checkpoint)}, from formula: {len(report.buffers_from_formula)}"
    )
    if report.missing or report.unexpected:
        print(f"  missing: {len(report.missing)}, ignored: {len(report.unexpected)} (see log)")
    return 0
