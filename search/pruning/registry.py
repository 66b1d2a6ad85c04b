"""Pruning methods by name (ARCHITECTURE principle 6).

Each family module exposes `METHODS: dict[str, Method]`; this module merges
them and turns a misspelt name into a one-line error listing the known ones.
"""

from __future__ import annotations

import functools

from search.pruning.base import Method

# Paper (1)'s nine methods, then the State of Sparsity ones, in report order.
PAPER_METHODS = ("imp", "lth", "snip", "grasp", "synflow", "iter_snip", "force", "prospr", "rigl")
SOS_METHODS = ("magnitude", "random", "vd", "l0")


@functools.lru_cache(maxsize=None)
def _methods() -> dict[str, Method]:
  from search.pruning import at_init, magnitude, rigl, variational
  methods = {}
  for module in (magnitude, at_init, rigl, variational):
    for name, method in module.METHODS.items():
      if name in methods:
        raise RuntimeError(f"pruning method {name!r} is registered twice")
      methods[name] = method
  return methods


def names() -> tuple[str, ...]:
  """Every registered method name, paper (1)'s first."""
  known = _methods()
  ordered = [n for n in PAPER_METHODS + SOS_METHODS if n in known]
  return tuple(ordered + sorted(set(known) - set(ordered)))


def is_method(name: str) -> bool:
  return name in _methods()


def get(name: str) -> Method:
  """The method called `name`; a one-line ValueError lists the known names otherwise."""
  try:
    return _methods()[name]
  except KeyError:
    raise ValueError(f"unknown pruning method {name!r}; known: {', '.join(names())}") from None
