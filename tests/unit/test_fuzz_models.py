"""Fuzzing the front door: every malformed model gives an `EmberError` or the right answer.

Seeds are onnx's node conformance models (`onnx.backend.test.case.node`) of many operator
families, with their example inputs. Each is corrupted by seeded mutations: input and output
element types changed, zero, huge, negative and extra dimensions, attribute values and types
replaced by absurd ones, inputs swapped, dropped, blanked or fed from the node's own output
(cycles), outputs duplicated, opsets and IR versions out of range, foreign domains, inputs
turned into (possibly truncated) initializers, the op replaced by another, contradictory
value_info. Each mutated model is compiled for target llvm in a sandboxed worker process
(fuzz_sandbox.py: a crash, a hang past its timeout or a memory blow-up is caught there) and
must be refused with an `ember.EmberError` or run and agree with onnx's ReferenceEvaluator
or ONNX Runtime.

tests/unit/test_frontend_errors.py has the hand-written errors and a small mutation sweep of
six one-node models; this file covers many ops and more kinds of damage, including mutations
composed by Hypothesis. Tiers: the default run samples 60 of the ~500 seed cases per
mutation and 150 composed mutations (about 20 s on 2 cores with a cold kernel cache);
`pytest -m slow` sweeps every usable node case (~1,300) with every mutation (about 10 min).

A failure names the base case, the mutation and its seed; rebuild the model with
`mutated_model(case, mutation, seed)` (import this file from tests/unit) to reproduce it.
Findings the lead has been told about and not yet fixed are listed in KNOWN_FINDINGS: they
turn the sweep into an expected failure until fixed, while any new finding fails it.
"""

from __future__ import annotations

import functools
import importlib
import re
import warnings
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import onnx
import pytest
from fuzz_sandbox import Outcome, Sandbox
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import AttributeProto, TensorProto, helper, numpy_helper

pytest.importorskip("onnxruntime")

#: node-suite modules whose cases seed the default tier: one or more ops of each family
SEED_MODULES = (
    "abs", "add", "argmax", "cast", "clip", "concat", "conv", "convtranspose", "cumsum",
    "depthtospace", "div", "einsum", "elu", "equal", "expand", "flatten", "gather",
    "gatherelements", "gathernd", "gemm", "globalaveragepool", "hardsigmoid", "hardswish",
    "instance_normalization", "batch_normalization", "layernormalization", "leakyrelu", "less",
    "lpnormalization", "lrn", "matmul", "max", "maxpool", "mean", "mul", "neg", "onehot", "pad",
    "pow", "prelu", "rangeop", "reducemax", "reducemean", "reducesum", "relu", "reshape",
    "resize", "scatterelements", "selu", "sigmoid", "slice", "softmax", "split", "sqrt",
    "squeeze", "sub", "tanh", "tile", "topk", "transpose", "unsqueeze", "where",
)
#: ops whose outputs are random: no oracle can check them
NONDETERMINISTIC = {"RandomNormal", "RandomUniform", "RandomNormalLike", "RandomUniformLike",
                    "Bernoulli", "Multinomial", "Dropout"}
BASES_PER_MUTATION = 60


@dataclass(frozen=True)
class Base:
    name: str
    model: onnx.ModelProto
    data: dict[str, np.ndarray]
    rtol: float
    atol: float


def _usable(case: Any) -> bool:
    from ember.compiler.frontend.onnx.importer import find_unsupported

    graph = case.model.graph
    if len(graph.node) != 1 or "_expanded" in case.name or not case.data_sets:
        return False
    if graph.node[0].op_type in NONDETERMINISTIC or graph.node[0].domain not in ("", "ai.onnx"):
        return False
    values = list(graph.input) + list(graph.output)
    if any(v.type.WhichOneof("value") != "tensor_type" for v in values):
        return False
    inputs = case.data_sets[0][0]
    if not all(isinstance(_as_array(x), np.ndarray) for x in inputs):
        return False
    return not find_unsupported(case.model)


def _as_array(value: Any) -> Any:
    from ember.compiler.frontend.onnx.conformance import as_array

    return as_array(value)


def _base(case: Any) -> Base:
    from ember.compiler.frontend.onnx.conformance import case_input_names

    inputs = [_as_array(x) for x in case.data_sets[0][0]]
    data = dict(zip(case_input_names(case), inputs))
    return Base(case.name, case.model, data, max(case.rtol, 1e-4), max(case.atol, 1e-5))


@functools.cache
def seed_bases() -> tuple[Base, ...]:
    """The default tier's bases: the usable cases of SEED_MODULES (importing a node-suite
    module generates its cases; all of them take about 18 s, these about 3 s)."""
    import onnx.backend.test.case.node as node_suite

    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for module in SEED_MODULES:
            importlib.import_module(f"{node_suite.__name__}.{module}")
    # read the suite's registry rather than what the imports added: the full suite may have
    # been collected already in this process (the conformance tests), adding nothing new
    wanted = set(SEED_MODULES)
    cases = [case for case in node_suite._NodeTestCases
             if _module_of(case) in wanted and _usable(case)]
    return tuple(_base(case) for case in sorted(cases, key=lambda case: case.name))


def _module_of(case: Any) -> str:
    # the case's test generator records nothing about its module; the op type names it closely
    # enough to filter (rangeop -> Range, batch_normalization -> BatchNormalization)
    op = case.model.graph.node[0].op_type.lower() if case.model.graph.node else ""
    aliases = {"range": "rangeop", "batchnormalization": "batch_normalization",
               "instancenormalization": "instance_normalization"}
    return aliases.get(op, op)


@functools.cache
def all_bases() -> tuple[Base, ...]:
    """Every usable node case (the slow tier)."""
    from ember.compiler.frontend.onnx.conformance import node_cases

    return tuple(_base(case) for name, case in sorted(node_cases().items()) if _usable(case))


# -- mutations: each changes `model` in place and says whether it applied


Mutation = Callable[[onnx.ModelProto, np.random.Generator, Base], bool]
ELEMENT_TYPES = [TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.INT32,
                 TensorProto.INT64, TensorProto.INT8, TensorProto.UINT8, TensorProto.BOOL,
                 TensorProto.STRING, TensorProto.BFLOAT16]


def _pick(rng: np.random.Generator, items: Any) -> Any:
    items = list(items)
    return items[int(rng.integers(len(items)))] if items else None


def _inputs(model: onnx.ModelProto) -> list[onnx.ValueInfoProto]:
    initializers = {init.name for init in model.graph.initializer}
    return [value for value in model.graph.input if value.name not in initializers]


def input_dtype(model, rng, base) -> bool:
    value = _pick(rng, _inputs(model))
    if value is None:
        return False
    tensor_type = value.type.tensor_type
    tensor_type.elem_type = _pick(rng, [t for t in ELEMENT_TYPES if t != tensor_type.elem_type])
    return True


def output_dtype(model, rng, base) -> bool:
    tensor_type = model.graph.output[0].type.tensor_type
    tensor_type.elem_type = _pick(rng, [t for t in ELEMENT_TYPES if t != tensor_type.elem_type])
    return True


def _set_dim(model, rng, values) -> bool:
    candidates = [v for v in _inputs(model) if v.type.tensor_type.shape.dim]
    value = _pick(rng, candidates)
    if value is None:
        return False
    dim = _pick(rng, value.type.tensor_type.shape.dim)
    dim.Clear()
    dim.dim_value = int(_pick(rng, values))
    return True


def zero_dim(model, rng, base) -> bool:
    return _set_dim(model, rng, [0])


def huge_dim(model, rng, base) -> bool:
    return _set_dim(model, rng, [2**31, 2**40, 10**7])


def negative_dim(model, rng, base) -> bool:
    return _set_dim(model, rng, [-1, -3])


def extra_dim(model, rng, base) -> bool:
    value = _pick(rng, _inputs(model))
    if value is None:
        return False
    dims = value.type.tensor_type.shape.dim
    dims.add().dim_value = int(_pick(rng, [1, 3]))
    return True


def scalar_input(model, rng, base) -> bool:
    value = _pick(rng, [v for v in _inputs(model) if v.type.tensor_type.shape.dim])
    if value is None:
        return False
    value.type.tensor_type.shape.ClearField("dim")
    return True


NASTY = {
    AttributeProto.INT: [-1, 0, 1, 7, -(2**31), 2**40],
    AttributeProto.FLOAT: [float("nan"), float("inf"), -1.0, 0.0, 1e30],
    AttributeProto.STRING: [b"", b"bogus", b"NOTSET"],
}


def _nasty_value(rng, attr: onnx.AttributeProto) -> Any:
    if attr.type in NASTY:
        return _pick(rng, NASTY[attr.type])
    if attr.type == AttributeProto.INTS:
        n = len(attr.ints)
        return _pick(rng, [[], [0] * n, [-1] * n, list(attr.ints)[::-1] + [5], [2**40] * n])
    if attr.type == AttributeProto.FLOATS:
        return _pick(rng, [[], [float("nan")] * max(1, len(attr.floats))])
    if attr.type == AttributeProto.TENSOR:
        return _pick(rng, [numpy_helper.from_array(np.zeros((0,), np.float32)),
                           numpy_helper.from_array(np.array(["x"], dtype=object)),
                           numpy_helper.from_array(np.ones((2, 2), np.int8))])
    return None


def attribute_value(model, rng, base) -> bool:
    node = model.graph.node[0]
    attr = _pick(rng, [a for a in node.attribute if _nasty_value(rng, a) is not None])
    if attr is None:
        return False
    value = _nasty_value(rng, attr)
    name, kind = attr.name, attr.type
    node.attribute.remove(attr)
    # an empty list has no element type to infer: keep the attribute's own
    node.attribute.append(helper.make_attribute(name, value, attr_type=kind))
    return True


def attribute_type(model, rng, base) -> bool:
    node = model.graph.node[0]
    attr = _pick(rng, node.attribute)
    if attr is None:
        return False
    replacements = {AttributeProto.INT: [1.5, [1, 2], b"1"],
                    AttributeProto.FLOAT: [1, [0.5, 0.5], b"0.5"],
                    AttributeProto.INTS: [1, [1.0, 2.0], b"1,2"],
                    AttributeProto.STRING: [1, [1, 2], 0.5],
                    AttributeProto.FLOATS: [1.0, [1, 2]]}
    value = _pick(rng, replacements.get(attr.type, [1, 0.5, [1, 2], b"x"]))
    name = attr.name
    node.attribute.remove(attr)
    node.attribute.append(helper.make_attribute(name, value))
    return True


def swap_inputs(model, rng, base) -> bool:
    node = model.graph.node[0]
    if len(node.input) < 2:
        return False
    order = list(node.input)
    rng.shuffle(order)
    if order == list(node.input):
        order = order[::-1]
    del node.input[:]
    node.input.extend(order)
    return True


def drop_input(model, rng, base) -> bool:
    node = model.graph.node[0]
    if not node.input:
        return False
    del node.input[int(rng.integers(len(node.input)))]
    return True


def blank_input(model, rng, base) -> bool:
    node = model.graph.node[0]
    if not node.input:
        return False
    node.input[int(rng.integers(len(node.input)))] = ""
    return True


def self_cycle(model, rng, base) -> bool:
    node = model.graph.node[0]
    if not node.input:
        return False
    node.input[int(rng.integers(len(node.input)))] = node.output[0]
    return True


def two_node_cycle(model, rng, base) -> bool:
    node = model.graph.node[0]
    if not node.input:
        return False
    node.input[int(rng.integers(len(node.input)))] = "fed_back"
    model.graph.node.append(helper.make_node("Identity", [node.output[0]], ["fed_back"],
                                             name="feedback"))
    return True


def duplicate_output(model, rng, base) -> bool:
    node = model.graph.node[0]
    if rng.integers(2) and len(node.output) >= 2:
        node.output[1] = node.output[0]
    elif rng.integers(2):
        node.output.append(node.output[0])
    else:
        model.graph.output.append(model.graph.output[0])
    return True


def no_outputs(model, rng, base) -> bool:
    if rng.integers(2):
        del model.graph.output[:]
    else:
        del model.graph.node[0].output[:]
    return True


def wrong_opset(model, rng, base) -> bool:
    default = [imp for imp in model.opset_import if imp.domain in ("", "ai.onnx")]
    choice = int(rng.integers(4))
    if choice == 0 and default:
        model.opset_import.remove(default[0])
    elif choice == 1:
        model.opset_import.append(helper.make_opsetid("", 13))  # a second, conflicting import
    elif default:
        default[0].version = int(_pick(rng, [1, 5, 99, 10_000]))
    return True


def wrong_ir_version(model, rng, base) -> bool:
    model.ir_version = int(_pick(rng, [1, 2, 99]))
    return True


def foreign_domain(model, rng, base) -> bool:
    domain = _pick(rng, ["com.microsoft", "ai.onnx.ml", "org.example"])
    model.graph.node[0].domain = domain
    model.opset_import.append(helper.make_opsetid(domain, 1))
    return True


def _to_initializer(model, rng, base, damage: str) -> bool:
    value = _pick(rng, [v for v in _inputs(model) if v.name in base.data])
    if value is None:
        return False
    array = np.asarray(base.data[value.name])
    if array.dtype == object:
        return False
    tensor = numpy_helper.from_array(array, value.name)
    if damage == "truncated" and tensor.raw_data:
        tensor.raw_data = tensor.raw_data[: len(tensor.raw_data) // 2]
    elif damage == "wrong_dims":
        tensor.dims.append(2)
    elif damage == "wrong_type":
        tensor.data_type = _pick(rng, [t for t in ELEMENT_TYPES if t != tensor.data_type
                                       and t != TensorProto.STRING])
    model.graph.initializer.append(tensor)
    if rng.integers(2):  # IR >= 4 lets an initializer stay out of the graph's inputs
        model.graph.input.remove(value)
    return True


def constant_input(model, rng, base) -> bool:
    """Not a corruption: an input becomes a constant, so ember folds the node."""
    return _to_initializer(model, rng, base, "")


def truncated_initializer(model, rng, base) -> bool:
    return _to_initializer(model, rng, base, "truncated")


def initializer_wrong_dims(model, rng, base) -> bool:
    return _to_initializer(model, rng, base, "wrong_dims")


def initializer_wrong_type(model, rng, base) -> bool:
    return _to_initializer(model, rng, base, "wrong_type")


OTHER_OPS = ["Relu", "Softmax", "Add", "MatMul", "Concat", "Transpose", "Reshape", "Gather",
             "Conv", "Where", "TopK", "Cast", "Slice", "ReduceSum", "Pad", "Split"]


def swap_op(model, rng, base) -> bool:
    node = model.graph.node[0]
    node.op_type = _pick(rng, [op for op in OTHER_OPS if op != node.op_type])
    return True


def contradictory_value_info(model, rng, base) -> bool:
    output = model.graph.output[0]
    shape = [int(d) for d in rng.integers(1, 6, int(rng.integers(0, 4)))]
    elem_type = int(_pick(rng, ELEMENT_TYPES[:7]))
    if rng.integers(2):
        model.graph.value_info.append(helper.make_tensor_value_info(output.name, elem_type,
                                                                    shape))
    else:
        model.graph.output[0].CopyFrom(helper.make_tensor_value_info(output.name, elem_type,
                                                                     shape))
    return True


MUTATIONS: dict[str, Mutation] = {
    mutation.__name__: mutation for mutation in (
        input_dtype, output_dtype, zero_dim, huge_dim, negative_dim, extra_dim, scalar_input,
        attribute_value, attribute_type, swap_inputs, drop_input, blank_input, self_cycle,
        two_node_cycle, duplicate_output, no_outputs, wrong_opset, wrong_ir_version,
        foreign_domain, constant_input, truncated_initializer, initializer_wrong_dims,
        initializer_wrong_type, swap_op, contradictory_value_info,
    )
}


def _seed(*parts: Any) -> int:
    return zlib.crc32(repr(parts).encode())


def mutate(base: Base, mutations: tuple[str, ...], seed: int) -> onnx.ModelProto | None:
    """A mutated copy of `base.model`, or None when a mutation has nothing to change."""
    model = onnx.ModelProto()
    model.CopyFrom(base.model)
    rng = np.random.default_rng(seed)
    for name in mutations:
        if not MUTATIONS[name](model, rng, base):
            return None
    return model


def mutated_model(case: str, mutation: str | tuple[str, ...], seed: int) -> onnx.ModelProto:
    """Rebuild the model a failure report names (`case` is a node case's name)."""
    bases = {base.name: base for base in seed_bases()}
    if case not in bases:  # a slow-tier case: collecting the whole suite takes a while
        bases = {base.name: base for base in all_bases()}
    names = (mutation,) if isinstance(mutation, str) else tuple(mutation)
    model = mutate(bases[case], names, seed)
    assert model is not None, f"{names} does not apply to {case}"
    return model


# -- judging


#: Findings reported to the lead and not fixed yet: (mutation, pattern, note). An outcome of
#: a model made with that mutation ("" for any) whose "<base case> <status>: <detail>" matches
#: the pattern is known; a sweep whose only bad outcomes are known is an expected failure.
#: Remove an entry once its bug is fixed.
KNOWN_FINDINGS: list[tuple[str, str, str]] = [
    # not ember's bugs: the oracles' or the model's own
    ("", r"^test_reduce_sum_square\w* mismatch: onnx.reference: output 0: int32",
     "onnx.reference's ReduceSumSquare returns int64 for int32 inputs; ember keeps int32 "
     "as the spec says"),
    ("blank_input", r"^test_loop\w* hang", "a Loop without its trip count whose condition "
     "stays true runs forever, as the model says"),
]


def _known(base: str, mutations: tuple[str, ...], outcome: Outcome) -> bool:
    text = f"{base} {outcome.status}: {outcome.detail}"
    return any((not mutation or mutation in mutations) and re.search(pattern, text, re.S)
               for mutation, pattern, _ in KNOWN_FINDINGS)


@pytest.fixture(scope="module")
def sandbox():
    box = Sandbox(timeout=60.0)
    yield box
    box.close()


def sweep(box: Sandbox, items: list[tuple[Base, tuple[str, ...], int]]) -> list[str]:
    """Judge every (base, mutations, seed); fail on any new finding. Returns the known
    findings met."""
    new, known = [], []
    for base, mutations, seed in items:
        model = mutate(base, mutations, seed)
        if model is None:
            continue
        outcome = box.judge(model.SerializeToString(), base.data, base.rtol, base.atol)
        if outcome.acceptable:
            continue
        report = (f"{base.name} + {'+'.join(mutations)} (seed {seed}): {outcome.status}: "
                  f"{outcome.detail.strip()[:1200]}\n  reproduce: ember.compile(mutated_model("
                  f"{base.name!r}, {mutations!r}, {seed}), target='llvm')")
        (known if _known(base.name, mutations, outcome) else new).append(report)
    assert not new, f"{len(new)} malformed model(s) not handled:\n" + "\n".join(new)
    return known


def xfail_if_known(known: list[str]) -> None:
    if known:
        pytest.xfail(f"{len(known)} known finding(s):\n" + "\n".join(known))


def _sample(bases: tuple[Base, ...], mutation: str, count: int) -> list[Base]:
    rng = np.random.default_rng(_seed("bases", mutation))
    picks = rng.choice(len(bases), size=min(count, len(bases)), replace=False)
    return [bases[int(i)] for i in sorted(picks)]


def test_seed_bases_cover_many_ops():
    ops = {base.model.graph.node[0].op_type for base in seed_bases()}
    assert len(ops) >= 45, sorted(ops)


def test_unmutated_seed_sample_is_right(sandbox):
    # the control group: valid models must compile and match (ember passes these cases)
    bases = _sample(seed_bases(), "control", 8)
    assert not sweep(sandbox, [(base, (), 0) for base in bases])


@pytest.mark.parametrize("mutation", MUTATIONS)
def test_mutated_models(sandbox, mutation):
    items = [(base, (mutation,), _seed(base.name, mutation))
             for base in _sample(seed_bases(), mutation, BASES_PER_MUTATION)]
    xfail_if_known(sweep(sandbox, items))


@settings(max_examples=150, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(data=st.data())
def test_composed_mutations(sandbox, data):
    bases = seed_bases()
    base = bases[data.draw(st.integers(0, len(bases) - 1), label="base")]
    mutations = data.draw(st.lists(st.sampled_from(sorted(MUTATIONS)), min_size=2, max_size=3),
                          label="mutations")
    seed = data.draw(st.integers(0, 2**16), label="seed")
    # known findings are counted by the single-mutation sweeps; only new ones fail here
    sweep(sandbox, [(base, tuple(mutations), seed)])


@pytest.mark.slow
@pytest.mark.parametrize("mutation", MUTATIONS)
def test_every_case_every_mutation(sandbox, mutation):
    xfail_if_known(sweep(sandbox, [(base, (mutation,), _seed(base.name, mutation))
                                   for base in all_bases()]))
