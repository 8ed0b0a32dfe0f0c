# Two commands for a new user: `make demo` and `make test`. Both set up .venv on first use.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch lies on local disk under exactly this pin; any other spec pulls gigabytes.
TORCH_SPEC := torch==2.13.0
ROS_ENV := AMENT_PREFIX_PATH=$(abspath $(VENV)) ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
SETUP_STAMP := $(VENV)/.dap-setup-done
# Real `ros2 launch/topic/param` (not on PyPI): wheels in ../shared/ros2_cli, read only, when
# that directory exists; without it the tests that need them skip and say why.
DAP_SHARED ?= $(abspath ..)/shared
ROS2_CLI := $(DAP_SHARED)/ros2_cli
ROS2_CLI_STAMP := $(if $(wildcard $(ROS2_CLI)/install.sh),$(VENV)/.ros2-cli-done)
DEMO_ARGS ?=

.PHONY: setup test lint format demo bench clean

setup: $(SETUP_STAMP) $(ROS2_CLI_STAMP)

# Re-run the install only when the package definition changes; a set-up tree costs seconds.
$(SETUP_STAMP): setup.py setup.cfg package.xml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "$(TORCH_SPEC)"
	$(PY) -m pip install --quiet -e ".[test,ros]"
	touch $@

$(VENV)/.ros2-cli-done: $(SETUP_STAMP) $(ROS2_CLI)/install.sh
	bash $(ROS2_CLI)/install.sh $(VENV)
	touch $@

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: setup
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(ROS_ENV) DAP_SHARED=$(DAP_SHARED) $(PY) -m pytest

demo: setup
	$(ROS_ENV) $(PY) -m dap_ros.demo $(DEMO_ARGS)

# Every benchmark prints its ratio against a bound or a peer measured in the same run.
bench: setup
	for script in bench/bench_*.py; do $(ROS_ENV) $(PY) $$script || exit 1; done

clean:
	rm -rf $(VENV) build install log demo_out .pytest_cache
