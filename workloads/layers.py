"""Building blocks for the XR workload models: a small ONNX graph builder and common layers.

`Net` collects nodes and seeded random initializers and tracks every value's static shape and
an estimate of its root-mean-square, so a model builder reads like the network's forward pass:

    net = Net("res8", seed=0)
    x = net.input("mfcc", (1, 1, 98, 40))
    x = conv_bn_act(net, x, 19, 3)
    net.output(x)
    model = net.model()

Weights are He-scaled (normal, std sqrt(2 / fan_in)), and a batch norm's running variance is
the estimated mean square of its input (as a trained network's statistics would be), so
activations stay O(1) through deep networks with additive skips and a comparison against ONNX
Runtime at rtol 1e-3 / atol 1e-4 is meaningful. The estimate propagates simple rules per op
(`_RMS_RULES`: a He-scaled conv keeps the mean square, ReLU halves it, independent sums add);
it ignores correlations, so it is a scale, not a statistic.

The layer functions (conv-bn-act, depthwise-separable block, inverted residual, squeeze-excite,
transposed conv, pre-activation bottleneck, pooling, slicing, linear, matmul, softmax, layer
norm, multi-head attention, feed-forward, upsample) are shared by
`workloads/xr.py` and `workloads/xr_dense.py`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
Shape = tuple[int, ...]


class Net:
    """An ONNX graph under construction: nodes, initializers, and each value's shape.

    With `calibrate_bn=False`, batch norms take running variances near 1 instead of the RMS
    estimate: for builders whose He gains keep activations near unit scale by themselves.
    Estimate-normalized batch norms have no restoring force, so in deep stacks of activations
    whose gain grows with the input's scale (hard-swish) the estimate's error compounds.
    """

    def __init__(self, name: str, seed: int = 0, calibrate_bn: bool = True) -> None:
        self.name = name
        self.calibrate_bn = calibrate_bn
        self.rng = np.random.default_rng(seed)
        self.nodes: list[onnx.NodeProto] = []
        self.initializers: list[onnx.TensorProto] = []
        self.inputs: list[onnx.ValueInfoProto] = []
        self.outputs: list[onnx.ValueInfoProto] = []
        self.shapes: dict[str, Shape] = {}
        self.rms: dict[str, float] = {}
        self._counts: dict[str, int] = {}

    def fresh(self, prefix: str) -> str:
        """A new unique value or node name starting with `prefix`."""
        count = self._counts.get(prefix, 0)
        self._counts[prefix] = count + 1
        return f"{prefix}_{count}"

    def shape(self, value: str) -> Shape:
        return self.shapes[value]

    def input(self, name: str, shape: Sequence[int]) -> str:
        """Declare a float32 graph input."""
        self.shapes[name] = tuple(shape)
        self.rms[name] = 1.0
        self.inputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape)))
        return name

    def output(self, value: str, name: str | None = None) -> str:
        """Declare `value` a float32 graph output; with `name`, the output is an Identity of
        `value` called `name` (so a model's output names do not depend on node counts)."""
        if name is not None:
            self.nodes.append(helper.make_node("Identity", [value], [name], name=name))
            self.shapes[name] = self.shapes[value]
            self.rms[name] = self.rms.get(value, 1.0)
            value = name
        self.outputs.append(
            helper.make_tensor_value_info(value, TensorProto.FLOAT, list(self.shapes[value])))
        return value

    def const(self, array: np.ndarray, prefix: str = "w") -> str:
        """An initializer holding `array` (float64 arrays are stored as float32)."""
        array = np.asarray(array)
        if array.dtype == np.float64:
            array = array.astype(np.float32)
        name = self.fresh(prefix)
        self.initializers.append(numpy_helper.from_array(array, name))
        self.shapes[name] = tuple(array.shape)
        if array.dtype.kind == "f":
            self.rms[name] = float(np.sqrt(np.mean(np.square(array, dtype=np.float64))))
        return name

    def he_weight(self, shape: Sequence[int], fan_in: int, gain: float = 2.0) -> str:
        """A He-scaled random weight: normal with variance gain / fan_in."""
        std = math.sqrt(gain / fan_in)
        weight = self.rng.standard_normal(size=tuple(shape), dtype=np.float32)
        return self.const(weight * np.float32(std), "w")

    def small_bias(self, size: int) -> str:
        return self.const(self.rng.normal(0.0, 0.05, size=(size,)), "b")

    def op(self, op_type: str, inputs: Sequence[str], shape: Sequence[int],
           **attrs: object) -> str:
        """Append one node with one output of the given (static) shape; returns the output."""
        out = self.fresh(op_type.lower())
        self.nodes.append(helper.make_node(op_type, list(inputs), [out], name=out, **attrs))
        self.shapes[out] = tuple(int(d) for d in shape)
        rule = _RMS_RULES.get(op_type)
        first = self.rms.get(inputs[0], 1.0) if inputs else 1.0
        self.rms[out] = rule(self, list(inputs)) if rule is not None else first
        return out

    def model(self) -> onnx.ModelProto:
        """The finished, checker-valid model."""
        graph = helper.make_graph(self.nodes, self.name, self.inputs, self.outputs,
                                  initializer=self.initializers)
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)],
                                  producer_name="ember.workloads")
        model.ir_version = 8
        return model


def _rms_contraction(net: Net, inputs: list[str], reduced: int) -> float:
    """Product of the operands' RMS times sqrt(length of the contraction)."""
    return net.rms.get(inputs[0], 1.0) * net.rms.get(inputs[1], 1.0) * math.sqrt(reduced)


_HERMITE = np.polynomial.hermite_e.hermegauss(40)


def _gaussian_rms(fn: Callable[[np.ndarray], np.ndarray], rms: float) -> float:
    """RMS of fn(x) for x ~ N(0, rms^2) (Gauss-Hermite quadrature), for activations whose
    gain depends on the input's scale."""
    points, weights = _HERMITE
    mean_square = np.sum(weights * np.square(fn(rms * points))) / np.sum(weights)
    return float(np.sqrt(mean_square))


def _hard_swish(x: np.ndarray) -> np.ndarray:
    return x * np.clip(x + 3.0, 0.0, 6.0) / 6.0


def _rms_sum(net: Net, inputs: list[str]) -> float:
    return math.sqrt(sum(net.rms.get(value, 1.0) ** 2 for value in inputs if value))


_RMS_RULES = {
    "Relu": lambda net, ins: net.rms[ins[0]] / math.sqrt(2.0),
    "LeakyRelu": lambda net, ins: net.rms[ins[0]] / math.sqrt(2.0),
    # The builders' only Clip is ReLU6, which on O(1) inputs is nearly a ReLU.
    "Clip": lambda net, ins: net.rms[ins[0]] / math.sqrt(2.0),
    "HardSwish": lambda net, ins: _gaussian_rms(_hard_swish, net.rms[ins[0]]),
    "Add": _rms_sum,
    "Sub": _rms_sum,
    "Concat": lambda net, ins: _rms_sum(net, ins) / math.sqrt(len(ins)),
    "Mul": lambda net, ins: net.rms.get(ins[0], 1.0) * net.rms.get(ins[1], 1.0),
    "Div": lambda net, ins: net.rms.get(ins[0], 1.0) / max(net.rms.get(ins[1], 1.0), 1e-6),
    "Conv": lambda net, ins: _rms_contraction(net, ins, math.prod(net.shape(ins[1])[1:])),
    "MatMul": lambda net, ins: _rms_contraction(net, ins, net.shape(ins[1])[-2]),
    # The builders reduce over a few (about 4) roughly independent terms.
    "ReduceSum": lambda net, ins: net.rms[ins[0]] * 2.0,
    "ReduceMax": lambda net, ins: net.rms[ins[0]] * 2.0,
    "Softmax": lambda net, ins: 0.1,
    "LayerNormalization": lambda net, ins: 1.0,
    "Sigmoid": lambda net, ins: 0.5,
    "HardSigmoid": lambda net, ins: 0.5,
    "Erf": lambda net, ins: 0.5,
}


# --- elementwise and shape helpers -------------------------------------------------------

def relu(net: Net, x: str) -> str:
    return net.op("Relu", [x], net.shape(x))


def activation(net: Net, x: str, kind: str | None) -> str:
    """Apply `kind` ("relu", "relu6", "leaky_relu", "sigmoid", "hard_swish", "gelu", None)."""
    if kind is None:
        return x
    if kind == "relu":
        return relu(net, x)
    if kind == "relu6":
        bounds = [net.const(np.array(v, np.float32), "c") for v in (0.0, 6.0)]
        return net.op("Clip", [x, *bounds], net.shape(x))
    if kind == "leaky_relu":
        return net.op("LeakyRelu", [x], net.shape(x), alpha=0.01)
    if kind == "sigmoid":
        return net.op("Sigmoid", [x], net.shape(x))
    if kind == "hard_swish":
        return net.op("HardSwish", [x], net.shape(x))
    if kind == "gelu":
        # Gelu is an ONNX op only from opset 20: spell it with Erf.
        half = net.op("Mul", [x, net.const(np.array(0.5, np.float32), "c")], net.shape(x))
        scaled = net.op("Mul", [x, net.const(np.array(1 / math.sqrt(2), np.float32), "c")],
                        net.shape(x))
        erf = net.op("Erf", [scaled], net.shape(x))
        one_plus = net.op("Add", [erf, net.const(np.array(1.0, np.float32), "c")], net.shape(x))
        return net.op("Mul", [half, one_plus], net.shape(x))
    raise ValueError(f"unknown activation {kind!r}")


def add(net: Net, a: str, b: str) -> str:
    return net.op("Add", [a, b], np.broadcast_shapes(net.shape(a), net.shape(b)))


def mul(net: Net, a: str, b: str) -> str:
    return net.op("Mul", [a, b], np.broadcast_shapes(net.shape(a), net.shape(b)))


def matmul(net: Net, a: str, b: str) -> str:
    """MatMul of (..., M, K) by (..., K, N) with broadcast batch axes."""
    shape_a, shape_b = net.shape(a), net.shape(b)
    batch = np.broadcast_shapes(shape_a[:-2], shape_b[:-2])
    return net.op("MatMul", [a, b], (*batch, shape_a[-2], shape_b[-1]))


def softmax(net: Net, x: str, axis: int = -1) -> str:
    return net.op("Softmax", [x], net.shape(x), axis=axis)


def concat(net: Net, values: Sequence[str], axis: int = 1) -> str:
    shapes = [net.shape(v) for v in values]
    shape = list(shapes[0])
    shape[axis] = sum(s[axis] for s in shapes)
    return net.op("Concat", values, shape, axis=axis)


def slice_axes(net: Net, x: str, starts: Sequence[int], ends: Sequence[int],
               axes: Sequence[int]) -> str:
    """x[starts:ends] along `axes` (non-negative, in-range bounds), as one Slice."""
    shape = list(net.shape(x))
    for start, end, axis in zip(starts, ends, axes):
        shape[axis] = end - start
    bounds = [net.const(np.array(list(v), np.int64), "sl") for v in (starts, ends, axes)]
    return net.op("Slice", [x, *bounds], shape)


def split(net: Net, x: str, sizes: Sequence[int], axis: int) -> list[str]:
    """Consecutive pieces of `sizes` along `axis` (one Slice each)."""
    offsets = [0, *itertools.accumulate(sizes)]
    return [slice_axes(net, x, [begin], [end], [axis])
            for begin, end in zip(offsets, offsets[1:])]


def reshape(net: Net, x: str, shape: Sequence[int]) -> str:
    target = net.const(np.array(shape, np.int64), "shape")
    assert math.prod(shape) == math.prod(net.shape(x)), (shape, net.shape(x))
    return net.op("Reshape", [x, target], shape)


def transpose(net: Net, x: str, perm: Sequence[int]) -> str:
    shape = net.shape(x)
    return net.op("Transpose", [x], [shape[p] for p in perm], perm=list(perm))


# --- convolutional layers -----------------------------------------------------------------

def _conv_out(size: int, kernel: int, stride: int, pad_begin: int, pad_end: int,
              dilation: int = 1) -> int:
    return (size + pad_begin + pad_end - dilation * (kernel - 1) - 1) // stride + 1


def conv(net: Net, x: str, out_channels: int, kernel: int | Sequence[int], stride: int = 1,
         groups: int = 1, pads: Sequence[int] | None = None, dilation: int = 1,
         bias: bool = True, gain: float = 2.0) -> str:
    """Conv over (N, C, *spatial) with 'same'-style symmetric padding unless `pads` is given;
    weights have variance `gain` / fan_in (2 before a ReLU, 1 before a linear use)."""
    shape = net.shape(x)
    spatial = len(shape) - 2
    kernels = (kernel,) * spatial if isinstance(kernel, int) else tuple(kernel)
    if pads is None:
        pads = [dilation * (k - 1) // 2 for k in kernels] * 2
    in_channels = shape[1]
    fan_in = in_channels // groups * math.prod(kernels)
    weight = net.he_weight((out_channels, in_channels // groups, *kernels), fan_in, gain)
    inputs = [x, weight] + ([net.small_bias(out_channels)] if bias else [])
    out_spatial = [
        _conv_out(shape[2 + d], kernels[d], stride, pads[d], pads[spatial + d], dilation)
        for d in range(spatial)
    ]
    return net.op("Conv", inputs, (shape[0], out_channels, *out_spatial),
                  kernel_shape=list(kernels), strides=[stride] * spatial, pads=list(pads),
                  group=groups, dilations=[dilation] * spatial)


def batch_norm(net: Net, x: str, affine: bool = True, scale: float = 1.0) -> str:
    """Inference BatchNormalization whose running variance is the estimated mean square of `x`
    (so the output is O(1)), with a random affine near identity; `scale` shrinks the affine
    scale (for the last BN of a residual branch, so that sums of many branches do not grow:
    the usual small-gamma initialization)."""
    channels = net.shape(x)[1]
    rng = net.rng
    gamma = scale * rng.uniform(0.8, 1.2, channels) if affine else np.ones(channels)
    shift = rng.normal(0.0, 0.05, channels) if affine else np.zeros(channels)
    spread = net.rms[x] if net.calibrate_bn else 1.0
    mean = rng.normal(0.0, 0.05 * spread, channels)
    var = spread ** 2 * rng.uniform(0.8, 1.2, channels)
    params = [net.const(a, "bn") for a in (gamma, shift, mean, var)]
    out = net.op("BatchNormalization", [x, *params], net.shape(x), epsilon=1e-5)
    net.rms[out] = scale
    return out


def conv_bn_act(net: Net, x: str, out_channels: int, kernel: int | Sequence[int],
                stride: int = 1, groups: int = 1, act: str | None = "relu",
                dilation: int = 1, bn_scale: float = 1.0) -> str:
    """Conv (no bias) -> BatchNormalization -> activation."""
    gain = 1.0 if act is None else 2.0
    y = conv(net, x, out_channels, kernel, stride, groups, dilation=dilation, bias=False,
             gain=gain)
    return activation(net, batch_norm(net, y, scale=bn_scale), act)


def depthwise_separable(net: Net, x: str, out_channels: int, kernel: int = 3,
                        stride: int = 1, act: str = "relu") -> str:
    """Depthwise kxk conv-bn-act then pointwise 1x1 conv-bn-act (MobileNet v1 block)."""
    channels = net.shape(x)[1]
    y = conv_bn_act(net, x, channels, kernel, stride, groups=channels, act=act)
    return conv_bn_act(net, y, out_channels, 1, act=act)


def inverted_residual(net: Net, x: str, out_channels: int, expand: int, kernel: int = 3,
                      stride: int = 1, act: str = "relu", se: int = 0) -> str:
    """MobileNet v2 / FBNet block: 1x1 expand (skipped when expand == 1), depthwise kxk with
    stride, squeeze-excite of width `se` (when not 0), linear 1x1 project; identity shortcut
    when shape is kept."""
    in_channels = net.shape(x)[1]
    hidden = in_channels * expand
    y = x if expand == 1 else conv_bn_act(net, x, hidden, 1, act=act)
    y = conv_bn_act(net, y, hidden, kernel, stride, groups=hidden, act=act)
    if se:
        y = squeeze_excite(net, y, se)
    residual = stride == 1 and in_channels == out_channels
    y = conv_bn_act(net, y, out_channels, 1, act=None, bn_scale=0.3 if residual else 1.0)
    return add(net, y, x) if residual else y


def squeeze_excite(net: Net, x: str, mid: int) -> str:
    """Squeeze-excite (MobileNetV3 / FBNetV3 style): global average pool, 1x1 conv to `mid`
    + ReLU, 1x1 conv back + hard sigmoid, times `x`."""
    channels = net.shape(x)[1]
    s = relu(net, conv(net, global_avg_pool(net, x), mid, 1))
    s = conv(net, s, channels, 1, gain=1.0)
    s = net.op("HardSigmoid", [s], net.shape(s), alpha=1 / 6, beta=0.5)
    return mul(net, x, s)


def conv_transpose(net: Net, x: str, out_channels: int, kernel: int, stride: int,
                   groups: int = 1, weight: np.ndarray | None = None, bias: bool = False,
                   gain: float = 2.0) -> str:
    """ConvTranspose over (N, C, *spatial) without padding; unless `weight` is given, weights
    have variance `gain` over the taps an output receives (C / groups * k^d / stride^d)."""
    shape = net.shape(x)
    spatial = len(shape) - 2
    taps = shape[1] // groups * (kernel / stride) ** spatial
    if weight is None:
        w = net.he_weight((shape[1], out_channels // groups, *[kernel] * spatial),
                          max(int(taps), 1), gain)
    else:
        w = net.const(weight, "w")
    inputs = [x, w] + ([net.small_bias(out_channels)] if bias else [])
    out_spatial = [(size - 1) * stride + kernel for size in shape[2:]]
    out = net.op("ConvTranspose", inputs, (shape[0], out_channels, *out_spatial),
                 kernel_shape=[kernel] * spatial, strides=[stride] * spatial, group=groups)
    net.rms[out] = net.rms[x] * net.rms[w] * math.sqrt(taps)
    return out


def preact_bottleneck(net: Net, x: str, planes: int, expansion: int = 2) -> str:
    """Pre-activation bottleneck (stacked-hourglass residual): BN-ReLU-1x1, BN-ReLU-3x3,
    BN-ReLU-1x1 to planes*expansion channels, plus the input (1x1-projected if needed)."""
    in_channels = net.shape(x)[1]
    out_channels = planes * expansion
    y = conv(net, relu(net, batch_norm(net, x)), planes, 1)
    y = conv(net, relu(net, batch_norm(net, y)), planes, 3)
    y = conv(net, relu(net, batch_norm(net, y)), out_channels, 1, gain=0.05)
    shortcut = x if in_channels == out_channels else conv(net, x, out_channels, 1, gain=1.0)
    return add(net, y, shortcut)


def max_pool(net: Net, x: str, kernel: int | Sequence[int], stride: int | None = None,
             ceil: bool = False, pad: int = 0) -> str:
    return _pool(net, "MaxPool", x, kernel, stride, ceil, pad)


def avg_pool(net: Net, x: str, kernel: int | Sequence[int], stride: int | None = None,
             ceil: bool = False) -> str:
    return _pool(net, "AveragePool", x, kernel, stride, ceil)


def _pool(net: Net, op_type: str, x: str, kernel: int | Sequence[int], stride: int | None,
          ceil: bool, pad: int = 0) -> str:
    shape = net.shape(x)
    spatial = len(shape) - 2
    kernels = (kernel,) * spatial if isinstance(kernel, int) else tuple(kernel)
    strides = kernels if stride is None else (stride,) * spatial
    rounding = math.ceil if ceil else math.floor
    out = [rounding((shape[2 + d] + 2 * pad - kernels[d]) / strides[d]) + 1
           for d in range(spatial)]
    attrs: dict[str, object] = {"kernel_shape": list(kernels), "strides": list(strides)}
    if ceil:
        attrs["ceil_mode"] = 1
    if pad:
        attrs["pads"] = [pad] * (2 * spatial)
    return net.op(op_type, [x], (*shape[:2], *out), **attrs)


def global_avg_pool(net: Net, x: str) -> str:
    shape = net.shape(x)
    return net.op("GlobalAveragePool", [x], (*shape[:2], *([1] * (len(shape) - 2))))


def upsample(net: Net, x: str, size: Sequence[int], mode: str = "nearest",
             coordinates: str | None = None) -> str:
    """Resize the spatial axes of (N, C, *spatial) to `size` (nearest or linear); the
    coordinate transformation defaults to PyTorch's for the mode ("align_corners" is the other
    one the models use)."""
    shape = net.shape(x)
    sizes = net.const(np.array([*shape[:2], *size], np.int64), "sizes")
    attrs: dict[str, object] = {"mode": mode}
    if mode == "nearest":
        # PyTorch's F.interpolate(mode="nearest") convention.
        attrs["coordinate_transformation_mode"] = coordinates or "asymmetric"
        attrs["nearest_mode"] = "floor"
    else:
        attrs["coordinate_transformation_mode"] = coordinates or "half_pixel"
    return net.op("Resize", [x, "", "", sizes], (*shape[:2], *size), **attrs)


# --- sequence layers (tensors are (N, T, D)) ------------------------------------------------

def linear(net: Net, x: str, out_features: int, bias: bool = True, gain: float = 1.0) -> str:
    """x @ W + b over the last axis; W is scaled by `gain` / in_features."""
    shape = net.shape(x)
    weight = net.he_weight((shape[-1], out_features), shape[-1], gain)
    y = net.op("MatMul", [x, weight], (*shape[:-1], out_features))
    return add(net, y, net.small_bias(out_features)) if bias else y


def layer_norm(net: Net, x: str) -> str:
    """LayerNormalization over the last axis, with a random affine near identity."""
    size = net.shape(x)[-1]
    scale = net.const(net.rng.uniform(0.8, 1.2, size), "ln")
    shift = net.const(net.rng.normal(0.0, 0.05, size), "ln")
    return net.op("LayerNormalization", [x, scale, shift], net.shape(x), axis=-1,
                  epsilon=1e-5)


def attention(net: Net, x: str, heads: int, mask: str | None = None,
              kv_source: str | None = None) -> str:
    """Multi-head scaled dot-product attention written with MatMul and Softmax.

    `x` (N, T, D) gives the queries, `kv_source` (N, S, D; default `x`) the keys and values
    (projected together by one D -> 2D linear), and `mask` an additive (T, S) constant.
    """
    batch, steps, dim = net.shape(x)
    source = x if kv_source is None else kv_source
    src_steps = net.shape(source)[1]
    head_dim = dim // heads
    query = linear(net, x, dim)
    key_value = linear(net, source, 2 * dim)
    query = transpose(net, reshape(net, query, (batch, steps, heads, head_dim)), (0, 2, 1, 3))
    key_value = reshape(net, key_value, (batch, src_steps, 2, heads, head_dim))
    key_value = transpose(net, key_value, (2, 0, 3, 1, 4))      # (2, N, H, S, hd)
    key = net.op("Gather", [key_value, net.const(np.array(0, np.int64), "i")],
                 (batch, heads, src_steps, head_dim), axis=0)
    value = net.op("Gather", [key_value, net.const(np.array(1, np.int64), "i")],
                   (batch, heads, src_steps, head_dim), axis=0)
    key_t = transpose(net, key, (0, 1, 3, 2))
    scores = net.op("MatMul", [query, key_t], (batch, heads, steps, src_steps))
    scale = net.const(np.array(1.0 / math.sqrt(head_dim), np.float32), "c")
    scores = net.op("Mul", [scores, scale], net.shape(scores))
    if mask is not None:
        scores = add(net, scores, mask)
    probs = net.op("Softmax", [scores], net.shape(scores), axis=-1)
    context = net.op("MatMul", [probs, value], (batch, heads, steps, head_dim))
    context = reshape(net, transpose(net, context, (0, 2, 1, 3)), (batch, steps, dim))
    return linear(net, context, dim)


def feed_forward(net: Net, x: str, hidden: int, act: str = "relu") -> str:
    """Linear -> activation -> linear (the transformer's position-wise FFN)."""
    dim = net.shape(x)[-1]
    y = activation(net, linear(net, x, hidden, gain=2.0), act)
    return linear(net, y, dim)


def transformer_block(net: Net, x: str, heads: int, hidden: int, mask: str | None = None,
                      act: str = "relu") -> str:
    """Pre-norm transformer encoder layer: x + MHA(LN(x)), then x + FFN(LN(x))."""
    x = add(net, x, attention(net, layer_norm(net, x), heads, mask))
    return add(net, x, feed_forward(net, layer_norm(net, x), hidden, act))
