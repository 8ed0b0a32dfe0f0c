"""FP32 CPU forward: the official DAP code vs this project's `DAP.forward_official`, one run.

The official code (Insta360-Research-Team/DAP) is not part of this project: pass the folder of
a checkout with --official; without it the script prints why and exits 0 (skip). Both models
get the same random weights (the official model's state dict, converted by
dap_core.model.official), the same input, and run interleaved (official, project, official,
...) so that load drift on a shared machine hits both alike. Outputs are compared for bit
identity, and the ratio project / official of the median forward time is printed.

    .venv/bin/python bench/bench_official_cpu.py --official ../DAP [--encoder vitl]
        [--size 512x1024] [--repeats 3] [--threads 2] [--profile] [--reduced [--reduced-kinds bf16]]

The official import needs two stand-ins that do not touch the forward: `torchvision`
(`transforms.Compose`, used only by `infer_image`) and the dinov3 hub modules for detectors,
segmentors and depthers (imported by hubconf.py, never used by the backbone). --profile prints
torch.profiler's per-op self time for one forward of each. --reduced adds INT8 (onnxruntime
dynamic quantisation) and BF16 (torch, only with native BF16) against the official FP32 rate,
with the accuracy gate's numbers (dap_core.reduced_precision).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import sys
import time
import types
from pathlib import Path

ENCODERS = {  # Depth Anything V2's head sizes per encoder (official networks/dap.py)
    "vits": ("dinov3_vits16", 64, [48, 96, 192, 384]),
    "vitb": ("dinov3_vitb16", 128, [96, 192, 384, 768]),
    "vitl": ("dinov3_vitl16", 256, [256, 512, 1024, 1024]),
}


def _install_stand_ins() -> None:
    if "torchvision" not in sys.modules:
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        tv.transforms.Compose = lambda ops: ops
        sys.modules["torchvision"] = tv
        sys.modules["torchvision.transforms"] = tv.transforms
    unused = {"detectors": "dinov3_vit7b16_de", "segmentors": "dinov3_vit7b16_ms"}
    unused["depthers"] = "dinov3_vit7b16_dd"
    for name, entry in unused.items():
        module = types.ModuleType(f"dinov3.hub.{name}")
        setattr(module, entry, None)
        sys.modules[f"dinov3.hub.{name}"] = module


def build_official(official: Path, encoder: str):
    """The official DepthAnythingV2 core wrapped like networks/dap.py's DAP (eval, fp32)."""
    import torch

    _install_stand_ins()
    sys.path.insert(0, str(official))
    repo = official / "depth_anything_v2_metric/depth_anything_v2/dinov3"
    sys.path.insert(0, str(repo))
    with contextlib.chdir(official):
        from depth_anything_v2_metric.depth_anything_v2.dpt import DepthAnythingV2

        arch, features, out_channels = ENCODERS[encoder]
        core = DepthAnythingV2(
            encoder=encoder,
            features=features,
            out_channels=out_channels,
            max_depth=1.0,
            dinov3_repo_dir=str(repo),
            dinov3_arch=arch,
            dinov3_weight="",
        )

    class OfficialDAP(torch.nn.Module):  # networks/dap.py DAP.forward, verbatim semantics
        def __init__(self) -> None:
            super().__init__()
            self.core = core

        def forward(self, image):
            erp_pred, mask_pred = self.core(image)
            erp_pred = erp_pred.unsqueeze(1)
            erp_pred[erp_pred < 0] = 0
            return {"pred_depth": erp_pred * 1.0, "pred_mask": mask_pred.unsqueeze(1)}

    model = OfficialDAP().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():  # non-trivial weights: the init leaves LayerScale at 1e-5
        for name, tensor in model.state_dict().items():
            if tensor.is_floating_point() and "bias_mask" not in name and "periods" not in name:
                tensor.add_(torch.randn(tensor.shape, generator=generator) * 0.02)
    return model


def build_project(state):
    from dap_core.model.official import load_official

    return load_official(state).eval()


def _forward(model, x, official: bool):
    import torch

    with torch.no_grad():
        out = model(x) if official else model.forward_official(x)
    return out["pred_depth"], out["pred_mask"]


def _profile(model, x, official: bool, rows: int) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        _forward(model, x, official)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=rows))


def reduced(official, project, x, repeats: int, threads: int, kinds: set[str]) -> None:
    """INT8 (onnxruntime dynamic quantisation of the linear layers) and BF16 (torch autocast,
    only with native BF16) vs the official FP32 forward, interleaved, with the accuracy gate's
    numbers (random weights: the masks sit near p = 0.5, so the mask IoU is pessimistic)."""
    import tempfile

    import numpy as np
    import torch

    from dap_core import reduced_precision as rp
    from dap_core.backends import BuildRequest, OnnxRuntimeRunner, TorchRunner
    from dap_core.model_source import load_source

    size = tuple(x.shape[-2:])
    thresholds = tuple(project.config.mask_thresholds)
    candidates = {}
    if "int8" in kinds:  # the FP32 export alone takes minutes for ViT-L
        cache = Path(tempfile.mkdtemp(prefix="dap_bench_"))
        request = BuildRequest("cpu", "int8", thresholds, size, threads, cache)
        fp32_path = request.onnx_file(load_source(project))
        int8_path = rp.quantize_int8(fp32_path, cache / "int8.onnx")
        fp32 = OnnxRuntimeRunner(fp32_path, threads, thresholds, spin=False)
        int8 = OnnxRuntimeRunner(int8_path, threads, thresholds, spin=False)
        candidates = {"onnxruntime int8": int8, "onnxruntime fp32": fp32}
    native, why = rp.bf16_support()
    if "bf16" not in kinds:
        pass
    elif native:
        candidates["torch bf16"] = TorchRunner(project, "cpu", "bf16", thresholds)
    else:
        print(f"torch bf16: refused here: {why}")

    def call(runner):
        return lambda a: [np.array(o) for o in runner.run(np.ascontiguousarray(a), {})]

    inputs = rp.fixed_inputs(project.config, size)
    reference = TorchRunner(project, "cpu", "fp32", thresholds)
    for name, runner in candidates.items():
        agreement = rp.compare(call(reference), call(runner), inputs)
        verdict = "accepted" if agreement.ok else "refused"
        print(f"{name}: {verdict} by the gate: {agreement.describe()}")
    xn = x.numpy()
    times: dict[str, list[float]] = {"official fp32": [], **{n: [] for n in candidates}}
    for _ in range(repeats):
        start = time.perf_counter()
        _forward(official, x, True)
        times["official fp32"].append(time.perf_counter() - start)
        for name, runner in candidates.items():
            start = time.perf_counter()
            with torch.no_grad():
                runner.run(xn, {})
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, value in med.items():
        speed = med["official fp32"] / value
        print(f"{name:17s} median {value:.3f} s = {speed:.2f}x the official FP32 rate (goal 2x)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--official", default=os.environ.get("DAP_OFFICIAL_CODE"))
    parser.add_argument("--encoder", default="vitl", choices=sorted(ENCODERS))
    parser.add_argument("--size", default="512x1024")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--profile", action="store_true")
    parser.add_argument(
        "--reduced", action="store_true", help="also INT8 (onnxruntime) and BF16 (torch, gated)"
    )
    parser.add_argument(
        "--reduced-kinds", default="int8,bf16", help="with --reduced: which of int8,bf16"
    )
    parser.add_argument("--rows", type=int, default=25)
    args = parser.parse_args()
    if not args.official or not (Path(args.official) / "networks" / "dap.py").is_file():
        print(
            "skip: the official DAP code is not given (--official PATH to a checkout of "
            "Insta360-Research-Team/DAP, or $DAP_OFFICIAL_CODE)"
        )
        return 0
    if args.repeats < 1 or args.threads < 1:
        print("error: --repeats and --threads must be >= 1", file=sys.stderr)
        return 2
    try:
        height, width = (int(s) for s in args.size.lower().split("x"))
    except ValueError:
        print(f"error: --size must look like 512x1024, got {args.size!r}", file=sys.stderr)
        return 2

    import torch

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from bench_model_cpu import machine

    torch.set_num_threads(args.threads)
    official = build_official(Path(args.official).resolve(), args.encoder)
    project = build_project(official.state_dict())
    x = torch.randn(1, 3, height, width, generator=torch.Generator().manual_seed(1))
    print(f"machine: {machine()}; torch {torch.__version__}, {args.threads} threads, fp32")
    params = sum(p.numel() for p in project.parameters()) / 1e6
    print(f"{args.encoder} ({params:.0f} M params), input 1x3x{height}x{width}")

    ref, mine = _forward(official, x, True), _forward(project, x, False)  # warm-up
    identical = all(torch.equal(a, b) for a, b in zip(ref, mine, strict=True))
    diff = max(float((a - b).abs().max()) for a, b in zip(ref, mine, strict=True))
    print(f"outputs bit-identical: {identical} (max |diff| {diff:.3g})")
    times: dict[str, list[float]] = {"official": [], "project": []}
    for _ in range(args.repeats):
        for name, model in (("official", official), ("project", project)):
            start = time.perf_counter()
            _forward(model, x, name == "official")
            times[name].append(time.perf_counter() - start)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        print(f"{name:9s} forward s: {', '.join(f'{v:.3f}' for v in t)} (median {med[name]:.3f})")
    print(f"project / official time: {med['project'] / med['official']:.3f}x (target <= 1.0)")
    if args.reduced:
        kinds = {k.strip() for k in args.reduced_kinds.split(",") if k.strip()}
        if not kinds or not kinds <= {"int8", "bf16"}:
            print(f"error: --reduced-kinds takes int8 and/or bf16, got {args.reduced_kinds!r}")
            return 2
        reduced(official, project, x, args.repeats, args.threads, kinds)
    if args.profile:
        for name, model in (("official", official), ("project", project)):
            print(f"--- {name}: torch.profiler, self CPU time per op")
            _profile(model, x, name == "official", args.rows)
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
