"""The machine a run was trained on, and when two runs' bits can be compared.

Why (cubist.portable, cubist.layouts): a run trained in a portable layout
("unit", "dot") sums in an order written into the program, so its bits are
the same on every CPU of one arithmetic class: XLA contracts `a * b + c` into
one fused multiply-add where the CPU has FMA, so x86-64 CPUs with FMA (AVX2
and AVX-512 machines alike) give one set of bits and x86-64 CPUs without it
another. A run in the "gemm" layout, or on an accelerator, goes through
library kernels that choose their summation order from the hardware they run
on: its bits belong to that machine (and that jaxlib) only.

So every store row records the machine that trained it (`signature`, stored as
JSON in the row's `machine` column) and whether its bits are portable, and
`bits_key` says when two rows' bits are comparable: equal keys, comparable bits.
Otherwise two trainings of one spec agree only statistically (the report then
compares accuracies).

Pure: nothing is read or changed at import; `signature()` is computed once per
process (it asks JAX for its backend and devices, so it starts one: call it after
the backend is configured).
"""

from __future__ import annotations

import functools
import platform

import jax
import jaxlib

# The instruction-set flags (as /proc/cpuinfo names them) that can change what XLA
# compiles: vector widths, FMA, AVX-512 variants, AMX.
ISA_FLAGS = (
  "sse4_2",
  "avx",
  "avx2",
  "fma",
  "bmi2",
  "avx512f",
  "avx512dq",
  "avx512cd",
  "avx512bw",
  "avx512vl",
  "avx512_bf16",
  "avx512_vnni",
  "amx_tile",
)
ARM_FLAGS = ("neon", "asimd")
_X86 = ("x86_64", "amd64", "i386", "i686", "x86")
# The keys of a machine whose bits are its own (the whole signature).
FULL_KEY = ("backend", "device", "cpu", "arch", "isa", "jax", "jaxlib")


def _cpuinfo() -> tuple[str | None, set[str] | None]:
  """(model name, flags) from /proc/cpuinfo; None for what it does not say (or no file)."""
  try:
    with open("/proc/cpuinfo") as file:
      text = file.read()
  except OSError:
    return None, None
  model, flags = None, None
  for line in text.splitlines():
    key, _, value = line.partition(":")
    key, value = key.strip().lower(), value.strip()
    if model is None and key in ("model name", "hardware", "cpu model") and value:
      model = value
    elif flags is None and key in ("flags", "features"):
      flags = set(value.split())
  return model, flags


def arithmetic_class(arch: str, isa: list[str] | None) -> str:
  """The class of CPUs whose portable bits are equal: "x86-64+fma", "x86-64-nofma",
  "x86-64-unknown" (flags unreadable), or the architecture's name elsewhere."""
  if arch.lower() not in _X86:
    return arch
  if isa is None:
    return "x86-64-unknown"
  return "x86-64+fma" if "fma" in isa else "x86-64-nofma"


@functools.lru_cache(maxsize=None)
def _signature() -> tuple:
  model, flags = _cpuinfo()
  arch = platform.machine()
  wanted = ISA_FLAGS + (ARM_FLAGS if arch.lower() not in _X86 else ())
  isa = None if flags is None else sorted(f for f in wanted if f in flags)
  devices = jax.devices()
  signature = {
    "backend": jax.default_backend(),
    "device": devices[0].device_kind if devices else "",
    "cpu": model or platform.processor() or arch,
    "arch": arch,
    "isa": isa or [],
    "arithmetic": arithmetic_class(arch, isa),
    "jax": jax.__version__,
    "jaxlib": jaxlib.__version__,
  }
  return tuple((key, tuple(value) if key == "isa" else value) for key, value in signature.items())


def signature() -> dict:
  """This process's machine: {backend, device, cpu, arch, isa, arithmetic, jax, jaxlib}.

  backend: JAX's default backend ("cpu", "gpu", "tpu"); device: its first
  device's kind ("cpu", "NVIDIA H100 80GB HBM3", ...); cpu: the CPU's model
  name; arch: platform.machine(); isa: the sorted instruction-set flags of
  ISA_FLAGS (ARM_FLAGS on arm) the CPU has; arithmetic: `arithmetic_class`;
  jax, jaxlib: their versions. A fresh dict each call (the value is cached).
  """
  return {key: list(value) if key == "isa" else value for key, value in _signature()}


def bits_key(machine: dict | None, portable: bool) -> tuple | None:
  """What must be equal for two rows' bits to be comparable (None: unknown machine).

  A portable row on a CPU shares its bits with every CPU of its arithmetic
  class under the same jaxlib: (backend, arithmetic, jaxlib). Any other row
  (the "gemm" layout, an accelerator, an x86-64 CPU whose flags could not be
  read) has the bits of its machine: the whole signature.
  """
  if not machine:
    return None
  arithmetic = machine.get("arithmetic")
  if portable and machine.get("backend") == "cpu" and arithmetic != "x86-64-unknown":
    return ("portable", machine.get("backend"), arithmetic, machine.get("jaxlib"))
  return ("machine",) + tuple(
    tuple(machine.get(key) or ()) if key == "isa" else machine.get(key) for key in FULL_KEY
  )
