"""dap_ros: the ROS 2 face of DAP (the perception node and its message conversions).

This is the only package that imports rclpy; the model lives in `dap_core`.
"""
