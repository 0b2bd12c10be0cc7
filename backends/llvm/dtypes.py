"""LLVM types and constants for ember dtypes, intrinsic name mangling, and CodegenError.

Registers hold `bool` as `i1`; memory holds it as `i8` (numpy's layout), so loads and stores
convert. float16 is LLVM `half` and bfloat16 LLVM `bfloat`: LLVM computes their arithmetic in
float32 and rounds each result back, which is what numpy (and ml_dtypes) do.
"""

from __future__ import annotations

import struct

import llvmlite.ir as ir

from ember.errors import CodegenError
from ember.ir.expr import element_of, lanes_of


class BFloatType(ir.types._BaseFloatType):
    """LLVM's `bfloat` (llvmlite has no class for it)."""

    null = "0.0"
    intrinsic_name = "bf16"

    def __str__(self) -> str:
        return "bfloat"

    def format_constant(self, value: float) -> str:
        return ir.types._format_double(round_to_bfloat16(value))


BFloatType._create_instance()  # llvmlite's float types are singletons


def round_to_bfloat16(value: float) -> float:
    """`value` rounded to the nearest bfloat16 (ties to even), as a Python float."""
    bits = struct.unpack("<I", struct.pack("<f", value))[0]
    if value != value:  # NaN: keep it quiet
        return value
    bits = (bits + 0x7FFF + ((bits >> 16) & 1)) & 0xFFFF0000
    return struct.unpack("<f", struct.pack("<I", bits))[0]


I1 = ir.IntType(1)
I8 = ir.IntType(8)
I32 = ir.IntType(32)
I64 = ir.IntType(64)
F32 = ir.FloatType()
PTR = ir.PointerType()
VOID = ir.VoidType()

_SCALARS: dict[str, ir.Type] = {
    "bool": I1,
    "int8": I8, "int16": ir.IntType(16), "int32": I32, "int64": I64,
    "uint8": I8, "uint16": ir.IntType(16), "uint32": I32, "uint64": I64,
    "float16": ir.HalfType(), "bfloat16": BFloatType(), "float32": F32,
    "float64": ir.DoubleType(),
}

#: bytes per element in memory
ITEMSIZE = {
    "bool": 1, "int8": 1, "int16": 2, "int32": 4, "int64": 8, "uint8": 1, "uint16": 2,
    "uint32": 4, "uint64": 8, "float16": 2, "bfloat16": 2, "float32": 4, "float64": 8,
}


def _vector(element: ir.Type, lanes: int) -> ir.Type:
    return element if lanes == 1 else ir.VectorType(element, lanes)


def scalar_type(dtype: str) -> ir.Type:
    """The register type of one element of `dtype` ("float32x16" -> float)."""
    element = element_of(dtype)
    try:
        return _SCALARS[element]
    except KeyError:
        raise CodegenError(f"the llvm backend has no type for dtype {dtype!r}; it supports "
                           f"{', '.join(_SCALARS)}") from None


def register_type(dtype: str) -> ir.Type:
    """The type a value of `dtype` has in registers ("float32x16" -> <16 x float>)."""
    return _vector(scalar_type(dtype), lanes_of(dtype))


def memory_type(dtype: str) -> ir.Type:
    """The type a value of `dtype` has in memory (bool is a byte)."""
    element = I8 if element_of(dtype) == "bool" else scalar_type(dtype)
    return _vector(element, lanes_of(dtype))


def alloca(builder: ir.IRBuilder, typ: ir.Type, name: str = "", align: int | None = None
           ) -> ir.Instruction:
    """A stack slot whose pointer is an opaque `ptr` (llvmlite types it `T*`, which would make
    its store/GEP type checks reject element pointers)."""
    slot = builder.alloca(typ, name=name)
    slot.type = PTR
    if align is not None:
        slot.align = align
    return slot


def itemsize(dtype: str) -> int:
    scalar_type(dtype)  # raises for unknown dtypes
    return ITEMSIZE[element_of(dtype)]


def is_float(dtype: str) -> bool:
    return element_of(dtype).startswith(("float", "bfloat"))


def is_unsigned(dtype: str) -> bool:
    """Unsigned integers and bool compare, divide and extend without sign."""
    element = element_of(dtype)
    return element.startswith("uint") or element == "bool"


def is_bool(dtype: str) -> bool:
    return element_of(dtype) == "bool"


def mangle(t: ir.Type) -> str:
    """The suffix LLVM uses for `t` in overloaded intrinsic names: f32, v16f32, i64, p0."""
    if isinstance(t, ir.VectorType):
        return f"v{t.count}{mangle(t.element)}"
    if isinstance(t, ir.PointerType):
        return "p0"
    if isinstance(t, ir.IntType):
        return f"i{t.width}"
    return t.intrinsic_name


def constant(dtype: str, value: int | float) -> ir.Constant:
    """A register constant of `dtype`, splatted over its lanes."""
    return constant_vector(dtype, [value] * lanes_of(dtype))


def constant_vector(dtype: str, values: list[int | float]) -> ir.Constant:
    """A register constant of `dtype` with one value per lane (a scalar for one lane)."""
    element = scalar_type(dtype)
    scalars = [_scalar_constant(element, v) for v in values]
    if lanes_of(dtype) == 1:
        return scalars[0]
    return ir.Constant(ir.VectorType(element, len(scalars)), scalars)


def _scalar_constant(element: ir.Type, value: int | float) -> ir.Constant:
    if isinstance(element, ir.IntType):
        # two's complement in the signed range, which LLVM's parser accepts for any width
        value = int(value) & ((1 << element.width) - 1)
        if element.width > 1 and value >= 1 << (element.width - 1):
            value -= 1 << element.width
    else:
        value = float(value)
    return ir.Constant(element, value)
