"""Small models and stand-ins shared by the autotuner's unit tests (T1's tests)."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper


def two_conv_model(channels: int = 16, size: int = 8):
    """x -> Conv -> Relu -> Conv -> Relu: both conv+relu groups have the same workload, so
    they share one kernel called twice per run."""
    rng = np.random.default_rng(0)
    weights = [numpy_helper.from_array(
        (rng.standard_normal((channels, channels, 3, 3)) * 0.1).astype(np.float32), f"w{k}")
        for k in range(2)]
    nodes = [
        helper.make_node("Conv", ["x", "w0"], ["c0"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c0"], ["r0"]),
        helper.make_node("Conv", ["r0", "w1"], ["c1"], pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["y"]),
    ]
    shape = [1, channels, size, size]
    graph = helper.make_graph(nodes, "two_conv",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, shape)],
                              weights)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)])
