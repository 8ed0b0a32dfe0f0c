"""Shared pytest fixtures: repository paths, the official fixture directory, one torch thread."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

# A suite started in the background by a non-interactive shell (`make test &`, nohup) inherits
# SIGINT as ignored, and an ignored signal stays ignored across exec: the node, launch and
# `dap train` processes the tests stop with Ctrl-C would never see it. Python installs its
# own handler only when SIGINT is not ignored, so restore the default here, for the children.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

REPO_ROOT = Path(__file__).resolve().parents[1]
# CI and developers have ../shared beside the clone; DAP_SHARED overrides it.
SHARED_DIR = Path(os.environ.get("DAP_SHARED", REPO_ROOT.parent / "shared"))
OFFICIAL_FIXTURES = SHARED_DIR / "fixtures" / "official_dap"


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def official_fixtures() -> Path:
    if not OFFICIAL_FIXTURES.is_dir():
        pytest.fail(f"official DAP fixtures not found at {OFFICIAL_FIXTURES} (set DAP_SHARED)")
    return OFFICIAL_FIXTURES


@pytest.fixture(scope="module")
def one_thread():
    """torch on one thread for a module (opt in with pytest.mark.usefixtures("one_thread"))."""
    import torch  # here, not at the top: the ROS-only test modules need no torch

    # Small models: extra threads only add synchronisation, which is slow on a busy machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def installed_package(tmp_path_factory):
    """The checkout installed non-editable into a scratch prefix (install_harness.py), once."""
    from install_harness import install_non_editable

    return install_non_editable(REPO_ROOT, tmp_path_factory.mktemp("pip_install"))
