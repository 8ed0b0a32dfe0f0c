"""`python -m dap_core.train` / `torchrun --nproc_per_node=N -m dap_core.train`: one stage."""

from __future__ import annotations

import sys

from dap_core.train.cli import main

if __name__ == "__main__":
    sys.exit(main())
