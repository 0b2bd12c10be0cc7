"""Converters for ONNX's signal ops: DFT, STFT, the Hann/Hamming/Blackman windows and
MelWeightMatrix.

ember has no FFT: a discrete Fourier transform of static length is a matrix product with a
constant matrix of cosines and sines, which is what these converters emit (for the short
transforms of audio front ends this is as fast as an FFT and fuses nothing away). ONNX holds
complex numbers as a trailing axis of 2 (real, imaginary) or 1 (real only); the converters
fold that axis into the contraction, so one DFT is one transpose, one matmul and one
transpose back. Windows and mel filter banks depend only on their (constant) sizes, so they
become constants; sizes computed from graph inputs specialize the module at run time.
"""

from __future__ import annotations

import math

import numpy as np

from ember.compiler.frontend.onnx.context import ConvertContext
from ember.compiler.frontend.onnx.quantize import onnx_dtype
from ember.compiler.frontend.onnx.registry import converter
from ember.compiler.frontend.onnx.tensor import emit_reshape
from ember.ir.graph import numpy_dtype
from ember.ir.ops.elementwise import FLOATS

# ----------------------------------------------------------------------------- DFT


def dft_matrix(length: int, parts: int, size: int, inverse: bool, onesided: bool,
               ) -> tuple[np.ndarray, int]:
    """The (length * parts, bins * parts_out) float64 matrix M with y = x @ M, where x holds
    `length` samples of `parts` values each (1: real, 2: real and imaginary, interleaved)
    and `size` is the transform length: samples past `size` are dropped and missing ones
    count as zeros. Returns M and parts_out (1 for an inverse one-sided transform, whose
    output is real; else 2).

    Forward: X[k] = sum_n x[n] exp(-2 pi i k n / size), for k < size (size // 2 + 1 when
    `onesided`). Inverse: x[n] = sum_k X[k] exp(+2 pi i k n / size) / size; one-sided, the
    input holds the first size // 2 + 1 frequencies of a Hermitian spectrum and each of the
    others counts twice (its mirror image), imaginary parts of DC and Nyquist dropping out.
    """
    used = min(length, size)
    if inverse and onesided:
        used = min(length, size // 2 + 1)
        bins, parts_out = size, 1
    else:
        bins = size // 2 + 1 if onesided and not inverse else size
        parts_out = 2
    n = np.arange(used)[:, None]
    k = np.arange(bins)[None, :]
    # (n * k) mod size keeps the angle small, so large transforms stay accurate
    angle = 2 * np.pi * ((n * k) % size) / size
    cos, sin = np.cos(angle), np.sin(angle)
    matrix = np.zeros((length, parts, bins, parts_out))
    if inverse and onesided:
        # rows are frequencies here, columns time samples
        weight = np.where((n == 0) | (2 * n == size), 1.0, 2.0) / size
        matrix[:used, 0, :, 0] = weight * cos
        if parts == 2:
            matrix[:used, 1, :, 0] = -weight * sin
    elif inverse:
        matrix[:used, 0, :, 0] = cos / size
        matrix[:used, 0, :, 1] = sin / size
        if parts == 2:
            matrix[:used, 1, :, 0] = -sin / size
            matrix[:used, 1, :, 1] = cos / size
    else:
        matrix[:used, 0, :, 0] = cos
        matrix[:used, 0, :, 1] = -sin
        if parts == 2:
            matrix[:used, 1, :, 0] = sin
            matrix[:used, 1, :, 1] = cos
    return matrix.reshape(length * parts, bins * parts_out), parts_out


def emit_dft(ctx: ConvertContext, x: str, axis: int, size: int, inverse: bool,
             onesided: bool) -> str:
    """The DFT of `x` (..., complex parts) along `axis` (not the last) as ember ops."""
    shape = ctx.builder.types[x].shape
    dtype = ctx.builder.types[x].dtype
    rank = len(shape)
    parts = shape[-1]
    if parts not in (1, 2):
        ctx.fail(f"the last axis of {shape} must hold 1 (real) or 2 (complex) values")
    if size < 1:
        ctx.fail(f"dft_length {size} must be positive")
    matrix, parts_out = dft_matrix(shape[axis], parts, size, inverse, onesided)
    others = [d for d in range(rank - 1) if d != axis]
    perm = (*others, axis, rank - 1)
    if perm != tuple(range(rank)):
        x = ctx.emit("transpose", [x], {"perm": perm})
    batch = [shape[d] for d in others]
    x = emit_reshape(ctx, x, (math.prod(batch), shape[axis] * parts))
    # An inverse transform usually returns a real signal whose imaginary parts are sums that
    # cancel to zero; float32 leaves them at 1e-6 of the signal, float64 at 1e-15.
    work = "float64" if inverse or dtype == "float64" else "float32"
    if work != dtype:
        x = ctx.emit("cast", [x], {"to": work})
    y = ctx.emit("matmul", [x, ctx.constant(matrix.astype(numpy_dtype(work)))])
    bins = matrix.shape[1] // parts_out
    y = emit_reshape(ctx, y, (*batch, bins, parts_out))
    if perm != tuple(range(rank)):
        inverse_perm = tuple(int(p) for p in np.argsort(perm))
        y = ctx.emit("transpose", [y], {"perm": inverse_perm})
    if work != dtype:
        y = ctx.emit("cast", [y], {"to": dtype})
    return y


def _dft(ctx: ConvertContext, axis: int) -> str:
    x = ctx.type(0)
    if x.dtype not in FLOATS:
        ctx.fail(f"input has dtype {x.dtype}; DFT takes {', '.join(FLOATS)}")
    if x.rank < 2:
        ctx.fail(f"input of shape {x.shape} needs a signal axis and a trailing complex axis")
    # ONNX counts a negative axis from the end of the whole input, complex axis included
    rank = x.rank
    if not (-rank <= axis <= -2 or 0 <= axis <= rank - 2):
        ctx.fail(f"axis {axis} must name a signal axis of shape {x.shape}: one in "
                 f"[{-rank}, -2] or [0, {rank - 2}] (the last axis holds the complex parts)")
    axis %= rank
    inverse = bool(ctx.attr("inverse", 0))
    onesided = bool(ctx.attr("onesided", 0))
    if ctx.has_input(1):
        length = ctx.require_const(1, "dft_length")
        if length.size != 1:
            ctx.fail(f"dft_length must be a scalar, got shape {length.shape}")
        size = int(length.reshape(()))
    elif inverse and onesided:
        size = 2 * (x.shape[axis] - 1)
    else:
        size = x.shape[axis]
    return emit_dft(ctx, ctx.input(0), axis, size, inverse, onesided)


@converter("DFT", since=17)
def dft_17(ctx: ConvertContext) -> str:
    return _dft(ctx, int(ctx.attr("axis", 1)))


@converter("DFT", since=20)
def dft_20(ctx: ConvertContext) -> str:
    axis = -2
    if ctx.has_input(2):
        value = ctx.require_const(2, "axis")
        if value.size != 1:
            ctx.fail(f"axis must be a scalar, got shape {value.shape}")
        axis = int(value.reshape(()))
    return _dft(ctx, axis)


# ----------------------------------------------------------------------------- STFT


def _const_int(ctx: ConvertContext, index: int, what: str) -> int:
    value = ctx.require_const(index, what)
    if value.size != 1:
        ctx.fail(f"{what} must be a scalar, got shape {value.shape}")
    return int(value.reshape(()))


@converter("STFT", since=17)
def stft(ctx: ConvertContext) -> str:
    """Frames of `frame_length` samples every `frame_step`, each multiplied by the window and
    transformed: (batch, frames, bins, 2)."""
    signal = ctx.type(0)
    if signal.rank != 3 or signal.shape[2] not in (1, 2):
        ctx.fail(f"signal of shape {signal.shape} must be (batch, length, 1 or 2)")
    if signal.dtype not in FLOATS:
        ctx.fail(f"signal has dtype {signal.dtype}; STFT takes {', '.join(FLOATS)}")
    step = _const_int(ctx, 1, "frame_step")
    if ctx.has_input(3):
        frame = _const_int(ctx, 3, "frame_length")
    elif ctx.has_input(2):
        frame = ctx.type(2).shape[0]
    else:
        frame = signal.shape[1]
    if ctx.has_input(2) and ctx.type(2).shape != (frame,):
        ctx.fail(f"window of shape {ctx.type(2).shape} must have frame_length {frame} values")
    if step < 1 or not 1 <= frame <= signal.shape[1]:
        ctx.fail(f"frame_step {step} and frame_length {frame} do not frame a signal of "
                 f"{signal.shape[1]} samples")
    frames = 1 + (signal.shape[1] - frame) // step
    starts = np.arange(frames)[:, None] * step + np.arange(frame)[None, :]
    x = ctx.emit("gather", [ctx.input(0), ctx.constant(starts.astype(np.int64))], {"axis": 1})
    if ctx.has_input(2):
        window = ctx.input(2)
        if ctx.type(2).dtype != signal.dtype:
            window = ctx.emit("cast", [window], {"to": signal.dtype})
        x = ctx.emit("mul", [x, emit_reshape(ctx, window, (1, 1, frame, 1))])
    onesided = bool(ctx.attr("onesided", 1))
    return emit_dft(ctx, x, 2, frame, inverse=False, onesided=onesided)


# ----------------------------------------------------------------------------- windows


def _window_size(ctx: ConvertContext) -> tuple[int, np.dtype]:
    size = _const_int(ctx, 0, "size")
    if size < 0:
        ctx.fail(f"size {size} must not be negative")
    dtype = onnx_dtype(ctx, int(ctx.attr("output_datatype", 1)), "output_datatype")
    return size, numpy_dtype(dtype)


def _window(onnx_op: str, terms: tuple[float, ...]) -> None:
    """A generalized cosine window sum_j (-1)^j terms[j] cos(2 pi j n / N), N the size
    (periodic) or the size - 1 (symmetric), computed in the output dtype as ONNX does."""

    @converter(onnx_op, since=17)
    def convert(ctx: ConvertContext) -> str:
        size, dtype = _window_size(ctx)
        period = size if ctx.attr("periodic", 1) else size - 1
        work = dtype if dtype.kind == "f" else np.dtype(np.float64)  # integer windows truncate
        n = np.arange(size, dtype=work)
        values = np.zeros(size, dtype=work)
        with np.errstate(all="ignore"):  # a symmetric window of one sample divides by 0
            for j, coefficient in enumerate(terms):
                values += (-1) ** j * work.type(coefficient) * np.cos(
                    n * (2 * np.pi * j) / period, dtype=work)
        return ctx.constant(values.astype(dtype))


_window("HannWindow", (0.5, 0.5))
_window("HammingWindow", (25 / 46, 21 / 46))
_window("BlackmanWindow", (0.42, 0.5, 0.08))


# ----------------------------------------------------------------------------- MelWeightMatrix


def _hertz_to_mel(hertz: np.ndarray) -> np.ndarray:
    return 2595 * np.log1p(hertz / 700) / np.log(10)


@converter("MelWeightMatrix", since=17)
def mel_weight_matrix(ctx: ConvertContext) -> str:
    """The (dft_length // 2 + 1, num_mel_bins) matrix of triangular filters evenly spaced on
    the mel scale between the edge frequencies, a constant."""
    bins = _const_int(ctx, 0, "num_mel_bins")
    length = _const_int(ctx, 1, "dft_length")
    rate = _const_int(ctx, 2, "sample_rate")
    low = ctx.require_const(3, "lower_edge_hertz").reshape(())
    high = ctx.require_const(4, "upper_edge_hertz").reshape(())
    if bins < 1 or length < 1 or rate < 1:
        ctx.fail(f"num_mel_bins {bins}, dft_length {length} and sample_rate {rate} must be "
                 f"positive")
    dtype = onnx_dtype(ctx, int(ctx.attr("output_datatype", 1)), "output_datatype")
    low_mel, high_mel = _hertz_to_mel(low), _hertz_to_mel(high)
    points = np.arange(bins + 2)
    mels = points * ((high_mel - low_mel) / (bins + 2)) + low_mel
    hertz = 700 * np.expm1(mels / 2595 * np.log(10))
    edges = (((length + 1) * hertz) // rate).astype(int)
    spectrum = length // 2 + 1
    j = np.arange(spectrum)[:, None]
    left, center, right = edges[None, :-2], edges[None, 1:-1], edges[None, 2:]
    rising = np.where((j >= left) & (j <= center),
                      (j - left) / np.maximum(center - left, 1), 0.0)
    # a filter whose left edge meets its centre is a single 1 at the centre
    rising = np.where(center == left, (j == center).astype(float), rising)
    falling = np.where((j >= center) & (j < right), (right - j) / np.maximum(right - center, 1),
                       np.nan)
    weights = np.where(np.isnan(falling), rising, falling)
    if not (edges[2:] < spectrum + 1).all():
        ctx.fail(f"upper_edge_hertz {float(high)} lies beyond the spectrum of dft_length "
                 f"{length} at sample_rate {rate}")
    return ctx.constant(weights.astype(numpy_dtype(dtype)))
