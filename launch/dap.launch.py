"""Launch the DAP node with the package's parameter file."""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node


def generate_launch_description() -> LaunchDescription:
    share = get_package_share_directory("dap_ros")
    params = DeclareLaunchArgument(
        "params_file", default_value=os.path.join(share, "config", "dap.yaml")
    )
    node = Node(
        package="dap_ros",
        executable="dap_node",
        name="dap",
        parameters=[LaunchConfiguration("params_file")],
        output="screen",
    )
    return LaunchDescription([params, node])
