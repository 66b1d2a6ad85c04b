"""The contract between pruning methods and the method-aware trainer (ARCHITECTURE principle 6).

A pruning method is a small frozen record of pure functions over ONE experiment
(the trainer vmaps them over the leading experiment axis). The trainer knows
nothing of any particular method; it calls whichever hooks a method supplies:

- `at_init(key, params, masks, x, y, hyper, static) -> (params, masks)`:
  before training (SNIP, GraSP, SynFlow, Iter-SNIP, FORCE, ProsPr, RigL's ERK
  mask). `params` are the initial weights with `masks` already applied;
  `masks` is the starting bool mask (the dense network of the run's width, or
  a structured/learned mask). Returns the weights training starts from (e.g.
  Xavier re-initialised, masked) and the new bool masks, biases by the rule.
- `pre_event(step, key, params, masks, trace, hyper, static) -> (params, masks, trace)`:
  at the *start* of global iteration `step` (0-based, across epochs) for every
  step where `pre_event_steps(static)` is True (IMP, SoS magnitude/random).
  `trace` is the SGD momentum buffer (a Params-shaped pytree).
- `grad_event(step, key, params, masks, trace, grads, hyper, static) -> (params, masks, trace)`:
  after the gradient of iteration `step` is computed, *instead of* the
  optimiser update, on steps where `grad_event_steps(static)` is True (RigL).
  `grads` are the dense (unmasked) gradients of this iteration's minibatch.
- `rounds`, `round_end(round_index, trained_params, masks, hyper, static) -> masks`:
  training is repeated `rounds` times from the saved initial parameters with
  fresh momentum and a fresh schedule; `round_end` (called after every round
  but the last, round_index = 1, 2, ...) returns the masks of the next round
  (LTH).
- `aux_init(key, params, masks, hyper, static) -> aux`, `loss(params, aux, masks,
  batch_x, batch_y, key, step, hyper, static) -> scalar` (mean over the batch), `finalize(params, aux, masks,
  hyper, static) -> (params, masks)`: methods with extra trainable parameters
  and their own loss (variational dropout: log sigma^2; L0: log alpha). `aux`
  is a pytree trained by the same SGD (without weight decay). `finalize`
  turns the trained state into deterministic masked weights and bool masks.

- `host_counts(f, N, static) -> np.ndarray int (C,)`: host-side count schedule
  (see `Hyper.counts`); None means counts = [f].
- `failed(masks, hyper, static) -> bool scalar`: the run has no result in the
  reference (ProsPr emptying a layer, §H 8); the row is stored with status
  "failed".

Event schedules are host-side numpy bool arrays over the global steps, shared
by every experiment of a chunk, so `lax.cond` on them stays a real branch
(ARCHITECTURE principle 3).

Shapes (one experiment, width w): params/masks are `Params` (cubist.mlp) with
weights (out, in); x (N, 2) float32, y (N,) float32 are the whole dataset.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, NamedTuple

import jax
import numpy as np

COUNT_MODES = ("reference", "exact")
FAMILIES = ("random", "fixed")


class Hyper(NamedTuple):
  """Per-experiment method hyperparameters (arrays; leading E inside the trainer).

  target_nnz: int32 f, the nominal number of weights to keep.
  lr: float32 base learning rate of the run (ProsPr's inner lr).
  strength: float32 regulariser strength (VD: beta_max, the KL weight; L0:
    lambda); 0 for methods without one.
  threshold: float32 evaluation threshold (VD: tau on log alpha, default 3.0).
  counts: int32 (C,) the method's count schedule, computed on the host in
    float64 by `Method.host_counts(f, N, static)` exactly as the reference's
    Python expressions (§E.10; float32 on device would truncate differently).
    E.g. IMP: K_k for its 201 events; SynFlow: P_i for its 100 iterations.
  num_weights: int32 N, the number of weights the run's network has (its
    starting mask's weight count), which the count formulas use.
"""
  target_nnz: jax.Array
  lr: jax.Array
  strength: jax.Array
  threshold: jax.Array
  counts: jax.Array
  num_weights: jax.Array


@dataclasses.dataclass(frozen=True)
class MethodStatic:
  """What decides a method's compiled program (hashable).

  count_mode: "reference" reproduces the reference's measured counts and quirks
    (METHODS §E.10, §H); "exact" keeps exactly f weights, ties broken by index.
  family: "random" (PyTorch-default init from the seed; SNIP/GraSP re-init
    Xavier-normal) or "fixed" (an npz initialisation; no re-init).
  epochs, batches_per_epoch, batch_size, num_points: the run's geometry
    (total_steps = epochs * batches_per_epoch; 19,500 in the paper).
  clean: fix the reference quirks that have a clean mode (§H: IMP overshoot,
    ProsPr bias index bug); False = reference behaviour.
  sos_begin, sos_end, sos_freq: SoS pruning schedule as fractions of training
    (§F.1 "adapting to our 19,500 steps"); sos_scope "layer" (SoS) or "global".
  ramp_begin, ramp_end: fractions of training over which the VD/L0 regulariser
    weight ramps linearly from 0 to its strength (§F.3).
  """
  count_mode: str = "reference"
  family: str = "random"
  epochs: int = 50
  batches_per_epoch: int = 390
  batch_size: int = 128
  num_points: int = 49_982
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


def _no_steps(static: MethodStatic) -> np.ndarray:
  return np.zeros(static.total_steps, bool)


@dataclasses.dataclass(frozen=True)
class Method:
  """A registered pruning method: a name and the hooks it supplies (see module docstring)."""
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
