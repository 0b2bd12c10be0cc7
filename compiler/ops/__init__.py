"""Op templates: a tensor-expression compute per op and schedules per target family.

Importing this package registers every template (see `registry.py` for the protocol).
"""

from ember.compiler.ops import compute, cpu  # noqa: F401  (registers the templates)
from ember.compiler.ops.registry import (
    Workload,
    get_compute,
    get_schedule,
    has_template,
    instantiate,
    register_compute,
    register_extern,
    register_schedule,
)

__all__ = ["Workload", "get_compute", "get_schedule", "has_template", "instantiate",
           "register_compute", "register_extern", "register_schedule"]
