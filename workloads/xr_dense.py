"""XRBench dense-prediction and detection unit models as ONNX graphs with seeded random weights.

Five builders, one per XRBench task (`/work/shared/specs/xrbench.md`; layer shapes in
`xrbench_scenarios.json`): `ss_hrvit_b1` (semantic segmentation), `od_d2go_faster_rcnn` (object
detection), `de_midas_v21_small` (depth estimation), `dr_rgbd_200` (depth refinement) and
`pd_plane_rcnn_quarter` (plane detection). Each returns an opset-17 `onnx.ModelProto` built with
`workloads/layers.py` (`Net` and its layer functions); its docstring says how the XRBench layer
table maps to the graph and what is faithful and what is simplified. The tables list every
layer as a stride-1 dense CONV (see the notes of xrbench_scenarios.json), so real strides,
padding and depthwise convolutions come from the named architectures.

Weights are He-scaled (`numpy.random.default_rng(seed)`), batch norms are inference-mode
BatchNormalization nodes with running variances near 1 (`Net(..., calibrate_bn=False)`: in
these hard-swish and post-activation residual networks an estimate-normalized batch norm lets
the estimate's error compound), and a residual branch ends in a batch norm of small gain, so
activations stay O(1) through 100+ layers. `model_stats(model)` counts MACs (conv,
conv-transpose and matmul) and parameters. Importing the module registers the five models in
`ember.workloads.zoo` as "xr-ss", "xr-od", "xr-de", "xr-dr" and "xr-pd" (workloads/xr.py
imports it, so the zoo lists them).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

import numpy as np
import onnx
from onnx import TensorProto

from ember.workloads import layers as L
from ember.workloads.layers import Net


def _conv(net: Net, x: str, cout: int, k: int | tuple[int, int], stride: int = 1,
          pad: int | None = None, groups: int = 1, bn: bool = True, act: str | None = "relu",
          bias: bool | None = None, gain: float | None = None, bn_scale: float = 1.0,
          dilation: int = 1) -> str:
    """Conv (+ BatchNormalization of affine scale `bn_scale`) (+ activation); symmetric `pad`
    (default 'same'); a bias only without BN unless `bias` says otherwise."""
    # He's gain 2 makes up for the half a ReLU zeroes; a linear conv keeps gain 1.
    if gain is None:
        gain = 2.0 if act in ("relu", "relu6", "hard_swish") else 1.0
    pads = None if pad is None else [pad] * 4
    y = L.conv(net, x, cout, k, stride, groups, pads, dilation,
               bias=bias if bias is not None else not bn, gain=gain)
    if bn:
        y = L.batch_norm(net, y, scale=bn_scale)
    return L.activation(net, y, act)


def _crop(net: Net, x: str, top: int, left: int, size: int) -> str:
    """A size x size window of an NCHW map (one Slice over both spatial axes)."""
    return L.slice_axes(net, x, (top, left), (top + size, left + size), (2, 3))


def model_stats(model: onnx.ModelProto) -> dict[str, int]:
    """MACs of Conv, ConvTranspose, MatMul and Gemm nodes (from onnx shape inference) and the
    number of float parameters (initializers)."""
    inferred = onnx.shape_inference.infer_shapes(model)
    shapes: dict[str, list[int]] = {}
    for vi in [*inferred.graph.input, *inferred.graph.value_info, *inferred.graph.output]:
        shapes[vi.name] = [d.dim_value for d in vi.type.tensor_type.shape.dim]
    for init in model.graph.initializer:
        shapes[init.name] = list(init.dims)
    macs = 0
    for node in model.graph.node:
        if node.op_type == "Conv":
            w = shapes[node.input[1]]
            macs += math.prod(shapes[node.output[0]]) * math.prod(w[1:])
        elif node.op_type == "ConvTranspose":
            w = shapes[node.input[1]]
            macs += math.prod(shapes[node.input[0]]) * math.prod(w[1:])
        elif node.op_type in ("MatMul", "Gemm"):
            a = shapes[node.input[0]]
            macs += math.prod(shapes[node.output[0]]) * a[-1]
    params = sum(math.prod(init.dims) for init in model.graph.initializer
                 if init.data_type == TensorProto.FLOAT)
    return {"macs": int(macs), "params": int(params)}


# -- DR: sparse-to-dense (Ma & Karaman, ICRA 2018), RGBd-200 ------------------------------------

def _basic_block(net: Net, x: str, cout: int, stride: int) -> str:
    """ResNet basic block: 3x3-BN-ReLU, 3x3-BN (small gain), + shortcut, ReLU."""
    y = _conv(net, x, cout, 3, stride=stride)
    y = _conv(net, y, cout, 3, act=None, bn_scale=0.3)
    if stride != 1 or net.shape(x)[1] != cout:
        x = _conv(net, x, cout, 1, stride=stride, act=None, bn_scale=0.3)
    return L.relu(net, L.add(net, y, x))


def _unpool(net: Net, x: str) -> str:
    """sparse-to-dense's Unpool: a depthwise stride-2 ConvTranspose whose 2x2 kernel is one at
    its top-left corner, so each value lands at (2i, 2j) and the rest is zero."""
    c = net.shape(x)[1]
    weight = np.zeros((c, 1, 2, 2), np.float32)
    weight[:, :, 0, 0] = 1.0
    return L.conv_transpose(net, x, c, 2, 2, groups=c, weight=weight)


def _upproj(net: Net, x: str, cout: int) -> str:
    """UpProj module: unpool x2, then (5x5-BN-ReLU, 3x3-BN) + (5x5-BN), ReLU."""
    x = _unpool(net, x)
    # Three of four unpooled values are zero: a gain of 8 on the fan-in keeps the variance.
    y = _conv(net, x, cout, 5, gain=8.0)
    y = _conv(net, y, cout, 3, act=None)
    z = _conv(net, x, cout, 5, act=None, gain=4.0)
    return L.relu(net, L.add(net, y, z))


def dr_rgbd_200(seed: int = 0, height: int = 228, width: int = 912) -> onnx.ModelProto:
    """DR_RGBd_200: sparse-to-dense depth refinement (RGB + sparse depth, ResNet-18 + UpProj).

    Input `rgbd` [1, 4, 228, 912] (KITTI crop: RGB and a sparse depth channel with 200
    samples); output `depth` [1, 1, 228, 912].

    Layer table (34 convs) -> graph, in order: conv1 = 7x7/2 4->64 stem (+BN, ReLU, 3x3/2 max
    pool); conv2..conv20 = ResNet-18's four stages of two basic blocks (64, 128, 256, 512
    channels; the first block of stages 2-4 has stride 2 and a 1x1/2 projection, the table's
    conv8/13/18); conv21 = the 1x1 512->256 bottleneck conv (+BN); conv22..conv33 = four UpProj
    modules 256->128->64->32->16 (each: unpool x2, 5x5 conv + 3x3 conv on one branch and a 5x5
    conv on the other, summed, ReLU); conv34 = the 3x3 16->1 output conv; then bilinear
    upsampling (align_corners=True) from 128x464 to 228x912, as the network does.

    Faithful: ResNet-18 encoder with 4 input channels, strides and padding, BN everywhere the
    network has it, UpProj decoder with the network's Unpool (a fixed depthwise stride-2
    ConvTranspose), final bilinear upsampling. Simplified: random weights; the input is one
    4-channel tensor (the network concatenates RGB and sparse depth before conv1 too).
    """
    net = Net("xr_dr_rgbd_200", seed, calibrate_bn=False)
    x = net.input("rgbd", (1, 4, height, width))
    x = _conv(net, x, 64, 7, stride=2)
    x = L.max_pool(net, x, 3, 2, pad=1)
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        x = _basic_block(net, x, cout, stride)
        x = _basic_block(net, x, cout, 1)
    x = _conv(net, x, 256, 1, act=None)
    for cout in (128, 64, 32, 16):
        x = _upproj(net, x, cout)
    x = _conv(net, x, 1, 3, bn=False, act=None, bias=False)
    x = L.upsample(net, x, (height, width), mode="linear", coordinates="align_corners")
    net.output(x, "depth")
    return net.model()


# -- DE: MiDaS v2.1 small (EfficientNet-Lite3 encoder + RefineNet decoder) --------------------

def _residual_conv_unit(net: Net, x: str) -> str:
    """MiDaS ResidualConvUnit_custom (no BN in the small model): x + conv(relu(conv(relu(x))))."""
    c = net.shape(x)[1]
    y = _conv(net, L.relu(net, x), c, 3, bn=False, bias=True, act="relu")
    y = _conv(net, y, c, 3, bn=False, bias=True, act=None, gain=0.25)
    return L.add(net, y, x)


def _fusion_block(net: Net, x: str, skip: str | None, cout: int) -> str:
    """MiDaS FeatureFusionBlock_custom (expand=True): [x + RCU1(skip)], RCU2, bilinear x2
    (align_corners=True), 1x1 out conv to `cout` channels."""
    if skip is not None:
        x = L.add(net, x, _residual_conv_unit(net, skip))
    x = _residual_conv_unit(net, x)
    _, _, h, w = net.shape(x)
    x = L.upsample(net, x, (2 * h, 2 * w), mode="linear", coordinates="align_corners")
    return _conv(net, x, cout, 1, bn=False, bias=True, act=None)


def de_midas_v21_small(seed: int = 0, height: int = 192, width: int = 256,
                       max_repeats: int | None = None) -> onnx.ModelProto:
    """DE_midas_v21_small: MiDaS v2.1 small monocular depth (EfficientNet-Lite3 + RefineNet).

    Input `image` [1, 3, 192, 256]; output `depth` [1, 1, 192, 256] (relative inverse depth).

    Layer table (92 convs) -> graph: the table starts after the stem (its conv1 is the first
    block's 32-channel 3x3 depthwise conv at 96x128, so the input is 192x256 and the stem is a
    3x3/2 3->32 conv). conv1..conv67 = EfficientNet-Lite3's 24 MBConv blocks: 1 x (32->24, k3),
    3 x 32 (k3, first /2), 3 x 48 (k5, /2), 5 x 96 (k3, /2), 5 x 136 (k5), 6 x 232 (k5, /2),
    1 x 384 (k3); expansion 6, ReLU6, no squeeze-excite (the Lite variant). The table omits the
    strided depthwise convs and writes every depthwise conv as dense (K = C). conv68..conv71 =
    the scratch 3x3 convs from the four encoder taps (32, 48, 136, 384 channels at strides 4,
    8, 16, 32) to 64/128/256/512; conv72..conv89 = the four fusion blocks (residual conv units
    of two 3x3 convs, bilinear x2 with align_corners, 1x1 out conv); conv90..conv92 = the
    output head (3x3 64->32, bilinear x2, 3x3 32->32 + ReLU, 1x1 32->1 + ReLU).

    Faithful: block structure, channels, kernel sizes, strides, depthwise convs, ReLU6, BN in
    the encoder and none in the decoder, align_corners bilinear upsampling. Simplified: random
    weights; the input is 192x256 (the table's) instead of MiDaS small's usual 256x256.
    `max_repeats` caps the blocks per stage (a smaller test model with every layer kind).
    """
    net = Net("xr_de_midas_v21_small", seed, calibrate_bn=False)
    x = net.input("image", (1, 3, height, width))
    x = _conv(net, x, 32, 3, stride=2, act="relu6")
    # (out channels, kernel, first stride, repeats); expansion 6 except the first stage.
    stages = [(24, 3, 1, 1), (32, 3, 2, 3), (48, 5, 2, 3), (96, 3, 2, 5), (136, 5, 1, 5),
              (232, 5, 2, 6), (384, 3, 1, 1)]
    taps = []
    for index, (cout, k, stride, repeats) in enumerate(stages):
        for r in range(min(repeats, max_repeats or repeats)):
            # MBConv (expansion 6, ReLU6, no squeeze-excite in the Lite variant).
            x = L.inverted_residual(net, x, cout, 1 if index == 0 else 6, k,
                                    stride if r == 0 else 1, "relu6")
        if index in (1, 2, 4, 6):
            taps.append(x)
    layers = [_conv(net, tap, c, 3, bn=False, bias=False, act=None)
              for tap, c in zip(taps, (64, 128, 256, 512))]
    path = _fusion_block(net, layers[3], None, 256)
    path = _fusion_block(net, path, layers[2], 128)
    path = _fusion_block(net, path, layers[1], 64)
    path = _fusion_block(net, path, layers[0], 64)
    y = _conv(net, path, 32, 3, bn=False, bias=True, act=None)
    _, _, h, w = net.shape(y)
    y = L.upsample(net, y, (2 * h, 2 * w), mode="linear", coordinates="align_corners")
    y = _conv(net, y, 32, 3, bn=False, bias=True, act="relu")
    y = _conv(net, y, 1, 1, bn=False, bias=True, act="relu")
    net.output(y, "depth")
    return net.model()


# -- PD: PlaneRCNN, quarter resolution (ResNet-101-FPN + RPN + plane/mask/depth heads) --------

def _bottleneck(net: Net, x: str, mid: int, stride: int) -> str:
    """ResNet bottleneck, 4x expansion, stride on the 3x3 conv (the table's conv13 runs at the
    stage input's size and conv14 at half of it)."""
    cout = 4 * mid
    y = _conv(net, x, mid, 1)
    y = _conv(net, y, mid, 3, stride=stride)
    y = _conv(net, y, cout, 1, act=None, bn_scale=0.3)
    if stride != 1 or net.shape(x)[1] != cout:
        x = _conv(net, x, cout, 1, stride=stride, act=None, bn_scale=0.3)
    return L.relu(net, L.add(net, y, x))


def _fixed_rois(net: Net, feature: str, boxes: Sequence[tuple[int, int, int]],
                pool: int) -> str:
    """Fixed-box stand-in for RoIAlign: crop each (top, left, size) box and average-pool it to
    pool x pool (size must be a multiple of pool), then stack the RoIs along the batch axis."""
    rois = []
    for top, left, size in boxes:
        roi = _crop(net, feature, top, left, size)
        if size != pool:
            roi = L.avg_pool(net, roi, size // pool, size // pool)
        rois.append(roi)
    return L.concat(net, rois, 0)


def pd_plane_rcnn_quarter(seed: int = 0, size: int = 160,
                          blocks: Sequence[int] = (3, 4, 23, 3)) -> onnx.ModelProto:
    """PD_Plane_RCNN_Quarter: PlaneRCNN's detection network at quarter resolution.

    Input `image` [1, 3, 160, 160]. Outputs: `rpn_logits` [1, 6402, 2] and `rpn_deltas`
    [1, 6402, 4] (the shared RPN head on FPN levels P2..P6, 40x40 down to 3x3, 3 anchors per
    location, concatenated), `class_probs` [8, 8], `box_deltas` [8, 32], `plane_params`
    [8, 24] (per-class normal times offset), `masks` [8, 8, 8, 8] and `depth` [1, 1, 160, 160].

    Layer table (153 convs) -> graph: conv1 = 7x7/2 stem (+3x3/2 max pool); conv2..conv104 =
    ResNet-101's bottlenecks [3, 4, 23, 3] (stride on the 3x3, projection shortcuts
    conv5/15/28/98); conv105..conv112 = FPN (1x1 laterals to 256, nearest x2 top-down adds,
    3x3 output convs; P6 = 1x1/2 max pool of P5); conv113..conv123 = PlaneRCNN's depth decoder
    (from P6 to P2: a 3x3 256->128 conv-BN-ReLU per level, concatenated with the path; the
    path upsampled (nearest) to the next level's size, or 2x P2's, then 3x3 conv-BN-ReLU to
    128, the last to 64; 3x3 64->1; bilinear to the input size); conv125..conv127 = the RPN
    head (3x3 256->512, 1x1 to 3x2 logits and 3x4 deltas); conv128..conv129 + fc1..fc3 = the
    box head (a 4x4 "fc" conv to 1024, 1x1 1024, then class logits (8), box deltas (8x4) and
    plane parameters (8x3)); conv130..conv135 = the mask head (four 3x3 256 convs, 2x2/2
    deconv, 1x1 to 8 classes).

    Faithful: ResNet-101-FPN with its strides and BN, shared RPN over five levels, the three
    heads and their channel counts. Simplified: (1) RoIAlign is replaced by 8 fixed boxes cropped
    from P3 (Slice) and average-pooled to 4x4 (the table's RoI size); proposals, NMS and box
    decoding are left out; (2) the table's coordinate conv (conv124) and its 64 extra channels
    into the box head (conv128's C=320), and the refinement network (conv136..conv150), are
    left out; (3) the depth decoder's nearest upsampling goes to each FPN level's size.
    `size` (a multiple of 32, at least 96) and `blocks` (bottlenecks per stage) make smaller
    test models with every layer kind.
    """
    net = Net("xr_pd_plane_rcnn_quarter", seed, calibrate_bn=False)
    x = net.input("image", (1, 3, size, size))
    x = _conv(net, x, 64, 7, stride=2)
    x = L.max_pool(net, x, 3, 2, pad=1)
    feats = []
    for mid, count, stride in zip((64, 128, 256, 512), blocks, (1, 2, 2, 2)):
        for b in range(count):
            x = _bottleneck(net, x, mid, stride if b == 0 else 1)
        feats.append(x)
    # FPN: top-down pathway with nearest upsampling.
    laterals = [_conv(net, f, 256, 1, bn=False, bias=True, act=None) for f in feats]
    top = laterals[3]
    merged = [top]
    for lateral in reversed(laterals[:3]):
        top = L.add(net, lateral, L.upsample(net, top, net.shape(lateral)[2:]))
        merged.insert(0, top)
    pyramid = [_conv(net, m, 256, 3, bn=False, bias=True, act=None) for m in merged]
    pyramid.append(L.max_pool(net, pyramid[3], 1, 2))  # P6
    # RPN, shared over the levels; anchors of every level concatenated.
    logits, deltas = _rpn_heads(net, pyramid)
    net.output(logits, "rpn_logits")
    net.output(deltas, "rpn_deltas")
    # Box / plane head on fixed RoIs from P3 (20x20), pooled to 4x4.
    p3 = net.shape(pyramid[1])[2]
    boxes = [(0, 0, 8), (0, p3 - 8, 8), (p3 - 8, 0, 8), (p3 - 8, p3 - 8, 8),
             (p3 // 2 - 4, p3 // 2 - 4, 8), (2, p3 // 2 - 4, 4), (p3 - 6, 4, 4), (8, p3 - 6, 4)]
    rois = _fixed_rois(net, pyramid[1], boxes, 4)
    h = _conv(net, rois, 1024, 4, pad=0)
    h = _conv(net, h, 1024, 1)
    h = L.reshape(net, h, (len(boxes), 1024))
    net.output(L.softmax(net, L.linear(net, h, 8)), "class_probs")
    net.output(L.linear(net, h, 32), "box_deltas")
    net.output(L.linear(net, h, 24), "plane_params")
    # Mask head.
    m = rois
    for _ in range(4):
        m = _conv(net, m, 256, 3)
    m = L.relu(net, L.conv_transpose(net, m, 256, 2, 2, bias=True))
    m = _conv(net, m, 8, 1, bn=False, bias=True, act="sigmoid")
    net.output(m, "masks")
    # Depth decoder: from P6 up, concat each level's conv with the path, upsample, conv.
    d = None
    for index, level in enumerate(reversed(pyramid)):
        y = _conv(net, level, 128, 3)
        d = y if d is None else L.concat(net, [y, d], 1)
        _, _, h2, w2 = net.shape(d)
        target = net.shape(pyramid[3 - index])[2:] if index < 4 else (2 * h2, 2 * w2)
        d = _conv(net, L.upsample(net, d, target), 64 if index == 4 else 128, 3)
    d = _conv(net, d, 1, 3, bn=False, bias=True, act=None)
    d = L.upsample(net, d, (size, size), mode="linear")
    net.output(d, "depth")
    return net.model()


def _rpn_heads(net: Net, levels: Sequence[str], anchors: int = 3) -> tuple[str, str]:
    """Mask R-CNN's RPN: one 3x3 conv (512) + 1x1 logit and delta convs whose weights every
    level shares; per-anchor outputs reshaped to [1, anchors*h*w, 2 or 4] and concatenated."""
    c = net.shape(levels[0])[1]
    w_hidden = net.he_weight((512, c, 3, 3), c * 9)
    b_hidden = net.small_bias(512)
    w_logit = net.he_weight((anchors * 2, 512, 1, 1), 512, gain=1.0)
    w_delta = net.he_weight((anchors * 4, 512, 1, 1), 512, gain=1.0)
    logits, deltas = [], []
    for level in levels:
        n, _, h, w = net.shape(level)
        hidden = net.op("Conv", [level, w_hidden, b_hidden], (n, 512, h, w),
                        kernel_shape=[3, 3], pads=[1, 1, 1, 1])
        hidden = L.relu(net, hidden)
        for weight, width, out in ((w_logit, 2, logits), (w_delta, 4, deltas)):
            y = net.op("Conv", [hidden, weight], (n, anchors * width, h, w), kernel_shape=[1, 1])
            y = L.transpose(net, y, (0, 2, 3, 1))
            out.append(L.reshape(net, y, (n, h * w * anchors, width)))
    return L.concat(net, logits, 1), L.concat(net, deltas, 1)


# -- OD: D2Go Faster R-CNN with an FBNetV3 backbone (C4 layout) --------------------------------

# (out channels, kernel, first stride, expansion, repeats, squeeze-excite width, activation)
_FBNET_TRUNK = [
    (16, 3, 1, 1, 2, 0, "relu"),
    (24, 5, 2, 4, 1, 0, "relu"), (24, 5, 1, 3, 3, 0, "relu"),
    (32, 5, 2, 4, 1, 24, "hard_swish"), (32, 3, 1, 3, 3, 24, "hard_swish"),
    (64, 5, 2, 4, 1, 0, "hard_swish"), (64, 3, 1, 3, 3, 0, "hard_swish"),
    (112, 5, 1, 4, 1, 64, "hard_swish"), (112, 5, 1, 3, 10, 88, "hard_swish"),
]
_FBNET_ROI_HEAD = [
    (184, 5, 2, 4, 1, 112, "hard_swish"), (184, 3, 1, 4, 4, 184, "hard_swish"),
    (200, 5, 1, 6, 1, 280, "hard_swish"),
]


def _fbnet_stages(net: Net, x: str, stages) -> str:
    for cout, k, stride, expand, repeats, se, act in stages:
        for r in range(repeats):
            x = L.inverted_residual(net, x, cout, expand, k, stride if r == 0 else 1, act, se)
    return x


def od_d2go_faster_rcnn(seed: int = 0, height: int = 224, width: int = 299) -> onnx.ModelProto:
    """OD_D2go_FasterRCNN: D2Go's Faster R-CNN with an FBNetV3 backbone (C4 layout), no NMS.

    Input `image` [1, 3, 224, 299]. Outputs: `rpn_objectness` [1, 15, 14, 19] and
    `rpn_deltas` [1, 60, 14, 19] (15 anchors per location, stride 16), `class_probs` [8, 81]
    (softmax over 80 COCO classes + background) and `box_deltas` [8, 320] for 8 RoIs.

    Layer table (138 convs) -> graph: conv1 = 3x3/2 3->16 stem; conv2..conv104 = the FBNetV3
    trunk up to stride 16 (depthwise-separable 16 x2; MBConv stages 24 (k5, e4 then e3 x3),
    32 (k5/k3 with squeeze-excite 24), 64 (k5/k3), 112 (k5, e4 then e3 x10, squeeze-excite
    88); the table's K = C kxk layers are the depthwise convs, its 1x1-input layers the SE
    convs); conv105/conv106 = the RPN's 1x1 objectness and delta convs on the stride-16 map;
    conv107..conv136 = the C4 box head, FBNetV3's last stage run on each RoI (6x6 ->
    k5/2 MBConv to 184, 4 x 184 with SE, 200 with SE 280); fc1/fc2 = class logits (81) and
    box deltas (80x4) after global average pooling.

    Faithful: FBNet MBConv blocks with depthwise convs, strides (the input's 224x299 gives the
    table's 112x150, 56x75, 28x38 and 14x19 maps), SE with h-sigmoid, h-swish, BN, RPN and box
    head shapes. Simplified: RoIAlign is replaced by 8 fixed boxes cropped from the stride-16
    map (Slice) and average-pooled to 6x6 (12x12 boxes by 2x2 pooling, 6x6 boxes as they
    are); no proposal generation, box decoding or NMS.
    """
    net = Net("xr_od_d2go_faster_rcnn", seed, calibrate_bn=False)
    x = net.input("image", (1, 3, height, width))
    x = _conv(net, x, 16, 3, stride=2, act="hard_swish")
    x = _fbnet_stages(net, x, _FBNET_TRUNK)
    net.output(_conv(net, x, 15, 1, bn=False, bias=True, act=None), "rpn_objectness")
    net.output(_conv(net, x, 60, 1, bn=False, bias=True, act=None), "rpn_deltas")
    _, _, h, w = net.shape(x)
    boxes = [(0, 0, 12), (0, w - 12, 12), (h - 12, 3, 12), (1, 4, 12),
             (0, 0, 6), (h - 6, w - 6, 6), (4, 6, 6), (8, 1, 6)]
    rois = _fixed_rois(net, x, boxes, 6)
    y = _fbnet_stages(net, rois, _FBNET_ROI_HEAD)
    y = L.reshape(net, L.global_avg_pool(net, y), (len(boxes), net.shape(y)[1]))
    # Random weights leave the pooled RoI features small (about 0.1) and mostly a constant
    # offset (the batch norms' shifts): larger head weights give logits and deltas of O(1)
    # that depend on the image, where unit gain gives an almost uniform softmax.
    net.output(L.softmax(net, L.linear(net, y, 81, gain=64.0)), "class_probs")
    net.output(L.linear(net, y, 320, gain=16.0), "box_deltas")
    return net.model()


# -- SS: HRViT-b1 (multi-branch high-resolution vision transformer) ---------------------------

def _cross_window_attention(net: Net, qk: str, v: str, heads: int, stripe: int,
                            vertical: bool) -> str:
    """Attention inside horizontal (or vertical) stripes of `stripe` rows (columns), with
    queries and keys shared (HRViT's efficient attention). qk, v: [1, H, W, C] -> [1, H, W, C]."""
    _, h, w, c = net.shape(qk)
    d = c // heads
    if vertical:
        windows, tokens = w // stripe, h * stripe
        into = ((h, w // stripe, stripe, heads, d), (1, 3, 0, 2, 4))
        back = ((windows, heads, h, stripe, d), (2, 0, 3, 1, 4))
    else:
        windows, tokens = h // stripe, stripe * w
        into = ((h // stripe, stripe, w, heads, d), (0, 3, 1, 2, 4))
        back = ((windows, heads, stripe, w, d), (0, 2, 3, 1, 4))

    def to_windows(x: str) -> str:
        x = L.transpose(net, L.reshape(net, x, into[0]), into[1])
        return L.reshape(net, x, (windows, heads, tokens, d))

    q, val = to_windows(qk), to_windows(v)
    keys = L.transpose(net, q, (0, 1, 3, 2))
    scores = L.mul(net, L.matmul(net, q, keys), net.const(np.float32(d ** -0.5), "scale"))
    out = L.matmul(net, L.softmax(net, scores), val)
    out = L.transpose(net, L.reshape(net, out, back[0]), back[1])
    return L.reshape(net, out, (1, h, w, c))


def _hrvit_block(net: Net, x: str, heads: int, stripe: int) -> str:
    """HRViT transformer block on an NCHW map: x + Attn(LN(x)), then x + MixCFN(LN(x)).

    Attn: one linear to shared query-key and value (C -> 2C); half of the heads attend in
    horizontal stripes, half in vertical stripes; a 3x3 depthwise conv of the value (local
    enhancement) is added; a linear projection. MixCFN: linear C -> 4C, 3x3 and 5x5 depthwise
    convs on the two halves, GELU, linear 4C -> C."""
    _, c, h, w = net.shape(x)
    tokens = L.transpose(net, x, (0, 2, 3, 1))  # [1, H, W, C]
    y = L.layer_norm(net, tokens)
    qk, v = L.split(net, L.linear(net, y, 2 * c), (c, c), 3)
    halves = []
    for index, (qk_half, v_half) in enumerate(zip(L.split(net, qk, (c // 2, c // 2), 3),
                                                  L.split(net, v, (c // 2, c // 2), 3))):
        halves.append(_cross_window_attention(net, qk_half, v_half, max(heads // 2, 1),
                                              stripe, vertical=index == 1))
    attn = L.concat(net, halves, 3)
    v_map = L.transpose(net, v, (0, 3, 1, 2))
    local = _conv(net, v_map, c, 3, groups=c, bn=False, bias=True, act=None)
    attn = L.add(net, attn, L.transpose(net, local, (0, 2, 3, 1)))
    tokens = L.add(net, tokens, L.linear(net, attn, c, gain=0.25))
    y = L.linear(net, L.layer_norm(net, tokens), 4 * c)
    y_map = L.transpose(net, y, (0, 3, 1, 2))
    a, b = L.split(net, y_map, (2 * c, 2 * c), 1)
    a = _conv(net, a, 2 * c, 3, groups=2 * c, bn=False, bias=True, act=None)
    b = _conv(net, b, 2 * c, 5, groups=2 * c, bn=False, bias=True, act=None)
    y = L.activation(net, L.concat(net, [a, b], 1), "gelu")
    y = L.linear(net, L.transpose(net, y, (0, 2, 3, 1)), c, gain=0.25)
    tokens = L.add(net, tokens, y)
    return L.transpose(net, tokens, (0, 3, 1, 2))


def _downsample(net: Net, x: str, factor: int, cout: int) -> str:
    """HRViT's cross-resolution path down: one depthwise conv of kernel 2f+1 (3, 5 or 9) and
    stride f, BN, then 1x1 conv + BN to the target width."""
    c = net.shape(x)[1]
    k = 2 * factor + 1 if factor < 4 else 9
    x = _conv(net, x, c, k, stride=factor, pad=k // 2, groups=c, act=None)
    return _conv(net, x, cout, 1, act=None, bn_scale=0.5)


def _fuse(net: Net, branches: list[str]) -> list[str]:
    """HRNet-style fusion: each output branch sums all inputs (1x1 conv + BN + nearest
    upsampling from lower resolutions, depthwise strided conv + 1x1 from higher), then ReLU."""
    fused = []
    for i, target in enumerate(branches):
        _, c, h, w = net.shape(target)
        total = target
        for j, source in enumerate(branches):
            if j > i:
                y = _conv(net, source, c, 1, act=None, bn_scale=0.5)
                y = L.upsample(net, y, (h, w))
            elif j < i:
                y = _downsample(net, source, 2 ** (i - j), c)
            else:
                continue
            total = L.add(net, total, y)
        fused.append(L.relu(net, total))
    return fused


# Blocks per branch in each HRViT-b1 module, as the layer table has them (35 blocks); a module
# with one branch more than the last starts with a transition to the new branch.
HRVIT_B1_MODULES = ((1,), (1, 1), (1, 1, 6), (1, 1, 6), (1, 1, 6, 2), (1, 1, 2, 2))


def ss_hrvit_b1(seed: int = 0, size: int = 224, classes: int = 19,
                modules: Sequence[Sequence[int]] = HRVIT_B1_MODULES) -> onnx.ModelProto:
    """SS_HRViT_b1: HRViT-b1-style semantic segmentation (four resolution branches).

    Input `image` [1, 3, 224, 224]; output `logits` [1, 19, 224, 224] (Cityscapes classes).

    Layer table (423 layers) -> graph: conv1/conv2 = the stem (3x3/2 3->32 and 3x3/2 32->64,
    BN, ReLU); conv3 = the 1x1 64->32 into branch 1 (56x56); each group fc(C->2C), conv (3x3
    depthwise), fc(C->C), fc, fc, fc(C->4C), conv 3x3 + conv 5x5 (depthwise, 2C each),
    fc(4C->C) is one HRViT block (shared query-key + value, local-enhancement depthwise conv,
    projection, MixCFN); the table's tiny fc layers (K = C = 4..16) are the per-head attention
    products, here MatMuls. Branches of 32/64/128/256 channels at 56/28/14/7 (heads 2/2/4/8,
    stripe widths 1/2/7/7), in six modules of 1/2/8/8/10/6 blocks (`HRVIT_B1_MODULES`, counted
    from the table). The conv groups between modules are the fusion layers (1x1 + nearest
    upsampling from lower resolutions, depthwise kxk/stride + 1x1 from higher ones: the
    table's 3x3, 5x5 and 9x9 K = C convs at 56x56) and the transitions (3x3/2 depthwise + 1x1
    to the new branch).

    Faithful: multi-branch layout, widths, resolutions, block counts, efficient cross-shaped
    attention with shared QK, MixCFN, HRNet fusion. Simplified: the table's extra 1x1 + 3x3
    convs per branch around each fusion are left out, and the table ends in an ImageNet
    classification head (incre modules, 2048 -> 1000 fc), replaced here by a segmentation head
    (bilinear upsampling of the four branches to 56x56, concat, 1x1 conv 480->128 + BN + ReLU,
    1x1 conv to the classes, bilinear x4 to the input size). Smaller `modules` (e.g.
    ((1,), (1, 1), (1, 1, 1), (1, 1, 1))) make smaller test models with most layer kinds.
    """
    net = Net("xr_ss_hrvit_b1", seed, calibrate_bn=False)
    x = net.input("image", (1, 3, size, size))
    x = _conv(net, x, 32, 3, stride=2)
    x = _conv(net, x, 64, 3, stride=2)
    widths, heads, stripes = (32, 64, 128, 256), (2, 2, 4, 8), (1, 2, 7, 7)
    branches = [_conv(net, x, widths[0], 1)]
    for index, blocks in enumerate(modules):
        if len(blocks) > len(branches):
            new = _downsample(net, branches[-1], 2, widths[len(branches)])
            branches.append(L.relu(net, new))
        for i, count in enumerate(blocks):
            for _ in range(count):
                branches[i] = _hrvit_block(net, branches[i], heads[i], stripes[i])
        if len(branches) > 1 and index < len(modules) - 1:
            branches = _fuse(net, branches)
    _, _, h, w = net.shape(branches[0])
    up = [branches[0]] + [L.upsample(net, b, (h, w), mode="linear") for b in branches[1:]]
    y = _conv(net, L.concat(net, up, 1), 128, 1)
    y = _conv(net, y, classes, 1, bn=False, bias=True, act=None)
    y = L.upsample(net, y, (size, size), mode="linear")
    net.output(y, "logits")
    return net.model()


MODELS: dict[str, tuple[Callable[[], onnx.ModelProto], str]] = {
    "xr-ss": (ss_hrvit_b1, "XRBench SS: HRViT-b1-style segmentation, 4 branches, 224x224"),
    "xr-od": (od_d2go_faster_rcnn, "XRBench OD: D2Go Faster R-CNN, FBNetV3 C4, fixed RoIs"),
    "xr-de": (de_midas_v21_small, "XRBench DE: MiDaS v2.1 small, EfficientNet-Lite3, 192x256"),
    "xr-dr": (dr_rgbd_200, "XRBench DR: sparse-to-dense RGBd-200, ResNet-18 + UpProj"),
    "xr-pd": (pd_plane_rcnn_quarter, "XRBench PD: PlaneRCNN quarter, ResNet-101-FPN + heads"),
}


def _register() -> None:
    from ember.workloads.zoo import register

    for name, (builder, description) in MODELS.items():
        register(name, builder, description, kind="xr")


_register()
