"""The compiler: frontends, graph passes, op templates and the `compile` driver."""
