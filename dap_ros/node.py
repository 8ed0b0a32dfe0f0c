"""The DAP perception node (skeleton: parameters and lifecycle; outputs land with the node work)."""

from __future__ import annotations

import sys

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


class DapNode(Node):
    """Panoramic depth node. Runs as `dap_node` or `python -m dap_ros.node`."""

    def __init__(self) -> None:
        super().__init__("dap")
        self.declare_parameter("weights", "")
        self.get_logger().info("dap node started")


def main(argv: list[str] | None = None) -> int:
    rclpy.init(args=argv if argv is not None else sys.argv)
    node = None
    try:
        node = DapNode()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
