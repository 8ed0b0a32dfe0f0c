"""Arguments shared by the commands that build a Predictor (predict, bench, build-engine),
and the shipped default weights that predict / eval / bench use when --weights is not given."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

SHIPPED_WEIGHTS = Path("weights") / "dap_small"


def shipped_weights() -> Path:
    """The weights shipped with the package, as the node finds them.

    In a checkout: <repo>/weights/dap_small. Installed (pip or colcon): the ament share
    directory, share/dap_ros/weights/dap_small, or its files laid directly in
    share/dap_ros/weights.
    """
    candidates = [Path(__file__).resolve().parents[2] / SHIPPED_WEIGHTS]
    shares = [Path(sys.prefix) / "share" / "dap_ros"]
    try:
        from ament_index_python.packages import get_package_share_directory

        shares.insert(0, Path(get_package_share_directory("dap_ros")))
    except (ImportError, LookupError, ValueError, OSError):
        pass  # not installed through ament: sys.prefix and the checkout remain
    for share in shares:
        candidates += [share / SHIPPED_WEIGHTS, share / "weights"]
    for candidate in candidates:
        if (candidate / "config.json").is_file():
            return candidate
    raise FileNotFoundError(
        "no --weights given and the shipped weights were not found at "
        + " or ".join(str(c) for c in candidates)
    )


def resolve_weights(weights: str | None) -> tuple[str, str]:
    """(path, how it was chosen) for a --weights value; None = the shipped weights."""
    if weights:
        return weights, "given"
    return str(shipped_weights()), "shipped default"


def prepare_output_dir(out: Path) -> None:
    """Create --out and make sure files can be written there, before the model loads."""
    import tempfile

    try:
        out.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out):
            pass
    except OSError as err:
        raise RuntimeError(f"cannot write to output directory {out}: {os_cause(err)}") from err


def write_file(path: Path, write, *write_args, **write_kwargs) -> None:
    """write(path, ...) with a full disk or unwritable path as one line naming the file."""
    try:
        write(path, *write_args, **write_kwargs)
    except OSError as err:
        raise RuntimeError(f"cannot write {path}: {os_cause(err)}") from err


def os_cause(err: OSError) -> str:
    """The cause of an OSError in words ("No space left on device")."""
    return err.strerror or str(err)


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    try:
        value = int(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from err
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def parse_size(text: str | None) -> tuple[int, int] | None:
    """ "256x512" -> (256, 512)."""
    if text is None:
        return None
    try:
        height, width = (int(v) for v in text.lower().split("x"))
    except ValueError as err:
        raise ValueError(f"size must look like HEIGHTxWIDTH (e.g. 256x512), got {text!r}") from err
    if height < 1 or width < 1:
        raise ValueError(f"size must be two positive numbers HEIGHTxWIDTH, got {text!r}")
    return height, width


def parse_panorama_size(text: str) -> tuple[int, int]:
    """ "256x512" -> (256, 512), refusing anything but an equirectangular H x 2H size."""
    height, width = parse_size(text)
    if height < 2 or width != 2 * height:
        raise ValueError(f"an ERP panorama is H x 2H (2:1, e.g. 256x512), got {text!r}")
    return height, width


def parse_thresholds(text: str | None) -> tuple[int, ...] | None:
    """ "10,50" -> (10, 50); "none" -> (); None -> None (every head)."""
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(v) for v in text.split(","))
    except ValueError as err:
        raise ValueError(f"--masks must be comma-separated metres or 'none', got {text!r}") from err


def add_predictor_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--weights",
        default=None,
        help="weights directory, .safetensors, .pth, or DAP .onnx (default: the shipped "
        "weights/dap_small, as the node uses)",
    )
    parser.add_argument(
        "--backend", default="auto", choices=["auto", "torch", "onnxruntime", "tensorrt"]
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16", "int8"])
    parser.add_argument(
        "--masks", default=None, help="range masks to compute, e.g. 10,50 (default: all; none)"
    )
    parser.add_argument("--input-size", default=None, help="model input HxW (default: config)")
    parser.add_argument(
        "--threads", type=positive_int, default=None, help="CPU threads (default: cores)"
    )
    parser.add_argument("--cache-dir", default=None, help="exports/engines cache ($DAP_ROS_CACHE)")


def make_predictor(args: argparse.Namespace):
    from dap_core.runtime import Predictor

    weights, _ = resolve_weights(args.weights)
    return Predictor(
        weights,
        backend=args.backend,
        device=args.device,
        precision=args.precision,
        mask_thresholds=parse_thresholds(args.masks),
        input_size=parse_size(args.input_size),
        threads=args.threads,
        cache_dir=args.cache_dir,
        announce=False,  # the command prints the decision on stdout, with its report
    )
