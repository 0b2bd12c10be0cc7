"""XRBench unit models (part 1): hand tracking, eye segmentation, gaze estimation, keyword
detection, speech recognition and action segmentation, as ONNX models with seeded weights.

Each builder follows its named reference network at the sizes the XRBench layer tables imply
(`shared/specs/xrbench_scenarios.json`, `models[NAME]["layers"]`), with the strides, padding,
depthwise layers, pooling, normalization and activations the tables leave out. The tables
record strided layers at their input size, depthwise layers as dense convolutions and no
padding, so MAC counts here differ from the tables' (each docstring says how). Weights are
random (He-scaled, `workloads/layers.py`), so the models compute the right amount of the right
work, not meaningful answers.

Importing this module registers these six zoo models and, through `workloads/xr_dense.py`, the
other five XR models. `xr_models()` lists all eleven zoo names.
"""

from __future__ import annotations

import importlib

import numpy as np
import onnx

from ember.workloads import layers as L
from ember.workloads.layers import Net
from ember.workloads.zoo import register

# XRBench code name -> zoo name, in the order of the XRBench paper's task table.
XR_ZOO_NAMES: dict[str, str] = {
    "HT_hand_graph_cnn_half": "xr-ht",
    "ES_RITNet": "xr-es",
    "GE_FBNet_C": "xr-ge",
    "KD_res8_narrow": "xr-kd",
    "ASR_EM_24L": "xr-asr",
    "SS_HRViT_b1": "xr-ss",
    "OD_D2go_FasterRCNN": "xr-od",
    "AS_ED_TCN": "xr-as",
    "DE_midas_v21_small": "xr-de",
    "DR_RGBd_200": "xr-dr",
    "PD_Plane_RCNN_Quarter": "xr-pd",
}


def xr_models() -> list[str]:
    """Zoo names of all eleven XRBench unit models (this module's six and xr_dense's five)."""
    return list(XR_ZOO_NAMES.values())


# --- KD: keyword detection, res8-narrow -------------------------------------------------------

def build_kd_res8_narrow(seed: int = 0) -> onnx.ModelProto:
    """KD_res8_narrow: res8-narrow keyword spotting (Tang & Lin, ICASSP 2018).

    Input: 40 MFCCs over 98 frames, (1, 1, 98, 40); output: 12 keyword logits.
    Faithful: 3x3 convs with 19 channels and no bias, average pool (4, 3) after the first conv
    (98x40 -> 24x13, the table's conv2..7 input size), three residual pairs in res8's order
    (conv -> ReLU, shortcut every second conv, then BatchNormalization without affine), global
    average pool and a 19 -> 12 linear layer. Table map: conv1 = stem conv, conv2..conv7 = the
    six residual convs, fc1 = classifier. MACs: 6.76 M, the table's 5.35 M counted with 'same'
    padding (the table's own macs_if_output_equals_input).
    """
    net = Net("xr_kd_res8_narrow", seed)
    x = net.input("mfcc", (1, 1, 98, 40))
    y = L.relu(net, L.conv(net, x, 19, 3, bias=False))
    y = L.avg_pool(net, y, (4, 3))
    shortcut = x = y
    for index in range(1, 7):
        y = L.relu(net, L.conv(net, x, 19, 3, bias=False))
        if index % 2 == 0:
            x = shortcut = L.add(net, y, shortcut)
        else:
            x = y
        x = L.batch_norm(net, x, affine=False)
    pooled = L.reshape(net, L.global_avg_pool(net, x), (1, 19))
    net.output(L.linear(net, pooled, 12))
    return net.model()


# --- AS: action segmentation, ED-TCN ---------------------------------------------------------

def _normalized_relu(net: Net, x: str) -> str:
    """ED-TCN's normalized ReLU: relu(x) / (max over channels + 1e-5), per time step."""
    y = L.relu(net, x)
    batch, _, steps = net.shape(y)
    peak = net.op("ReduceMax", [y], (batch, 1, steps), axes=[1], keepdims=1)
    eps = net.const(np.array(1e-5, np.float32), "c")
    return net.op("Div", [y, L.add(net, peak, eps)], net.shape(y))


def build_as_ed_tcn(seed: int = 0, classes: int = 18) -> onnx.ModelProto:
    """AS_ED_TCN: encoder-decoder temporal convolutional network (Lea et al., CVPR 2017).

    Input: 128 features per frame over 644 frames, (1, 128, 644); output: per-frame class
    probabilities (1, classes, 644) (18 classes as 50 Salads' mid-level labels).
    Faithful: 1-D convs of width 25 with 'same' padding, normalized ReLU, max pool 2 in the
    encoder (64 then 96 filters), nearest upsampling x2 in the decoder (96 then 64 filters), and
    a per-frame linear classifier (1x1 conv) with softmax. Dropout is omitted (inference).
    Table map: the table records 'same' padding as input length: conv1 Y=668 = 644 + 24 on
    644 frames, conv2 Y=346 = 322 + 24 after the first pool, conv3 (decoder, 322 frames) and
    conv4 (decoder, 644 frames); the classifier is not in the table. MACs = the table's 354 M
    plus the classifier.
    """
    net = Net("xr_as_ed_tcn", seed)
    x = net.input("features", (1, 128, 644))
    for filters in (64, 96):
        x = _normalized_relu(net, L.conv(net, x, filters, 25))
        x = L.max_pool(net, x, 2)
    for filters, length in ((96, 322), (64, 644)):
        x = L.upsample(net, x, (length,))
        x = _normalized_relu(net, L.conv(net, x, filters, 25))
    # Normalized-ReLU features lie in [0, 1]: a larger classifier gain gives logits of O(1)
    # spread, so the softmax is neither uniform nor one-hot.
    logits = L.conv(net, x, classes, 1, gain=25.0)
    net.output(net.op("Softmax", [logits], net.shape(logits), axis=1))
    return net.model()


# --- GE: gaze estimation, FBNet-C ------------------------------------------------------------

# FBNet-C's searched blocks: (out channels, expansion, kernel, stride) per stage.
FBNET_C_STAGES: tuple[tuple[tuple[int, int, int, int], ...], ...] = (
    ((16, 1, 3, 1),),
    ((24, 6, 3, 2), (24, 1, 3, 1), (24, 1, 3, 1)),
    ((32, 6, 5, 2), (32, 3, 5, 1), (32, 6, 5, 1), (32, 6, 3, 1)),
    ((64, 6, 5, 2), (64, 3, 5, 1), (64, 6, 5, 1), (64, 6, 5, 1)),
    ((112, 6, 5, 1), (112, 6, 5, 1), (112, 6, 5, 1), (112, 3, 5, 1)),
    ((184, 6, 5, 2), (184, 6, 5, 1), (184, 6, 5, 1), (184, 6, 5, 1)),
    ((352, 6, 3, 1),),
)


def build_ge_fbnet_c(seed: int = 0, classes: int = 1000) -> onnx.ModelProto:
    """GE_FBNet_C: FBNet-C (Wu et al., CVPR 2019) on a 160x100 eye/face crop.

    Input (1, 3, 160, 100); output: (1, 1000) logits (the table's final 1000-way layer).
    Faithful: 3x3 stride-2 stem (16), then FBNet-C's 22 inverted-residual blocks (1x1
    expansion with BN+ReLU, depthwise kxk with stride, linear 1x1 projection, identity shortcut
    when the shape is kept), a 1x1 conv to 1984, global average pool and a linear classifier.
    Simplified: FBNet's 'skip' block is absent (as in the table) and the grouped 1x1 convs of
    its g2 blocks are dense. Table map: conv1 = stem; each block is its 1x1 expansion (absent
    when the expansion is 1), its depthwise conv (the table's K = C dense kxk, recorded at the
    block's input size before the stride) and its projection: conv2-3, 4-10, 11-22, 23-34,
    35-46, 47-58, 59-61; conv62 = 1x1 to 1984, conv63 = classifier. The table counts the
    depthwise convs densely at stride 1 (2.25 G MACs); this model has 140 M.
    """
    net = Net("xr_ge_fbnet_c", seed)
    x = net.input("image", (1, 3, 160, 100))
    x = L.conv_bn_act(net, x, 16, 3, stride=2)
    for stage in FBNET_C_STAGES:
        for out_channels, expand, kernel, stride in stage:
            x = L.inverted_residual(net, x, out_channels, expand, kernel, stride)
    x = L.conv_bn_act(net, x, 1984, 1)
    pooled = L.reshape(net, L.global_avg_pool(net, x), (1, 1984))
    net.output(L.linear(net, pooled, classes))
    return net.model()


# --- ES: eye segmentation, RITNet ------------------------------------------------------------

def _ritnet_down(net: Net, x: str, channels: int, pool: bool) -> str:
    """RITNet's dense down block: [avg pool 2], conv3x3, dense 1x1+3x3 twice, BN."""
    if pool:
        x = L.avg_pool(net, x, 2, ceil=True)
    x1 = L.activation(net, L.conv(net, x, channels, 3), "leaky_relu")
    x21 = L.concat(net, [x, x1])
    x22 = L.activation(net, L.conv(net, L.conv(net, x21, channels, 1), channels, 3),
                       "leaky_relu")
    x31 = L.concat(net, [x21, x22])
    out = L.activation(net, L.conv(net, L.conv(net, x31, channels, 1), channels, 3),
                       "leaky_relu")
    return L.batch_norm(net, out)


def _ritnet_up(net: Net, skip: str, x: str, channels: int) -> str:
    """RITNet's up block: nearest upsample to the skip's size, concat, dense 1x1+3x3 twice."""
    x = L.upsample(net, x, net.shape(skip)[2:])
    x = L.concat(net, [x, skip])
    x1 = L.activation(net, L.conv(net, L.conv(net, x, channels, 1), channels, 3), "leaky_relu")
    x21 = L.concat(net, [x, x1])
    return L.activation(net, L.conv(net, L.conv(net, x21, channels, 1), channels, 3),
                        "leaky_relu")


def build_es_ritnet(seed: int = 0, classes: int = 4) -> onnx.ModelProto:
    """ES_RITNet: RITNet eye segmentation (Chaudhary et al., ICCVW 2019) at 160x100.

    Input: a grayscale eye image (1, 1, 160, 100); output: per-pixel logits for 4 classes
    (background, sclera, iris, pupil), (1, 4, 160, 100).
    Faithful: 32 channels throughout; five dense down blocks (2x2 average pool before blocks
    2-5, then conv3x3 / 1x1 / 3x3 / 1x1 / 3x3 with dense concatenations, LeakyReLU, and
    BatchNormalization at the block's end), four up blocks (nearest upsample, concat with the
    skip, 1x1 / 3x3 / 1x1 / 3x3 with a dense concatenation), and a 1x1 output conv.
    Adapted: RITNet runs on 640x400; the table's first block is at 160x100 with 32 input
    channels, so this model takes a 160x100 image with one channel. Odd sizes (25 -> 13 -> 7)
    pool with ceil_mode as the table's sizes imply, and the decoder upsamples to each skip's
    exact size. Dropout is omitted. Table map: conv1-25 = down blocks (the table writes the
    dense 1x1 convs' inputs as 32 channels), conv26-41 = up blocks, conv42 = output conv
    (4 classes here, 32 in the table). MACs are close to the table's 1.04 G.
    """
    net = Net("xr_es_ritnet", seed)
    x = net.input("image", (1, 1, 160, 100))
    skips = []
    for index in range(5):
        x = _ritnet_down(net, x, 32, pool=index > 0)
        skips.append(x)
    for skip in reversed(skips[:-1]):
        x = _ritnet_up(net, skip, x, 32)
    net.output(L.conv(net, x, classes, 1))
    return net.model()


# --- HT: hand tracking, hand graph CNN (half) ------------------------------------------------

HT_PLANES = 128          # bottleneck width; blocks output 2 * HT_PLANES = 256 channels
HT_JOINTS = 21           # heatmaps
HT_MESH_LEVELS = (80, 160, 320, 640, 1280)   # vertices per graph level, coarse to fine


def _ht_residuals(net: Net, x: str, count: int = 2) -> str:
    for _ in range(count):
        x = L.preact_bottleneck(net, x, HT_PLANES)
    return x


def _ht_hourglass(net: Net, x: str, depth: int) -> str:
    """Newell's hourglass: skip branch at this size, pool, recurse, upsample, add."""
    up1 = _ht_residuals(net, x)
    low = _ht_residuals(net, L.max_pool(net, x, 2))
    low = _ht_hourglass(net, low, depth - 1) if depth > 1 else _ht_residuals(net, low)
    low = _ht_residuals(net, low)
    return L.add(net, up1, L.upsample(net, low, net.shape(x)[2:]))


def _ring_neighbours(vertices: int) -> np.ndarray:
    """Neighbour indices (V, 4) of a synthetic mesh graph: a ring with offsets +-1, +-2."""
    index = np.arange(vertices)
    return np.stack([(index + offset) % vertices for offset in (-2, -1, 1, 2)], axis=1)


def _cheb_conv(net: Net, x: str, out_features: int, act: bool = True) -> str:
    """Chebyshev graph convolution of order K = 3 on (V, F) vertex features.

    The rescaled Laplacian of the mesh is -D^-1/2 A D^-1/2 (eigenvalues in [-1, 1]), applied
    sparsely as a gather of each vertex's 4 neighbours and a scaled sum: T1 = L x,
    T2 = 2 L T1 - x, out = [x, T1, T2] @ W + b (the table's C = 3 * in_features).
    """
    vertices, features = net.shape(x)
    neighbours = net.const(_ring_neighbours(vertices).astype(np.int64), "nbr")
    axes = net.const(np.array([1], np.int64), "axes")

    def laplacian(value: str, factor: float) -> str:
        gathered = net.op("Gather", [value, neighbours], (vertices, 4, features), axis=0)
        summed = net.op("ReduceSum", [gathered, axes], (vertices, features), keepdims=0)
        coefficient = net.const(np.array(-factor / 4.0, np.float32), "c")
        return net.op("Mul", [summed, coefficient], (vertices, features))

    t1 = laplacian(x, 1.0)
    t2 = net.op("Sub", [laplacian(t1, 2.0), x], (vertices, features))
    stacked = L.concat(net, [x, t1, t2], axis=1)
    y = L.linear(net, stacked, out_features, gain=2.0 if act else 1.0)
    return L.relu(net, y) if act else y


def _graph_upsample(net: Net, x: str) -> str:
    """Double the vertex count: each fine vertex copies its coarse parent (index // 2)."""
    vertices, features = net.shape(x)
    parents = net.const(np.arange(2 * vertices, dtype=np.int64) // 2, "parents")
    return net.op("Gather", [x, parents], (2 * vertices, features), axis=0)


def _graph_pool(net: Net, x: str, factor: int = 2) -> str:
    """Average each group of `factor` consecutive vertices (the coarsening's inverse)."""
    vertices, features = net.shape(x)
    grouped = L.reshape(net, x, (vertices // factor, factor, features))
    axes = net.const(np.array([1], np.int64), "axes")
    total = net.op("ReduceSum", [grouped, axes], (vertices // factor, features), keepdims=0)
    return net.op("Mul", [total, net.const(np.array(1.0 / factor, np.float32), "c")],
                  net.shape(total))


def build_ht_hand_graph_cnn_half(seed: int = 0, pose_outputs: int = 20, stacks: int = 2,
                                 depth: int = 4) -> onnx.ModelProto:
    """HT_hand_graph_cnn_half: hand shape and pose from an RGB image (Ge et al., CVPR 2019).

    Input (1, 3, 128, 128); outputs: the second stack's 21 joint heatmaps (1, 21, 32, 32), the
    mesh (1280, 3) and the pose vector (1, 20) (the table's fc12).
    Faithful: the two-stack hourglass network (Newell et al.) as in pytorch-pose: 7x7 stride-2
    stem, pre-activation bottlenecks (BN-ReLU-conv, 128 wide, 256 out, 1x1 projection when
    widening), max pool, two hourglasses of depth 4 with two bottlenecks per residual module,
    nearest upsampling and additive skips, per stack a 1x1 conv-BN-ReLU, a 21-heatmap score
    conv and the 1x1 re-injections (features + heatmaps) into the next stack; then a residual
    encoder (two bottlenecks at 32, 16, 8 and 4 px, max pool between) to 256x4x4 = 4096, fc
    512 and fc 5120 = 80 vertices x 64 features, and a Chebyshev graph CNN (K = 3) that
    upsamples the mesh 80 -> 160 -> 320 -> 640 -> 1280 vertices down to xyz per vertex.
    Simplified: the mesh graph is synthetic (a ring, 4 neighbours per vertex; Ge et al. use
    the MANO-like hand mesh and its coarsenings); the pose regressor is a second graph CNN that
    pools the mesh back to 80 vertices and two fully connected layers (fc7-fc12 in the table;
    their exact roles are not documented). Table map: conv1 = stem; conv2-5, conv6-8, conv9-12
    = the three stem bottlenecks (the 4th conv is the projection); conv13-96 and conv101-184 =
    the hourglasses and their post-hourglass residuals (3 convs per bottleneck, in the order
    up1, low1, ..., low3 of each level); conv97-100 and conv185-188 = the per-stack 1x1 convs;
    conv189-212 = the encoder; fc1-fc2 = the encoder's linear layers; fc3-fc6 = the mesh
    graph convs (C = 3 x in features); fc7-fc10 = pose graph convs; fc11-fc12 = pose head.
    MACs: 4.06 G against the table's 3.73 G (the table counts its 212 convs unpadded, this
    model pads them; the fully connected and graph layers add 14 M). `stacks` and `depth`
    (hourglass levels) shrink the model for quick tests; the zoo model uses the table's 2, 4.
    """
    net = Net("xr_ht_hand_graph_cnn_half", seed)
    x = net.input("image", (1, 3, 128, 128))
    x = L.conv_bn_act(net, x, 64, 7, stride=2)
    x = L.preact_bottleneck(net, x, 64)
    x = L.max_pool(net, x, 2)
    x = L.preact_bottleneck(net, x, 64)
    x = L.preact_bottleneck(net, x, HT_PLANES)
    features = 2 * HT_PLANES
    for _stack in range(stacks):
        y = _ht_hourglass(net, x, depth)
        y = _ht_residuals(net, y)
        y = L.conv_bn_act(net, y, features, 1)
        heatmaps = L.conv(net, y, HT_JOINTS, 1, gain=1.0)
        features_back = L.conv(net, y, features, 1, gain=0.5)
        back = L.add(net, features_back, L.conv(net, heatmaps, features, 1, gain=0.5))
        x = L.add(net, x, back)
    net.output(heatmaps)

    for level in range(4):
        if level > 0:
            x = L.max_pool(net, x, 2)
        x = _ht_residuals(net, x)
    coarse = HT_MESH_LEVELS[0]
    x = L.reshape(net, x, (1, features * 4 * 4))
    x = L.relu(net, L.linear(net, x, 512, gain=2.0))
    x = L.relu(net, L.linear(net, x, coarse * 64, gain=2.0))
    mesh = L.reshape(net, x, (coarse, 64))
    for out_features in (64, 32, 32, 3):
        mesh = _cheb_conv(net, _graph_upsample(net, mesh), out_features, act=out_features != 3)
    net.output(mesh)

    pose = mesh
    for out_features in (32, 32, 64, 64):
        pose = _cheb_conv(net, _graph_pool(net, pose), out_features)
    pose = L.reshape(net, _graph_pool(net, pose, factor=10), (1, 512))
    pose = L.relu(net, L.linear(net, pose, 512, gain=2.0))
    net.output(L.linear(net, pose, pose_outputs))
    return net.model()


# --- ASR: speech recognition, Emformer-style encoder -----------------------------------------

def emformer_mask(frames: int, segment: int, left_context: int, right_context: int
                  ) -> np.ndarray:
    """Additive (frames, frames) attention mask of Emformer's block processing: a frame of
    segment s sees the frames of s, `left_context` frames before s and `right_context` frames
    of look-ahead after it; everything else gets -1e4 (exp underflows to exactly 0)."""
    query_segment = np.arange(frames) // segment
    start = query_segment * segment - left_context
    stop = (query_segment + 1) * segment + right_context
    key = np.arange(frames)
    visible = (key[None, :] >= start[:, None]) & (key[None, :] < stop[:, None])
    return np.where(visible, 0.0, -1e4).astype(np.float32)


def build_asr_emformer(seed: int = 0, layers: int = 24, frames: int = 128, dim: int = 512,
                       heads: int = 8, hidden: int = 2048, segment: int = 32,
                       left_context: int = 32, right_context: int = 8) -> onnx.ModelProto:
    """ASR_EM_24L: an Emformer-style streaming transformer encoder (Shi et al., ICASSP 2021).

    Input: 128 frames of 512-d acoustic features after the front end, (1, 128, 512); output:
    the encoded frames (1, 128, 512).
    Faithful: 24 pre-norm layers of d=512, 8 heads, FFN 2048 with ReLU, LayerNormalization;
    attention written with MatMul / Softmax; query, key-value (one 512 -> 1024 projection, as
    torchaudio's Emformer) and output projections. Emformer's block processing is expressed
    as a constant attention mask over the whole utterance: fixed 32-frame segments, each seeing
    32 frames of left context and 8 of right-context look-ahead.
    Simplified: the memory bank (segment summary vectors) and the per-chunk caching of a
    streaming run are omitted: the whole utterance is one call. The convolutional front end
    and output head are not in the table and are omitted. Table map: per layer fc1 = query,
    fc2 = key-value, fc3 = attention output, fc4 / fc5 = FFN; 5 x 24 = 120 layers, 9.66 G
    MACs, plus 0.4 G in the attention matmuls themselves.
    """
    net = Net("xr_asr_emformer", seed)
    x = net.input("features", (1, frames, dim))
    mask = net.const(emformer_mask(frames, segment, left_context, right_context), "mask")
    for _ in range(layers):
        x = L.transformer_block(net, x, heads, hidden, mask)
    net.output(L.layer_norm(net, x))
    return net.model()


# --- registration ----------------------------------------------------------------------------

register("xr-ht", build_ht_hand_graph_cnn_half,
         "XRBench HT: hand graph CNN (2-stack hourglass + mesh graph CNN), 128x128 RGB",
         kind="xr")
register("xr-es", build_es_ritnet, "XRBench ES: RITNet eye segmentation, 160x100 gray",
         kind="xr")
register("xr-ge", build_ge_fbnet_c, "XRBench GE: FBNet-C gaze estimation, 160x100 RGB",
         kind="xr")
register("xr-kd", build_kd_res8_narrow, "XRBench KD: res8-narrow keyword spotting, 98x40 MFCC",
         kind="xr")
register("xr-asr", build_asr_emformer,
         "XRBench ASR: Emformer-style 24-layer encoder, 128 frames x 512", kind="xr")
register("xr-as", build_as_ed_tcn, "XRBench AS: ED-TCN action segmentation, 644 frames x 128",
         kind="xr")


def _import_dense_models() -> None:
    """Register the other five XR models (workloads/xr_dense.py), when that module exists."""
    module = "ember.workloads.xr_dense"
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as error:
        if error.name != module:
            raise


_import_dense_models()
