"""Graph passes (Graph -> Graph), the pipeline per opt level, and fusion partitioning.

`optimize(graph, opt_level)` runs the level's pipeline (`PIPELINES`, a list of pass names);
`fuse(graph)` partitions the optimized graph into fused groups, one kernel each (`FusionPlan`).
"""

from ember.compiler.passes.common_subexpressions import eliminate_common_subexpressions
from ember.compiler.passes.constant_folding import fold_constants
from ember.compiler.passes.dead_code import eliminate_dead_code
from ember.compiler.passes.fusion import FusedGroup, FusionPlan, Refusal, format_plan, fuse
from ember.compiler.passes.pipeline import PASSES, PIPELINES, optimize, run_passes
from ember.compiler.passes.simplify import simplify

__all__ = [
    "PASSES",
    "PIPELINES",
    "FusedGroup",
    "FusionPlan",
    "Refusal",
    "eliminate_common_subexpressions",
    "eliminate_dead_code",
    "fold_constants",
    "format_plan",
    "fuse",
    "optimize",
    "run_passes",
    "simplify",
]
