"""Launch the DAP perception node, optionally with a simulated 360° camera and RViz.

    ros2 launch dap_ros dap.launch.py image:=/camera/image_raw weights:=/path/to/weights
    ros2 launch dap_ros dap.launch.py sim:=true rviz:=true
    ros2 launch dap_ros dap.launch.py managed:=true autostart:=true   # lifecycle node
    ros2 launch dap_ros dap.launch.py fisheye:=insta360_side_by_side image:=/insta_image
    ros2 launch dap_ros dap.launch.py fisheye:=x5_two_topics lens0:=/x5/lens0 lens1:=/x5/lens1

Arguments left empty keep the value from `params_file` (default: the installed
config/dap.yaml). The node and the simulated camera run with the Fast DDS large-data profile
(config/fastdds_large_data.xml): without it, best-effort subscribers in other processes
(RViz, Nav2) receive none of the large images and clouds.
"""

import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

PACKAGE = "dap_ros"
TRUE_WORDS = ("true", "1", "yes", "on")
FALSE_WORDS = ("false", "0", "no", "off")

# (argument, default, description)
ARGUMENTS = (
    ("params_file", "", "node parameters (YAML); empty = the installed config/dap.yaml"),
    ("weights", "", "DAP weights (directory, .safetensors or official .pth); empty = params"),
    ("backend", "", "auto | torch | onnxruntime | tensorrt; empty = params"),
    ("image", "", "input panorama topic (node parameter image_topic); empty = params ('image')"),
    ("compressed", "", "true: subscribe to <image_topic>/compressed; empty = params"),
    ("namespace", "", "namespace of the node (and of its topics)"),
    ("sim", "false", "also start the simulated 360 camera (dap_camera_sim)"),
    ("rviz", "false", "also start RViz with config/dap.rviz"),
    ("managed", "false", "true: the lifecycle node (dap_lifecycle_node), starts unconfigured"),
    ("autostart", "false", "with managed:=true, configure and activate at start"),
    (
        "fisheye",
        "",
        "dual-fisheye calibration: a YAML path or a shipped name (insta360_side_by_side,"
        " x5_two_topics); also what the simulated camera renders; empty = params (ERP)",
    ),
    ("lens0", "", "lens 0 topic of a two_images calibration (lens0_topic); empty = params"),
    ("lens1", "", "lens 1 topic of a two_images calibration (lens1_topic); empty = params"),
)


def _flag(name: str, text: str) -> bool:
    if text.lower() in TRUE_WORDS:
        return True
    if text.lower() in FALSE_WORDS:
        return False
    raise RuntimeError(f"launch argument {name}:={text} is neither true nor false")


def _calibration(share: str, name: str) -> str:
    """A calibration path as given, or the shipped config/fisheye/<name>.yaml."""
    if os.sep in name or name.endswith((".yaml", ".yml")):
        return name
    return os.path.join(share, "config", "fisheye", f"{name}.yaml")


def _actions(context):
    share = get_package_share_directory(PACKAGE)
    value = {name: LaunchConfiguration(name).perform(context) for name, _, _ in ARGUMENTS}
    params_file = value["params_file"] or os.path.join(share, "config", "dap.yaml")
    overrides = {key: value[key] for key in ("weights", "backend") if value[key]}
    if value["image"]:
        overrides["image_topic"] = value["image"]
    if value["compressed"]:
        overrides["compressed_input"] = _flag("compressed", value["compressed"])
    if value["fisheye"]:
        overrides["fisheye_calibration"] = _calibration(share, value["fisheye"])
    for lens in ("lens0", "lens1"):
        if value[lens]:
            overrides[f"{lens}_topic"] = value[lens]
    large_data = {
        "FASTDDS_DEFAULT_PROFILES_FILE": os.path.join(share, "config", "fastdds_large_data.xml")
    }
    managed = _flag("managed", value["managed"])
    if managed:
        overrides["autostart"] = _flag("autostart", value["autostart"])
    dap = Node(
        package=PACKAGE,
        executable="dap_lifecycle_node" if managed else "dap_node",
        name="dap",
        namespace=value["namespace"],
        parameters=[params_file, overrides],
        additional_env=large_data,
        output="screen",
    )
    topic = overrides.get("image_topic", "image")
    lens_topics = [(lens, overrides.get(f"{lens}_topic", lens)) for lens in ("lens0", "lens1")]
    sim_parameters = {"compressed": overrides.get("compressed_input", False)}
    if "fisheye_calibration" in overrides:
        sim_parameters["fisheye_calibration"] = overrides["fisheye_calibration"]
    camera = Node(
        package=PACKAGE,
        executable="dap_camera_sim",
        name="camera_sim",
        namespace=value["namespace"],
        parameters=[sim_parameters],
        remappings=[
            ("image", topic),
            ("image/compressed", f"{topic}/compressed"),
            *lens_topics,
            *((f"{lens}/compressed", f"{name}/compressed") for lens, name in lens_topics),
        ],
        additional_env=large_data,
        output="screen",
        condition=IfCondition(LaunchConfiguration("sim")),
    )
    rviz = Node(
        package="rviz2",
        executable="rviz2",
        arguments=["-d", os.path.join(share, "config", "dap.rviz")],
        output="screen",
        condition=IfCondition(LaunchConfiguration("rviz")),
    )
    return [dap, camera, rviz]


def generate_launch_description() -> LaunchDescription:
    arguments = [
        DeclareLaunchArgument(name, default_value=default, description=description)
        for name, default, description in ARGUMENTS
    ]
    return LaunchDescription([*arguments, OpaqueFunction(function=_actions)])
