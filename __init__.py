"""ember: a deep learning compiler stack. ONNX models in, fast compiled modules out.

    import ember
    module = ember.compile("model.onnx", target="reference")
    outputs = module.run({"input": x})

The heavy parts (onnx, the compiler) load on first use.
"""

from ember.errors import (
    CodegenError,
    EmberError,
    FrontendError,
    InputError,
    IRError,
    ScheduleError,
    ShapeError,
    SpecializationNeeded,
    TargetError,
    UnsupportedOpError,
)
from ember.target import Target

__version__ = "0.1.0"

__all__ = [
    "CodegenError", "EmberError", "FrontendError", "IRError", "InputError", "Module",
    "ScheduleError", "ShapeError", "SpecializationNeeded", "Target", "TargetError",
    "TensorSpec", "UnsupportedOpError", "compile", "__version__",
]

_LAZY = {
    "compile": ("ember.compiler.build", "compile"),
    "Module": ("ember.runtime.module", "Module"),
    "TensorSpec": ("ember.runtime.module", "TensorSpec"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
