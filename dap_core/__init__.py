"""dap_core: the Depth Any Panoramas model, its training pipeline and runtime.

Nothing in this package imports ROS; `dap_ros` is the only ROS-facing package.
"""

__version__ = "0.1.0"
