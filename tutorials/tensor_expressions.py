"""Tutorial: write a matmul in tensor expressions, schedule it, and compile it with LLVM.

Run it with `python tutorials/tensor_expressions.py`. It walks the layers of ember's compiler
from the bottom: a tensor expression says *what* to compute, a schedule says *how* (loop
order, tiling, vectorization, threads), lowering turns both into loop IR, the loop-IR passes
flatten and vectorize it, and the LLVM backend makes machine code.
"""

import time

import numpy as np

from ember.backends.llvm import compile_primfuncs
from ember.ir import te
from ember.ir.lower import lower
from ember.ir.passes import run_pipeline
from ember.ir.schedule import create_schedule

M, N, K = 256, 256, 256

# 1. What to compute: C[i, j] = sum over k of A[i, k] * B[k, j].
A = te.placeholder((M, K), "float32", name="A")
B = te.placeholder((K, N), "float32", name="B")
k = te.reduce_axis(K, name="k")
C = te.compute((M, N), lambda i, j: te.sum(A[i, k] * B[k, j], axis=k), name="C")

# 2. The naive loop nest: three loops, the reduction innermost.
naive = run_pipeline(lower(create_schedule(C), [A, B, C], "matmul_naive"))
print("== naive loop IR ==")
print(naive)

# 3. A schedule. Accumulate a 32x32 tile in a local buffer (cache_write), walk K in the middle
# so each loaded A value is reused across a vector of B, vectorize the 16 columns of the tile
# that fit one AVX-512 register, and run the row tiles on all cores.
sch = create_schedule(C)
CL = sch.cache_write(C, "local")
i, j = sch[C].op.axis
io, jo, ii, ji = sch[C].tile(i, j, 32, 32)
sch[C].parallel(io)
sch[CL].compute_at(sch[C], jo)
ci, cj = sch[CL].op.axis
(ck,) = sch[CL].op.reduce_axis
cjo, cji = sch[CL].split(cj, factor=16)
sch[CL].reorder(ck, ci, cjo, cji)
sch[CL].vectorize(cji)
sch[C].vectorize(ji)

tuned = run_pipeline(lower(sch, [A, B, C], "matmul_tiled"))
print("== scheduled loop IR ==")
print(tuned)

# 4. Machine code for both, then run them on numpy arrays and check against numpy.
library = compile_primfuncs([naive, tuned], "llvm")
a = np.random.default_rng(0).standard_normal((M, K)).astype(np.float32)
b = np.random.default_rng(1).standard_normal((K, N)).astype(np.float32)
expected = a @ b
for name in ("matmul_naive", "matmul_tiled"):
    c = np.zeros((M, N), np.float32)
    kernel = library.get(name)
    kernel(a, b, c)
    np.testing.assert_allclose(c, expected, rtol=1e-4, atol=1e-4)
    start = time.perf_counter()
    for _ in range(10):
        kernel(a, b, c)
    seconds = (time.perf_counter() - start) / 10
    print(f"{name}: matches numpy; {2 * M * N * K / seconds / 1e9:.1f} GFLOP/s")

# 5. The generated LLVM IR: the tiled kernel computes on 16-float vectors.
vector_lines = [line for line in library.optimized_ir.splitlines() if "<16 x float>" in line]
print(f"== LLVM IR: {len(vector_lines)} lines use <16 x float>; the first few ==")
print("\n".join(vector_lines[:5]))
assert vector_lines, "the tiled kernel should be vectorized"
