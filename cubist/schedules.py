"""Learning-rate schedules, stepped once per epoch (METHODS §C.4).

A schedule is named in specs and configs and travels to the trainer as an
integer id, so that experiments with different schedules share one compiled
program. The per-epoch factors come from optax schedules evaluated at the
0-based epoch index t = e - 1:

- constant: 1.
- cosine:   (1 + cos(pi t / E)) / 2, eta_min = 0 (PyTorch CosineAnnealingLR, T_max = E).
- step:     1 for e <= ceil(0.3 E), 0.1 up to ceil(0.6 E), 0.01 after (MultiStepLR, gamma 0.1).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import optax

SCHEDULES = ("constant", "cosine", "step")


def schedule_id(name: str) -> int:
  """Integer id of a schedule name; a one-line error lists the known names."""
  if name not in SCHEDULES:
    raise ValueError(f"schedule={name!r} is unknown; known schedules: {', '.join(SCHEDULES)}")
  return SCHEDULES.index(name)


def step_milestones(epochs: int) -> tuple[int, int]:
  """MultiStepLR milestones of the step schedule: ceil(0.3 E) and ceil(0.6 E)."""
  return math.ceil(0.3 * epochs), math.ceil(0.6 * epochs)


@functools.lru_cache(maxsize=None)
def epoch_factors(epochs: int) -> np.ndarray:
  """Factor table of shape (len(SCHEDULES), epochs): row s is schedule s per epoch."""
  first, second = step_milestones(epochs)
  schedules = {
    "constant": optax.constant_schedule(1.0),
    "cosine": optax.cosine_decay_schedule(1.0, decay_steps=epochs, alpha=0.0),
    "step": optax.piecewise_constant_schedule(1.0, {first: 0.1, second: 0.1}),
  }
  # Evaluated eagerly even when called under jit: the table is a constant.
  with jax.ensure_compile_time_eval():
    t = jnp.arange(epochs)
    return np.stack(
      [np.broadcast_to(np.asarray(schedules[name](t), np.float32), (epochs,)) for name in SCHEDULES]
    )


def learning_rates(lr: jnp.ndarray, schedule: jnp.ndarray, epochs: int) -> jnp.ndarray:
  """Per-experiment, per-epoch learning rates of shape (E, epochs).

  lr: float (E,) base rates; schedule: int (E,) schedule ids.
  """
  return lr[:, None] * jnp.asarray(epoch_factors(epochs))[schedule]
