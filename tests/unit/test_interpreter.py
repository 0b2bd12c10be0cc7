"""The loop-IR interpreter is the oracle for lowering and passes: its arithmetic must be exact."""

import numpy as np
import pytest

from ember.ir import expr as E
from ember.ir import loop as L
from ember.ir.interpreter import run_primfunc


@pytest.mark.parametrize("a, b", [(2**62 + 1, 1), (-7, 2), (7, -2), (-7, -2), (6, 3), (-6, 4)])
def test_integer_division_truncates_exactly(a, b):
    out = L.Buffer("out", (3,), "int64")
    x, y = E.const(a), E.const(b)
    body = L.seq(out.store(0, E.Div(x, y)), out.store(1, E.FloorDiv(x, y)),
                 out.store(2, E.FloorMod(x, y)))
    result = np.zeros(3, np.int64)
    run_primfunc(L.PrimFunc("div", (out,), body), [result])
    truncated = abs(a) // abs(b) * (1 if (a < 0) == (b < 0) else -1)
    assert result.tolist() == [truncated, a // b, a % b]
