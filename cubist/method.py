"""The method contract: how a training method plugs into the one trainer (ARCHITECTURE principle 6).

A method is a small frozen record of pure functions over ONE experiment (the
trainer vmaps them over the experiment axis, in whichever layout it trains).
Fixed-mask training is the `PLAIN` method, which supplies no hook at all. The
trainer (`cubist.train`) knows nothing of any particular method; it calls the
hooks a method supplies, in this order:

    at_init -> [aux_init] -> rounds x (epochs x steps: [pre_event], forward
    ([loss]), gradient, [grad_event | SGD update]) -> [round_end, rewind]
    -> [finalize] -> evaluate

- `at_init(key, params, masks, x, y, hyper, static) -> (params, masks)`:
  before training (SNIP, GraSP, SynFlow, Iter-SNIP, FORCE, ProsPr, RigL's ERK
  mask). `params` are the initial weights with `masks` applied; `masks` is the
  starting bool mask (the dense network of the run's width, or a structured or
  learned mask). Returns the weights training starts from and the new masks.
- `pre_event(step, key, state, hyper, static) -> RunState`: at the *start* of
  global step `step` (0-based, across epochs) on the steps where
  `pre_event_steps(static)` is True (IMP, SoS magnitude and random).
- `grad_event(step, key, state, grads, hyper, static) -> RunState`: after the
  gradient of step `step` is computed, *instead of* the optimiser update, on
  the steps where `grad_event_steps(static)` is True (RigL). `grads` are the
  dense (unmasked) gradients of this step's minibatch.
- `rounds`, `round_end(round_index, trained_params, masks, hyper, static) -> masks`:
  training is repeated `rounds` times from the parameters training started
  from, with fresh momentum and schedule; `round_end` (after every round but
  the last, round_index = 1, 2, ...) returns the next round's masks (LTH).
- `aux_init(key, params, masks, hyper, static) -> aux`, `loss(params, aux, masks,
  batch_x, batch_y, key, step, hyper, static) -> scalar` (mean over the batch),
  `finalize(params, aux, masks, hyper, static) -> (params, masks)`: methods
  with extra trainable parameters and their own loss (variational dropout,
  L0). `aux` is trained by the same SGD without weight decay; `finalize`
  turns the trained state into deterministic masked weights and bool masks.
- `host_counts(f, N, static) -> np.ndarray int (C,)`: the host-side count
  schedule (see `Hyper.counts`); None means counts = [f].
- `failed(masks, hyper, static) -> bool scalar`: the run has no result in the
  reference (ProsPr emptying a layer, METHODS §H 8); its row gets status "failed".

Event schedules are host-side numpy bool arrays over the global steps, shared
by every experiment of a chunk, so `lax.cond` on them is a real branch, not a
select evaluated every step (ARCHITECTURE principle 3).

Shapes seen by a hook (one experiment, padded width w): params, masks and
momentum are `Params` (cubist.mlp) with weights (out, in); x (N, 2) and y (N,)
are the whole dataset.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import numpy as np

from cubist import data
from cubist.mlp import Params

COUNT_MODES = ("reference", "exact")
PLAIN = "plain"


class Hyper(NamedTuple):
  """Per-experiment method hyperparameters (arrays; leading axis E inside the trainer).

  target_nnz: int32 f, the nominal number of weights to keep (0 if none).
  lr: float32 base learning rate of the run (ProsPr's inner lr).
  strength: float32 regulariser strength (VD: the KL weight; L0: lambda); 0 without one.
  threshold: float32 evaluation threshold (VD: tau on log alpha, default 3.0).
  counts: int32 (C,) the method's count schedule, computed on the host in
    float64 by `Method.host_counts(f, N, static)` exactly as the reference's
    Python expressions (METHODS §E.10; float32 on a device would truncate
    differently). E.g. IMP: K_k for its 201 events; SynFlow: P_i for its 100 iterations.
  num_weights: int32 N, the number of weights of the run's starting mask.
  """

  target_nnz: jax.Array
  lr: jax.Array
  strength: jax.Array
  threshold: jax.Array
  counts: jax.Array
  num_weights: jax.Array


class RunState(NamedTuple):
  """What an event hook may read and change: one experiment's network mid-training.

  params: masked weights and biases; masks: bool, the same structure;
  momentum: the SGD momentum buffer (PyTorch's `momentum_buffer`), same structure.
  """

  params: Params
  masks: Params
  momentum: Params


@dataclasses.dataclass(frozen=True)
class MethodStatic:
  """What decides a method's compiled program (hashable).

  count_mode: "reference" reproduces the reference's measured counts and quirks
    (METHODS §E.10, §H); "exact" keeps exactly f weights, ties broken by index.
  random_init: True for the random-initialisation family (PyTorch-default init
    from the seed; SNIP and GraSP re-draw Xavier-normal weights), False for a
    fixed npz initialisation (no re-init).
  epochs, batches_per_epoch, batch_size, num_points: the run's geometry
    (total_steps = epochs * batches_per_epoch; 19,500 in the paper).
  clean: fix the reference quirks that have a clean mode (§H: IMP overshoot,
    ProsPr's bias index bug and its detached first momentum buffer); False =
    reference behaviour.
  sos_begin, sos_end, sos_freq: SoS pruning schedule as fractions of training
    (§F.1); sos_scope "layer" (SoS) or "global".
  ramp_begin, ramp_end: fractions of training over which the VD/L0 regulariser
    weight ramps linearly from 0 to its strength (§F.3).
  """

  count_mode: str = "reference"
  random_init: bool = True
  epochs: int = 50
  batches_per_epoch: int = data.NUM_POINTS // data.BATCH_SIZE
  batch_size: int = data.BATCH_SIZE
  num_points: int = data.NUM_POINTS
  clean: bool = False
  sos_begin: float = 0.16
  sos_end: float = 0.59
  sos_freq: float = 0.031
  sos_scope: str = "layer"
  ramp_begin: float = 0.0
  ramp_end: float = 0.5

  @property
  def total_steps(self) -> int:
    return self.epochs * self.batches_per_epoch


# MethodStatic fields a spec's `method_options` may set; the rest follow from the spec.
SETTABLE_OPTIONS = (
  "clean",
  "sos_begin",
  "sos_end",
  "sos_freq",
  "sos_scope",
  "ramp_begin",
  "ramp_end",
)


def _no_steps(static: MethodStatic) -> np.ndarray:
  return np.zeros(static.total_steps, bool)


@dataclasses.dataclass(frozen=True)
class Method:
  """A training method: a name and the hooks it supplies (see the module docstring).

  uses_strength: the method's sparsity comes from `Hyper.strength` rather than
    a target count (VD, L0), so its specs need no `target_nnz`.
  """

  name: str
  at_init: Callable | None = None
  pre_event: Callable | None = None
  pre_event_steps: Callable[[MethodStatic], np.ndarray] = _no_steps
  grad_event: Callable | None = None
  grad_event_steps: Callable[[MethodStatic], np.ndarray] = _no_steps
  rounds: int = 1
  round_end: Callable | None = None
  aux_init: Callable | None = None
  loss: Callable | None = None
  finalize: Callable | None = None
  host_counts: Callable[[int, int, MethodStatic], np.ndarray] | None = None
  failed: Callable | None = None
  uses_strength: bool = False
  description: str = ""

  @property
  def is_plain(self) -> bool:
    """No hooks: fixed-mask training, whatever the name."""
    return (
      all(
        getattr(self, hook) is None
        for hook in (
          "at_init",
          "pre_event",
          "grad_event",
          "round_end",
          "aux_init",
          "loss",
          "finalize",
          "failed",
        )
      )
      and self.rounds == 1
    )

  @property
  def layouts(self) -> tuple[str, ...]:
    """The trainer layouts that can run it: a custom loss sees (B, 2) batches, so not "unit"."""
    return ("dot", "gemm") if self.loss is not None else ("dot", "unit", "gemm")

  @property
  def fixes_mask_at_init(self) -> bool:
    """It chooses its mask in `at_init` and then trains it unchanged (SNIP, GraSP, ...):
    the engine can train its live units only."""
    return (
      self.at_init is not None
      and all(
        getattr(self, hook) is None
        for hook in ("pre_event", "grad_event", "round_end", "aux_init", "loss", "finalize")
      )
      and self.rounds == 1
    )

  @property
  def trains_last_round_fixed(self) -> bool:
    """Several rounds and no hook inside a round (LTH): every round restarts from the
    start weights with fresh momentum and schedule (the trainer's round semantics), so
    the last round is fixed-mask training and the engine can train its live units only."""
    return (
      self.rounds > 1
      and self.round_end is not None
      and all(
        getattr(self, hook) is None
        for hook in ("pre_event", "grad_event", "aux_init", "loss", "finalize")
      )
    )


PLAIN_METHOD = Method(PLAIN, description="fixed-mask training (the mask is the spec's)")


def event_schedule(
  method: Method, static: MethodStatic, epochs: int | None = None
) -> tuple[np.ndarray, np.ndarray] | None:
  """Host-side bool (epochs, batches) schedules of the pre- and grad-events, or None.

  None when the method has no events. epochs: keep only the first `epochs`
  epochs of the method's schedule (truncated benchmark runs); default all.
  """
  if method.pre_event is None and method.grad_event is None:
    return None
  shape = (static.epochs, static.batches_per_epoch)
  pre = np.asarray(method.pre_event_steps(static), bool).reshape(shape)
  grad = np.asarray(method.grad_event_steps(static), bool).reshape(shape)
  return pre[:epochs], grad[:epochs]


def plain_only(name: str) -> Method:
  """The method lookup of a caller that brings no registry: only fixed-mask training."""
  if name == PLAIN:
    return PLAIN_METHOD
  raise ValueError(
    f"unknown method {name!r}: only {PLAIN!r} is built in; pass a method "
    "lookup, e.g. methods=search.pruning.registry.get"
  )


class MethodRegistry:
  """Methods by name: what a caller hands the engine (`methods=registry.get`).

  A registry starts with the methods given (the plain method by default);
  `register` adds one (returning the registry, so calls chain); a misspelt
  name is a one-line error listing the known ones.
  """

  def __init__(self, methods=(PLAIN_METHOD,)):
    self._methods: dict[str, Method] = {}
    for method in methods:
      self.register(method)

  def register(self, method: Method) -> "MethodRegistry":
    if not isinstance(method, Method):
      raise TypeError(f"register expects a cubist.method.Method, got {type(method).__name__}")
    if method.name in self._methods:
      raise ValueError(f"method {method.name!r} is registered twice")
    self._methods[method.name] = method
    return self

  def get(self, name: str) -> Method:
    """The method called `name`; a one-line ValueError lists the known names otherwise."""
    try:
      return self._methods[name]
    except KeyError:
      raise ValueError(f"unknown method {name!r}; known: {', '.join(self.names())}") from None

  def names(self) -> tuple[str, ...]:
    return tuple(self._methods)

  def __contains__(self, name: str) -> bool:
    return name in self._methods
