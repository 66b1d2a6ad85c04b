"""Experiment specs: one flat, frozen record per training run (ARCHITECTURE principle 1).

A spec names everything a run needs. Its *static* fields (epochs, batch size,
shared order, and the padded width the engine derives from its mask) decide
the compiled program; everything else (seed, learning rate, schedule, mask,
initial weights) travels as arrays with a leading experiment axis.

`exp_id` is a stable hash of the spec (mask bits included), so a restarted
sweep recognises finished runs in the store.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os

import jax
import numpy as np

from cubist import masks as mask_ops
from cubist import mlp, order, schedules
from cubist.mlp import Layer, Params

RANDOM_INIT = "random"
PRUNE_FAMILY = "prune"
# Fields added after stores existed: hashed only when they differ from their default.
_HASH_IF_SET = ("count_mode", "strength", "threshold", "method_options")


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
  """One training run.

  seed: the experiment's own PRNG seed (init and data order derive from it only).
  lr: base learning rate (> 0). schedule: "constant", "cosine" or "step".
  width: full hidden width w of the model the network lives in (16 for the
    combinatorial search). The init is drawn at this width (§B.2).
  widths: hidden widths (d1, d2, d3) of a structured mask inside `width`
    (top-left blocks); None with `mask` None means the dense width-w network.
  mask: explicit bool masks (a Params at `width`), e.g. an unstructured
    phase-2 mask; excluded from equality and hashing of the dataclass but
    included in `exp_id` through its bits.
  epochs, batch_size: training length and minibatch size (50, 128).
  init: "random" (PyTorch default at `width` from the seed) or the path of an
    npz initialisation such as ../shared/data/bench95_init.npz (sliced to `width`).
  shared_order: use the chunk-independent shared data order (see TrainStatic).
  data_order: how epoch permutations are drawn, "feistel" or "sort" (cubist.order).
  family, method, mask_config, target_nnz, extra: labels stored with the row.
    family "prune" makes the run a pruning run of `method` (a name registered
    in search.pruning.registry, e.g. "imp", "snip"): it starts from `masks()`
    (the dense network of `width` by default) and prunes towards `target_nnz`
    weights.
  count_mode, strength, threshold, method_options: pruning-method settings
    (search.pruning.base: Hyper, MethodStatic); `method_options` is a tuple of
    (name, value) pairs overriding MethodStatic fields (e.g. ("clean", True)).
    Left at their defaults they do not enter `exp_id`, so stores written
    before these fields existed still resume.
  """
  seed: int
  lr: float
  schedule: str = "cosine"
  width: int = 16
  widths: tuple[int, int, int] | None = None
  mask: Params | None = dataclasses.field(default=None, compare=False, repr=False)
  epochs: int = 50
  batch_size: int = 128
  init: str = RANDOM_INIT
  shared_order: bool = False
  data_order: str = "feistel"
  family: str = "train"
  method: str = "masked"
  mask_config: str | None = None
  target_nnz: int | None = None
  extra: str | None = None
  count_mode: str = "reference"
  strength: float = 0.0
  threshold: float = 3.0
  method_options: tuple = ()

  def masks(self) -> Params:
    """The full bool masks at `width`, biases included."""
    if self.mask is not None:
      return tuple(Layer(np.asarray(l.weight, bool), np.asarray(l.bias, bool)) for l in self.mask)
    widths = self.widths if self.widths is not None else (self.width,) * 3
    return mask_ops.structured_masks(widths, self.width)

  def num_weights(self) -> int:
    """N: the number of weights its starting mask allows (what pruning counts refer to)."""
    return int(sum(np.asarray(layer.weight).sum() for layer in self.masks()))

  def hidden_widths(self) -> tuple[int, int, int]:
    """(d1, d2, d3): the number of hidden units per layer that carry any mask entry."""
    if self.mask is None:
      return self.widths if self.widths is not None else (self.width,) * 3
    masks = self.masks()
    counts = []
    for l in range(3):
      used = (masks[l].weight.any(axis=1) | masks[l + 1].weight.any(axis=0) | masks[l].bias)
      counts.append(int(used.sum()))
    return tuple(counts)

  def exp_id(self) -> str:
    """Stable hash of every field and of the mask bits."""
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)
              if f.name != "mask" and not (f.name in _HASH_IF_SET and getattr(self, f.name) == f.default)}
    fields["widths"] = list(fields["widths"]) if fields["widths"] is not None else None
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode())
    if self.mask is not None:
      digest.update(mask_ops.pack_masks(self.masks())[0])
    return digest.hexdigest()[:20]


def validate(spec: ExperimentSpec) -> None:
  """One-line ValueError naming the offending field, before anything compiles."""
  if not isinstance(spec.width, (int, np.integer)) or spec.width < 1:
    raise ValueError(f"width={spec.width} must be an integer >= 1")
  if not spec.lr > 0:
    raise ValueError(f"lr={spec.lr} must be > 0")
  schedules.schedule_id(spec.schedule)
  if spec.data_order not in order.ORDER_METHODS:
    raise ValueError(f"data_order={spec.data_order!r} is unknown; known: {order.ORDER_METHODS}")
  if spec.epochs < 1:
    raise ValueError(f"epochs={spec.epochs} must be >= 1")
  if spec.batch_size < 1:
    raise ValueError(f"batch_size={spec.batch_size} must be >= 1")
  if spec.widths is not None:
    mask_ops.validate_widths(spec.widths, spec.width)
  if spec.mask is not None:
    mask_ops.validate_masks(spec.mask, spec.width)
  if spec.init != RANDOM_INIT:
    mlp.load_init(spec.init, spec.width)  # raises for a missing file, keys or shapes
  if is_pruning(spec):
    _validate_pruning(spec)


def is_pruning(spec: ExperimentSpec) -> bool:
  """Is the run a pruning run? Those have family "prune" and a registered method."""
  return spec.family == PRUNE_FAMILY


def _validate_pruning(spec: ExperimentSpec) -> None:
  from search.pruning import base, registry  # the strategies layer, only for pruning specs
  method = registry.get(spec.method)  # one-line error listing the known methods
  num_weights = spec.num_weights()
  if method.uses_strength and spec.target_nnz is None:
    pass  # VD, L0: the sparsity emerges from the strength
  elif spec.target_nnz is None or not 1 <= spec.target_nnz < num_weights:
    raise ValueError(f"target_nnz={spec.target_nnz} must be in 1..{num_weights - 1} "
                     f"(the {num_weights} weights of width {spec.width})")
  if spec.count_mode not in base.COUNT_MODES:
    raise ValueError(f"count_mode={spec.count_mode!r} is unknown; known: {base.COUNT_MODES}")
  if not spec.strength >= 0:
    raise ValueError(f"strength={spec.strength} must be >= 0")
  known = {f.name for f in dataclasses.fields(base.MethodStatic)}
  for name, _ in spec.method_options:
    if name not in known or name in ("epochs", "batches_per_epoch", "batch_size", "num_points",
                                      "count_mode", "family"):
      raise ValueError(f"method_options: {name!r} is not a settable option; known: "
                       f"{sorted(known - {'epochs', 'batches_per_epoch', 'batch_size', 'num_points', 'count_mode', 'family'})}")


def validate_all(specs) -> None:
  """Validate every spec; the error names the first bad spec's position."""
  checked_inits = set()
  for index, spec in enumerate(specs):
    try:
      if spec.init != RANDOM_INIT and (spec.init, spec.width) in checked_inits:
        spec = dataclasses.replace(spec, init=RANDOM_INIT)  # file already checked
      validate(spec)
    except ValueError as error:
      raise ValueError(f"spec {index}: {error}") from None
    if spec.init != RANDOM_INIT:
      checked_inits.add((spec.init, spec.width))


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """(init_key, order_key): the two independent streams of an experiment's seed."""
  key = jax.random.PRNGKey(seed)
  return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def sweep_fingerprint(specs) -> str:
  """A hash of the whole sweep (its sorted exp_ids): a workdir holds one sweep."""
  digest = hashlib.sha1()
  for exp_id in sorted(spec.exp_id() for spec in specs):
    digest.update(exp_id.encode())
  return digest.hexdigest()


def init_label(init: str) -> str:
  """What the store records for an init: 'random' or the npz file's name."""
  return init if init == RANDOM_INIT else os.path.basename(init)
