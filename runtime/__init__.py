"""The runtime: compiled modules and the executors that run them.

It never imports the compiler, so a saved module loads without it.
"""

from ember.runtime.module import BenchmarkResult, Module, TensorSpec

__all__ = ["BenchmarkResult", "Module", "TensorSpec"]
