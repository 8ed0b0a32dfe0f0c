"""The node's params YAML (ros__parameters) -> Settings, without a ROS install.

Owns reading a `--params-file` the way ROS 2 reads it for the node named `dap`: the entries
of the wildcard `/**` first, then those of the node (`dap`, `/dap` or a namespaced `/ns/dap`).
Values are checked by the same table as the node's parameters (dap_ros.params), so the offline
tools accept exactly the files the node accepts.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from dap_ros.params import Settings

__all__ = ["load_params_file", "settings_from_file"]

NODE_NAME = "dap"


def _node_entries(document: Mapping[str, Any], path: Path) -> dict[str, Any]:
    wildcard: dict[str, Any] = {}
    node: dict[str, Any] = {}
    for key, section in document.items():
        name = str(key).strip("/")
        if not isinstance(section, Mapping) or "ros__parameters" not in section:
            raise ValueError(f"{path}: entry '{key}' has no ros__parameters")
        values = section["ros__parameters"] or {}
        if not isinstance(values, Mapping):
            raise ValueError(f"{path}: ros__parameters of '{key}' is not a mapping")
        if name == "**":
            wildcard.update(values)
        elif name.rsplit("/", 1)[-1] == NODE_NAME:
            node.update(values)
    return {**wildcard, **node}


def load_params_file(path: str | Path) -> dict[str, Any]:
    """Parameter name -> value for the node `dap` from a ROS 2 params YAML file."""
    path = Path(path)
    try:
        document = yaml.safe_load(path.read_text())
    except OSError as err:
        raise FileNotFoundError(f"cannot read params file {path}: {err.strerror}") from err
    except yaml.YAMLError as err:
        raise ValueError(f"{path} is not valid YAML: {err}") from err
    if document is None:
        return {}
    if not isinstance(document, Mapping):
        raise ValueError(f"{path}: expected 'dap: ros__parameters: ...' at the top level")
    return _node_entries(document, path)


def settings_from_file(path: str | Path | None, overrides: Mapping[str, Any] = {}) -> Settings:
    """Settings of the params file (defaults for what it leaves out), then `overrides`.

    Raises ValueError naming an unknown parameter or a bad value.
    """
    values = load_params_file(path) if path is not None else {}
    where = f" in {path}" if path is not None else ""
    try:
        return Settings.defaults().replaced({**values, **overrides})
    except ValueError as err:
        raise ValueError(f"{err}{where}") from err
