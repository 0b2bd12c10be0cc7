"""The machine the LLVM backend compiles for: triple, CPU, features, vector width, and the
llvmlite target machines (JIT and position-independent) that go with them.

`resolve_target("llvm")` describes the host (llvmlite's host CPU name and features);
`-mcpu=NAME` picks a CPU (`-mcpu=native` is the host), `-mattr=+a,-b` adds or removes features,
`-mtriple=...` cross-compiles (objects only: the JIT runs host code).
"""

from __future__ import annotations

import dataclasses
import functools
import struct

import llvmlite.binding as llvm

from ember.errors import CodegenError, TargetError
from ember.target import Target

# CPUs whose LLVM definition includes AVX-512F; used when a CPU is named without -mattr.
_AVX512_CPUS = frozenset({
    "skylake-avx512", "skx", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
    "icelake-server", "tigerlake", "rocketlake", "sapphirerapids", "emeraldrapids",
    "graniterapids", "graniterapids-d", "diamondrapids", "knl", "knm", "znver4", "znver5",
    "x86-64-v4",
})
_AVX2_CPUS = frozenset({
    "haswell", "broadwell", "skylake", "alderlake", "raptorlake", "meteorlake", "arrowlake",
    "lunarlake", "gracemont", "sierraforest", "grandridge", "znver1", "znver2", "znver3",
    "x86-64-v3",
})

#: the option keys an llvm target accepts (others are rejected with a clear error);
#: "num-threads" is for whoever runs the module (parallel.set_num_threads), not codegen
KNOWN_OPTIONS = ("mcpu", "mattr", "mtriple", "num-threads", "opt-level")


@functools.cache
def initialize() -> None:
    """Initialize LLVM's native target once per process."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    llvm.initialize_native_asmparser()


@dataclasses.dataclass(frozen=True)
class TargetInfo:
    """What code generation needs to know about the machine.

    `vector_bits` is the widest SIMD register (512 with AVX-512F); `prefer_vector_width` is
    written as the functions' "prefer-vector-width" attribute (None leaves LLVM's default).
    """

    triple: str
    cpu: str
    features: str
    vector_bits: int
    is_host: bool
    opt_level: int = 3

    @property
    def prefer_vector_width(self) -> int | None:
        return 512 if self.vector_bits >= 512 else None

    def vector_lanes(self, itemsize: int) -> int:
        """Lanes of one full SIMD register for elements of `itemsize` bytes."""
        return max(1, self.vector_bits // (8 * itemsize))


def _feature_set(features: str) -> dict[str, bool]:
    out: dict[str, bool] = {}
    for item in filter(None, (f.strip() for f in features.split(","))):
        out[item[1:] if item[0] in "+-" else item] = not item.startswith("-")
    return out


def _vector_bits(cpu: str, features: dict[str, bool]) -> int:
    if features.get("avx512f") or (cpu in _AVX512_CPUS and features.get("avx512f") is not False):
        return 512
    if features.get("avx2") or features.get("avx") or cpu in _AVX2_CPUS | _AVX512_CPUS:
        return 256
    return 128


def resolve_target(target: str | Target | TargetInfo = "llvm") -> TargetInfo:
    """The TargetInfo for an ember target of kind "llvm"; TargetError for anything else.
    A TargetInfo is returned as it is."""
    if isinstance(target, TargetInfo):
        return target
    target = Target.parse(target)
    if target.kind != "llvm":
        raise TargetError(f"the llvm backend compiles for 'llvm' targets, got {str(target)!r}")
    options = target.attrs
    unknown = sorted(set(options) - set(KNOWN_OPTIONS))
    if unknown:
        raise TargetError(f"target {str(target)!r}: unknown option(s) {', '.join(unknown)}; "
                          f"the llvm target accepts {', '.join(KNOWN_OPTIONS)}")
    initialize()
    host_triple = llvm.get_process_triple()
    triple = options.get("mtriple", host_triple)
    cpu = options.get("mcpu", "native")
    mattr = options.get("mattr", "")
    level = options.get("opt-level", "3")
    opt_level = int(level) if level.isdigit() else -1
    if not 0 <= opt_level <= 3:
        raise TargetError(f"target {str(target)!r}: opt-level must be 0..3, got {opt_level}")
    if cpu == "native":
        if triple != host_triple:
            raise TargetError(f"target {str(target)!r}: -mcpu=native needs the host triple "
                              f"{host_triple}; name a CPU with -mcpu for {triple}")
        cpu = llvm.get_host_cpu_name()
        host_features = llvm.get_host_cpu_features().flatten()
        features = ",".join(filter(None, [host_features, mattr]))
    else:
        features = mattr
    is_host = triple == host_triple and cpu == llvm.get_host_cpu_name()
    return TargetInfo(triple, cpu, features, _vector_bits(cpu, _feature_set(features)),
                      is_host, opt_level)


@functools.cache
def target_machine(info: TargetInfo, pic: bool = False) -> llvm.TargetMachine:
    """The shared llvmlite TargetMachine for `info` (position-independent for shared
    libraries), for optimization and emission. An execution engine takes ownership of its
    machine: give it `new_target_machine(info)` instead."""
    return new_target_machine(info, pic)


def new_target_machine(info: TargetInfo, pic: bool = False) -> llvm.TargetMachine:
    """A new llvmlite TargetMachine for `info`."""
    initialize()
    try:
        machine_target = llvm.Target.from_triple(info.triple)
    except RuntimeError as error:
        raise TargetError(f"LLVM cannot target triple {info.triple!r}: {error}") from None
    return machine_target.create_target_machine(
        cpu=info.cpu, features=info.features, opt=info.opt_level,
        reloc="pic" if pic else "default", codemodel="jitdefault" if not pic else "default")


@functools.cache
def load_libm() -> None:
    """Make libm's symbols (expf, tanhf, ...) explicit for the JIT's lookup (libm is in every
    CPython process; loading it by name does not depend on that)."""
    for name in ("libm.so.6", "libm.so"):
        try:
            llvm.load_library_permanently(name)
            return
        except RuntimeError:
            continue


def jit_engine(module: llvm.ModuleRef, info: TargetInfo, what: str
               ) -> tuple[llvm.ExecutionEngine, list[bytes]]:
    """An MCJIT engine holding `module`, compiled and linked into this process, and the object
    code it compiled (which `object_engine` can load again, e.g. from a cache).

    MCJIT links a symbol it cannot find to address 0 without a word, and calling it would
    crash the process; so the object code's undefined symbols are looked up first, and a
    missing one raises CodegenError naming `what` was compiled."""
    load_libm()
    engine = llvm.create_mcjit_compiler(module, new_target_machine(info))
    objects: list[bytes] = []
    engine.set_object_cache(lambda _module, data: objects.append(data), lambda _module: None)
    engine.finalize_object()
    _check_symbols(objects, what)
    return engine, objects


def object_engine(objects: list[bytes], info: TargetInfo, what: str) -> llvm.ExecutionEngine:
    """An MCJIT engine holding object code compiled earlier by `jit_engine` for `info`."""
    load_libm()
    _check_symbols(objects, what)
    engine = llvm.create_mcjit_compiler(llvm.parse_assembly(""), new_target_machine(info))
    for data in objects:
        engine.add_object_file(llvm.ObjectFileRef.from_data(data))
    engine.finalize_object()
    return engine


def _check_symbols(objects: list[bytes], what: str) -> None:
    defined = {name for data in objects for name in global_symbols(data)[0]}
    missing = sorted({name for data in objects for name in global_symbols(data)[1]
                      if name not in defined and llvm.address_of_symbol(name) is None})
    if missing:
        raise CodegenError(f"the code for {what} calls {', '.join(missing)}, which this "
                           f"process does not provide")


def global_symbols(elf: bytes) -> tuple[list[str], list[str]]:
    """The global symbols an ELF64 little-endian object defines, and those it uses but does
    not define."""
    if elf[:4] != b"\x7fELF" or elf[4] != 2 or elf[5] != 1:
        return [], []  # not ELF64 LE: nothing to check
    section_offset, = struct.unpack_from("<Q", elf, 0x28)
    entry_size, count = struct.unpack_from("<HH", elf, 0x3A)
    sections = [struct.unpack_from("<IIQQQQIIQQ", elf, section_offset + k * entry_size)
                for k in range(count)]
    defined, undefined = [], []
    for _, kind, _, _, offset, size, link, _, _, symbol_size in sections:
        if kind != 2:  # SHT_SYMTAB
            continue
        strings = sections[link][4]
        for at in range(offset + symbol_size, offset + size, symbol_size):  # skip null entry
            name_offset, info, _, section_index = struct.unpack_from("<IBBH", elf, at)
            if info >> 4 != 1 or not name_offset:  # STB_GLOBAL only
                continue
            end = elf.index(b"\0", strings + name_offset)
            name = elf[strings + name_offset:end].decode()
            (undefined if section_index == 0 else defined).append(name)  # 0: SHN_UNDEF
    return defined, undefined
