"""test_official_parity.py passes under other CPU kernel families, not just the default ones.

oneDNN (convolutions) picks its kernels from ONEDNN_MAX_CPU_ISA and ATen (elementwise ops,
reductions) from ATEN_CPU_CAPABILITY, once per process, so each setting runs the parity file in
a fresh pytest process (about 5 s each on an idle machine).
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

TEST_DIR = Path(__file__).resolve().parent


def _cpu_flags() -> set[str]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return set()
    line = next((ln for ln in text.splitlines() if ln.startswith("flags")), "")
    return set(line.partition(":")[2].split())


# The process default is the CPU's best family; each entry forces a different one.
KERNELS = [{"ONEDNN_MAX_CPU_ISA": "SSE41"}, {"ATEN_CPU_CAPABILITY": "default"}]
if "avx512f" in _cpu_flags():  # there the default is AVX-512 and AVX2 is a distinct family
    KERNELS.append({"ONEDNN_MAX_CPU_ISA": "AVX2"})


@pytest.mark.parametrize(
    "kernels", KERNELS, ids=lambda k: ",".join(f"{n}={v}" for n, v in k.items())
)
def test_parity_file_passes_under_kernel_family(kernels, repo_root):
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")
    }
    env.update(kernels)
    command = [sys.executable, "-m", "pytest", str(TEST_DIR / "test_official_parity.py")]
    command += ["-q", "-x", "-p", "no:cacheprovider", "-o", "addopts=", "--timeout=300"]
    run = subprocess.run(
        command, cwd=repo_root, env=env, capture_output=True, text=True, timeout=600
    )
    assert run.returncode == 0, f"under {kernels}:\n{run.stdout[-4000:]}{run.stderr[-2000:]}"
