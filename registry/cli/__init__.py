"""The `registry` command: the click group, its one error handler, and one module per command family."""
