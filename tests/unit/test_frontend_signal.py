"""ONNX signal ops (compiler/frontend/onnx/signal.py) compiled for llvm against onnx's
reference evaluator: DFT (as a matmul with a constant matrix), STFT, the windows and
MelWeightMatrix (constants)."""

from __future__ import annotations

import numpy as np
import pytest
from support import check_node, node_model

import ember

rng = np.random.default_rng(3)
# float32 transforms sum many terms: compare at 1e-4 of the magnitudes involved
TOL = {"rtol": 1e-4, "atol": 1e-4}


def signal(*shape: int, dtype=np.float32) -> np.ndarray:
    return rng.normal(size=shape).astype(dtype)


def scalar(value: int) -> np.ndarray:
    return np.array(value, np.int64)


@pytest.mark.parametrize("parts", [1, 2])
@pytest.mark.parametrize("onesided", [0, 1])
@pytest.mark.parametrize("axis", [1, -2])
def test_dft_forward(parts, onesided, axis):
    check_node("DFT", [("x", signal(2, 8, 3, parts)), ("n", None), ("axis", scalar(axis))],
               {"onesided": onesided}, initializers=["axis"], opset=20, target="llvm", **TOL)


@pytest.mark.parametrize("length", [5, 12])
def test_dft_truncates_or_pads_to_dft_length(length):
    check_node("DFT", [("x", signal(1, 8, 2)), ("n", scalar(length)), ("axis", scalar(1))],
               initializers=["n", "axis"], opset=20, target="llvm", **TOL)


def test_dft_inverse_complex():
    check_node("DFT", [("x", signal(2, 6, 2, dtype=np.float64))], {"inverse": 1, "axis": 1},
               opset=17, target="llvm")


@pytest.mark.parametrize("length", [6, 7])
def test_dft_inverse_onesided_is_irfft(length):
    bins = length // 2 + 1
    check_node("DFT", [("x", signal(3, bins, 2, dtype=np.float64)), ("n", scalar(length))],
               {"inverse": 1, "onesided": 1, "axis": 1}, initializers=["n"], opset=17,
               target="llvm")


def test_dft_float16():
    check_node("DFT", [("x", signal(1, 8, 1, dtype=np.float16))], {"axis": 1}, opset=17,
               target="llvm", rtol=2e-2, atol=2e-2)


def test_dft_length_from_a_graph_input_specializes():
    x = signal(1, 8, 1)
    for n in (4, 8):
        check_node("DFT", [("x", x), ("n", scalar(n))], {"axis": 1}, opset=17, target="llvm",
                   **TOL)


def test_dft_rejects_the_complex_axis():
    model = node_model("DFT", [("x", signal(1, 8, 2)), ("n", None), ("axis", scalar(2))],
                       initializers=["axis"], opset=20, output_arrays=[np.zeros(1)])
    with pytest.raises(ember.FrontendError, match="axis 2 must name a signal axis"):
        ember.compile(model, target="llvm")


@pytest.mark.parametrize("with_window", [False, True])
@pytest.mark.parametrize("onesided", [0, 1])
def test_stft(with_window, onesided):
    inputs = [("x", signal(2, 40, 1)), ("step", scalar(6))]
    if with_window:
        inputs.append(("window", np.hanning(10).astype(np.float32)))
    else:
        inputs += [("window", None), ("length", scalar(10))]
    check_node("STFT", inputs, {"onesided": onesided}, initializers=["step", "length"],
               opset=17, target="llvm", **TOL)


@pytest.mark.parametrize("op", ["HannWindow", "HammingWindow", "BlackmanWindow"])
@pytest.mark.parametrize("periodic", [0, 1])
def test_windows(op, periodic):
    check_node(op, [("size", np.array(12, np.int32))], {"periodic": periodic},
               initializers=["size"], opset=17, target="llvm", atol=1e-6)


def test_window_output_dtype_double():
    check_node("HannWindow", [("size", np.array(9, np.int64))], {"output_datatype": 11},
               initializers=["size"], opset=17, target="llvm")


@pytest.mark.parametrize("bins,length,rate,low,high", [(8, 16, 8192, 0.0, 4096.0),
                                                       (5, 64, 16000, 100.0, 7000.0)])
def test_mel_weight_matrix(bins, length, rate, low, high):
    check_node("MelWeightMatrix", [
        ("bins", np.array(bins, np.int32)), ("length", np.array(length, np.int32)),
        ("rate", np.array(rate, np.int32)), ("low", np.array(low, np.float32)),
        ("high", np.array(high, np.float32)),
    ], initializers=["bins", "length", "rate", "low", "high"], opset=17, target="llvm")
