"""The nine real-architecture "light" models that ship with the onnx package, made useful.

Their shipped weights are one constant (every weight is `ConstantOfShape(0.02)`), so outputs
are uniform and catch few bugs. `light_model(name, seed)` returns the model with every weight
replaced by seeded random values scaled by its role (He-scaled convolution and dense weights,
batch-norm variances positive), so activations stay in a sane range through 50+ layers.
"""

from __future__ import annotations

import math
import os

import numpy as np
import onnx
from onnx import helper, numpy_helper

LIGHT_MODELS = (
    "bvlc_alexnet", "densenet121", "inception_v1", "inception_v2", "resnet50",
    "shufflenet", "squeezenet", "vgg19", "zfnet512",
)


def light_model_path(name: str) -> str:
    """Path of the shipped model `light_<name>.onnx` inside the onnx package."""
    if name not in LIGHT_MODELS:
        raise ValueError(f"unknown light model {name!r}; known: {', '.join(LIGHT_MODELS)}")
    folder = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "light")
    return os.path.join(folder, f"light_{name}.onnx")


def light_model(name: str, seed: int = 0) -> onnx.ModelProto:
    """The light model `name` with seeded random weights."""
    return randomize_weights(onnx.load(light_model_path(name)), seed)


Consumers = dict[str, tuple[str, int, onnx.NodeProto]]


def _consumers(graph: onnx.GraphProto) -> Consumers:
    """value -> (op, input index, node) of its first consumer."""
    consumers: Consumers = {}
    for node in graph.node:
        for index, name in enumerate(node.input):
            consumers.setdefault(name, (node.op_type, index, node))
    return consumers


def _roles(graph: onnx.GraphProto) -> Consumers:
    """value -> (consumer op, input index, consumer) of its first consumer, looking through
    Unsqueeze (DenseNet and Inception v2 write batch norm as Unsqueeze + Mul + Add)."""
    consumers = _consumers(graph)
    roles = {}
    for name, (op, index, node) in consumers.items():
        while op == "Unsqueeze" and node.output[0] in consumers:
            op, index, node = consumers[node.output[0]]
        roles[name] = (op, index, node)
    return roles


def _op_after(node: onnx.NodeProto, consumers: Consumers) -> str:
    """The op that consumes `node`'s output, looking through batch norm."""
    op = ""
    while node.output and node.output[0] in consumers:
        op, _, node = consumers[node.output[0]]
        if op != "BatchNormalization":
            break
    return op


def _random_weight(shape: tuple[int, ...], role: tuple[str, int, onnx.NodeProto] | None,
                   rng: np.random.Generator, consumers: Consumers) -> np.ndarray:
    op, index, node = role if role else ("", -1, None)
    if op == "Conv" and index == 1 or op == "Gemm" and index == 1:
        if op == "Gemm":
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            fan_in = shape[1] if trans_b else shape[0]
        else:
            fan_in = math.prod(shape[1:])
        # He's gain of 2 makes up for the half a ReLU zeroes; a conv feeding a conv with no
        # ReLU between (ShuffleNet's depthwise convs) keeps a gain of 1, or each doubles the
        # variance.
        gain = 1.0 if op == "Conv" and _op_after(node, consumers) == "Conv" else 2.0
        return rng.standard_normal(shape) * math.sqrt(gain / max(fan_in, 1))
    if op == "BatchNormalization":
        low_high = {1: (0.8, 1.2), 2: (-0.1, 0.1), 3: (-0.1, 0.1), 4: (0.5, 1.5)}[index]
        if index == 1 and _op_after(node, consumers) in ("Sum", "Add"):
            # A residual sum adds its branches' variances; a small gain on the branch keeps
            # ResNet-50's and ShuffleNet's logits from growing to 1e3..1e5 (a one-hot softmax).
            low_high = (0.2, 0.4)
        return rng.uniform(*low_high, size=shape)
    if op == "Mul":
        return rng.uniform(0.8, 1.2, size=shape)
    return rng.uniform(-0.1, 0.1, size=shape)


def randomize_weights(model: onnx.ModelProto, seed: int = 0) -> onnx.ModelProto:
    """A copy of `model` whose float weights are seeded random values.

    Weights are the float initializers and the outputs of `ConstantOfShape` nodes fed by an
    initializer; the latter become initializers (listed as graph inputs too, as IR version 3
    requires), and the shape initializers that fed them are dropped.
    """
    rng = np.random.default_rng(seed)
    model = onnx.ModelProto.FromString(model.SerializeToString())
    graph = model.graph
    roles = _roles(graph)
    consumers = _consumers(graph)
    initializers = {init.name: init for init in graph.initializer}

    weights: dict[str, np.ndarray] = {}
    kept_nodes = []
    for node in graph.node:
        if node.op_type == "ConstantOfShape" and node.input and node.input[0] in initializers:
            shape = tuple(int(d) for d in numpy_helper.to_array(initializers[node.input[0]]))
            role = roles.get(node.output[0])
            weights[node.output[0]] = _random_weight(shape, role, rng, consumers)
        else:
            kept_nodes.append(node)
    for name, init in initializers.items():
        array = numpy_helper.to_array(init)
        if array.dtype == np.float32 and name in roles:
            weights[name] = _random_weight(array.shape, roles[name], rng, consumers)

    still_used = {name for node in kept_nodes for name in node.input}
    graph.ClearField("node")
    graph.node.extend(kept_nodes)
    old = [init for init in graph.initializer
           if init.name in still_used and init.name not in weights]
    graph.ClearField("initializer")
    graph.initializer.extend(old)
    graph.initializer.extend(
        numpy_helper.from_array(array.astype(np.float32), name) for name, array in weights.items()
    )
    initializer_names = {init.name for init in graph.initializer}
    inputs = [v for v in graph.input if v.name in initializer_names or v.name in still_used]
    listed = {v.name for v in inputs}
    inputs += [
        helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, array.shape)
        for name, array in weights.items() if name not in listed
    ]
    graph.ClearField("input")
    graph.input.extend(inputs)
    return model
