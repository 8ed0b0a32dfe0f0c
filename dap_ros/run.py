"""The rclpy entry-point boilerplate shared by the package's nodes (`spin_node`)."""

from __future__ import annotations

from collections.abc import Callable

import rclpy
from rclpy.executors import ExternalShutdownException
from rclpy.node import Node


def spin_node(
    factory: Callable[[], Node],
    argv: list[str] | None,
    logger_name: str,
    startup_errors: tuple[type[BaseException], ...],
) -> int:
    """Init rclpy, build the node with `factory`, spin until shutdown; returns the exit status.

    `startup_errors` raised while building or spinning are logged as one fatal line under
    `logger_name` and give status 1; SIGINT / SIGTERM (e.g. from launch) give status 0.
    The node is always destroyed and rclpy shut down.
    """
    rclpy.init(args=argv)
    node = None
    status = 0
    try:
        node = factory()
        rclpy.spin(node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass  # SIGINT / SIGTERM (e.g. from launch) are the normal ways to stop
    except startup_errors as err:
        # Startup problems (bad parameter, missing weights, broken predictor): one clear line.
        rclpy.logging.get_logger(logger_name).fatal(f"cannot start: {type(err).__name__}: {err}")
        status = 1
    finally:
        if node is not None:
            node.destroy_node()
        rclpy.try_shutdown()
    return status
