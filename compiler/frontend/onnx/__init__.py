"""The ONNX frontend: `import_onnx(model, input_shapes)` -> ember graph IR.

Converters live in family modules (math, nn, reduce, tensor); importing this package registers
them all.
"""

from ember.compiler.frontend.onnx import (  # noqa: F401  (registers the converters)
    attention,
    control_flow,
    index,
    layout,
    linalg,
    logic,
    loss,
    math,
    nn,
    nn_norm,
    quantize,
    reduce,
    resize,
    rnn,
    sampling,
    signal,
    tensor,
)
from ember.compiler.frontend.onnx.importer import import_onnx, load_model
from ember.compiler.frontend.onnx.registry import converter, find_converter, supported_ops

__all__ = ["converter", "find_converter", "import_onnx", "load_model", "supported_ops"]
