"""Training methods by name (ARCHITECTURE principle 6): what the binaries hand the engine.

Each family module exposes `METHODS: dict[str, Method]`; `default()` merges
them with fixed-mask training ("plain") and its retraining labels (scratch_e,
scratch_b, lottery: plain training of a learned mask, METHODS §F.5) into a
fresh `cubist.method.MethodRegistry`. `get(name)` looks a name up in the
built-in set; a researcher adds a method of their own with
`registry.default().register(method)` and passes that registry's `get` to
`cubist.engine.run` (see examples/custom_method.py).
"""

from __future__ import annotations

import functools

from cubist.method import PLAIN, PLAIN_METHOD, Method, MethodRegistry
from search.pruning import at_init, magnitude, rigl, variational

# Paper (1)'s nine methods, then the State of Sparsity ones, in report order.
PAPER_METHODS = ("imp", "lth", "snip", "grasp", "synflow", "iter_snip", "force", "prospr", "rigl")
SOS_METHODS = ("magnitude", "random", "vd", "l0")
# Plain training of a learned mask (§F.5): from a fresh init for the original
# steps (scratch_e) or twice as many (scratch_b), or from the original init (lottery).
RETRAIN_METHODS = ("scratch_e", "scratch_b", "lottery")


def _pruning_methods() -> list[Method]:
  methods = [
    m for module in (magnitude, at_init, rigl, variational) for m in module.METHODS.values()
  ]
  order = {name: i for i, name in enumerate(PAPER_METHODS + SOS_METHODS)}
  return sorted(methods, key=lambda m: (order.get(m.name, len(order)), m.name))


def default() -> MethodRegistry:
  """A fresh registry of every built-in method: plain, the retraining labels, the pruning methods."""
  retrain = [
    Method(name, description=f"plain training of a learned mask ({name}, §F.5)")
    for name in RETRAIN_METHODS
  ]
  return MethodRegistry([PLAIN_METHOD, *retrain, *_pruning_methods()])


@functools.lru_cache(maxsize=None)
def _builtin() -> MethodRegistry:
  return default()


def get(name: str) -> Method:
  """The built-in method called `name`; a one-line ValueError lists the known names otherwise."""
  return _builtin().get(name)


def names() -> tuple[str, ...]:
  """The built-in pruning methods' names, paper (1)'s first (plain and retraining excluded)."""
  return tuple(m.name for m in _pruning_methods())


def is_pruning(name: str) -> bool:
  """Is `name` a built-in pruning method (not plain training or a retraining label)?"""
  return name in names()


def is_plain(name: str) -> bool:
  return name == PLAIN or name in RETRAIN_METHODS
