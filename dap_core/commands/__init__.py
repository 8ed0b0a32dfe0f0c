"""Sub-commands of the `dap` CLI; each module exposes `register(subparsers)`."""
