"""ament_python package `dap_ros`: the `dap_core` model library and the `dap_ros` node."""

from glob import glob

from setuptools import find_packages, setup

PACKAGE = "dap_ros"


def shipped_weights() -> list[tuple[str, list[str]]]:
    """Each model under weights/ keeps its own directory: share/dap_ros/weights/<model>/."""
    models = sorted(path for path in glob("weights/*/") if glob(f"{path}*"))
    return [(f"share/{PACKAGE}/{path.rstrip('/')}", sorted(glob(f"{path}*"))) for path in models]


setup(
    name=PACKAGE,
    version="0.1.0",
    description="Depth Any Panoramas: 360-degree metric depth model and ROS 2 node",
    license="Apache-2.0",
    maintainer="dap_ros maintainers",
    maintainer_email="maintainers@dap-ros.dev",
    python_requires=">=3.10,<3.14",
    packages=find_packages(include=["dap_core", "dap_core.*", "dap_ros", "dap_ros.*"]),
    package_data={"dap_core": ["py.typed"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{PACKAGE}"]),
        (f"share/{PACKAGE}", ["package.xml"]),
        (f"share/{PACKAGE}/launch", glob("launch/*.launch.py")),
        (f"share/{PACKAGE}/config", sorted(glob("config/*.*"))),
        (f"share/{PACKAGE}/config/fisheye", sorted(glob("config/fisheye/*.yaml"))),
        *shipped_weights(),
        # launch_ros looks for executables in lib/<package>; pip ignores setup.cfg's
        # install_scripts, so the launcher is shipped there as a data file too.
        (f"lib/{PACKAGE}", ["scripts/dap_node", "scripts/dap_camera_sim"]),
    ],
    install_requires=[
        "numpy>=1.24",
        "opencv-python-headless>=4.8",
        "pyyaml>=6",
        "safetensors>=0.4",
        "torch>=2.4",
        "tqdm>=4.60",
        "onnx>=1.16",
        "onnxscript>=0.2",  # torch.export-based ONNX exporter (torch.onnx.export dynamo=True)
        "onnxruntime>=1.18",
        "plyfile>=1.0",
        "pillow>=10",  # strict image decoding: a truncated file raises instead of grey rows
        "tensorboard>=2.14",
        "huggingface_hub>=0.20",
        # Matterport3D depth is EXR; the opencv-python wheels are built without OpenEXR.
        "openexr>=3.2",
        # `dap bag`: reads and writes rosbag2 (sqlite3, MCAP) without a ROS install.
        "rosbags>=0.10",
    ],
    extras_require={
        "ros": [
            "ros-rclpy",
            "ros-sensor-msgs",
            "ros-rmw-fastrtps-cpp",
            "ros-diagnostic-msgs",
            "ros-rcl-lifecycle",
            "ros-lifecycle-msgs",
        ],
        "test": [
            "pytest>=8",
            "pytest-timeout>=2.3",
            "ruff>=0.6",
            "py360convert>=1.0",
            "colcon-core>=0.15",
            "colcon-ros>=0.5",
            "colcon-package-information>=0.4",
            "colcon-package-selection>=0.2",  # colcon build --packages-select (README)
            "rosbags>=0.10",
        ],
    },
    entry_points={
        "console_scripts": [
            "dap = dap_core.cli:main",
            "dap_node = dap_ros.node:main",
            "dap_lifecycle_node = dap_ros.lifecycle_node:main",
            "dap_camera_sim = dap_ros.camera_sim:main",
        ],
    },
)
