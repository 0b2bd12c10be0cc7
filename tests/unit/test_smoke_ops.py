import numpy as np
import pytest
from support import check_node


@pytest.mark.parametrize("dtype", ["float32", "float16", "float64"])
@pytest.mark.parametrize("op", ["Relu", "Sigmoid", "Exp"])
def test_unary(op, dtype):
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(dtype)
    check_node(op, [("x", x)])


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul"])
def test_binary_broadcast(op):
    rng = np.random.default_rng(0)
    check_node(op, [("a", rng.standard_normal((2, 3, 4)).astype("float32")),
                    ("b", rng.standard_normal((3, 1)).astype("float32"))])
