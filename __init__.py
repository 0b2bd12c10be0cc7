"""ember: a deep learning compiler stack. ONNX models in, fast compiled modules out.

    import ember
    module = ember.compile("model.onnx")
    outputs = module.run({"input": x})
    module.save("model.ember"); module = ember.load("model.ember")

The heavy parts (onnx, the compiler) load on first use.
"""

from ember.errors import (
    ArtifactError,
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
    "ArtifactError", "CodegenError", "EmberError", "FrontendError", "IRError", "InputError",
    "Module", "ScheduleError", "ShapeError", "SpecializationNeeded", "Target", "TargetError",
    "TensorSpec", "UnsupportedOpError", "aligned", "compile", "load", "__version__",
]

_LAZY = {
    "compile": ("ember.compiler.build", "compile"),
    "load": ("ember.runtime.artifact", "load"),
    "Module": ("ember.runtime.module", "Module"),
    "TensorSpec": ("ember.runtime.module", "TensorSpec"),
    "aligned": ("ember.backends.llvm.runtime", "aligned"),
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        module, attr = _LAZY[name]
        value = getattr(importlib.import_module(module), attr)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'ember' has no attribute {name!r}")
