"""Model builders for ember's workloads."""
