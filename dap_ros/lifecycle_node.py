"""The DAP node as a managed (lifecycle) node, for Nav2's lifecycle manager and `ros2 lifecycle`.

Same pipeline, topics and parameters as dap_ros.node (this class reuses DapNode's pieces), run
through the REP 2 / rclpy.lifecycle state machine:

  configure   load the weights and build the predictor (a failure leaves it unconfigured,
              with one log line saying why)
  activate    create the publishers, the input subscription and the diagnostics timer, and
              start the worker: frames flow
  deactivate  stop the worker after its frame in flight and remove the topics; the model
              stays loaded, so activating again is immediate
  cleanup     free the model (back to unconfigured)
  shutdown    from any state: stop whatever runs and free the model
  error       (a transition raised) the same clean-up, then unconfigured

Parameter `autostart` (read-only, default false) configures and activates the node at start,
as Nav2's lifecycle manager would. The node's name is "dap", like the plain node's.

Run: `python -m dap_ros.lifecycle_node --ros-args --params-file config/dap.yaml`,
`dap_lifecycle_node`, or `ros2 launch dap_ros dap.launch.py managed:=true [autostart:=true]`.
"""

from __future__ import annotations

import sys
from typing import Any

from rcl_interfaces.msg import ParameterDescriptor
from rclpy.exceptions import NameValidationException, ParameterException
from rclpy.lifecycle import LifecycleNodeMixin, LifecycleState, TransitionCallbackReturn
from rclpy.node import Node

from dap_ros.node import NODE_NAME, DapNode
from dap_ros.run import spin_node

__all__ = ["DapLifecycleNode", "main"]


class DapLifecycleNode(LifecycleNodeMixin, DapNode):
    """Managed DAP node: the model loads on configure, topics exist only while active.

    `predictor`, `predictor_factory`, `mask_heads`: as for DapNode; they are used at each
    configure (a stand-in predictor object is kept across cleanup, the real model is not).
    """

    def __init__(
        self,
        predictor: Any = None,
        *,
        predictor_factory: Any = None,
        mask_heads: Any = None,
        **node_kwargs: Any,
    ) -> None:
        Node.__init__(self, NODE_NAME, **node_kwargs)
        self._model_args = (predictor, predictor_factory, mask_heads)
        self._init_pipeline()
        self.autostart = self.declare_parameter(
            "autostart",
            False,
            ParameterDescriptor(
                description="configure and activate at start (as a lifecycle manager would)",
                read_only=True,
            ),
        ).value
        LifecycleNodeMixin.__init__(self)
        self._active = False
        self.get_logger().info("unconfigured: waiting for configure")

    def on_configure(self, state: LifecycleState) -> TransitionCallbackReturn:
        try:
            self._load_models(*self._model_args)
        except Exception as err:  # bad weights or predictor: stay unconfigured, say why
            self.get_logger().error(f"configure failed: {type(err).__name__}: {err}")
            self._unload_models()
            return TransitionCallbackReturn.FAILURE
        self.get_logger().info(f"configured: backend {self.backend}")
        return TransitionCallbackReturn.SUCCESS

    def on_activate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._open_io()
        self._active = True
        return TransitionCallbackReturn.SUCCESS

    def on_deactivate(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self.get_logger().info("inactive: topics removed, model kept")
        return TransitionCallbackReturn.SUCCESS

    def on_cleanup(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._unload_models()
        self.get_logger().info("unconfigured: model freed")
        return TransitionCallbackReturn.SUCCESS

    def on_shutdown(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._unload_models()
        self.get_logger().info(f"finalized (from {state.label})")
        return TransitionCallbackReturn.SUCCESS

    def on_error(self, state: LifecycleState) -> TransitionCallbackReturn:
        self._stop()
        self._unload_models()
        self.get_logger().error(f"error in {state.label}: stopped and freed")
        return TransitionCallbackReturn.SUCCESS

    def _stop(self) -> None:
        if self._active:
            self._close_io()
            self._active = False

    def start(self) -> None:
        """configure + activate when `autostart` is set (called once spinning can begin)."""
        if not self.autostart:
            return
        if self.trigger_configure() != TransitionCallbackReturn.SUCCESS:
            raise RuntimeError("autostart: configure failed (see the log line above)")
        self.trigger_activate()


def _build() -> DapLifecycleNode:
    node = DapLifecycleNode()
    node.start()
    return node


def main(argv: list[str] | None = None) -> int:
    """Entry point of `dap_lifecycle_node` and `python -m dap_ros.lifecycle_node`."""
    startup_errors = (
        ParameterException,
        NameValidationException,
        ImportError,
        ValueError,
        OSError,
        RuntimeError,
    )
    return spin_node(_build, argv, NODE_NAME, startup_errors)


if __name__ == "__main__":
    sys.exit(main())
