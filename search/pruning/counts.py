"""Host-side count schedules of the pruning methods, in Python float64 (METHODS §E.10, §H).

The reference computes every "how many weights to keep" in Python floats and
truncates with int() (or ceil()), then selects with a strict or non-strict
threshold. The measured counts therefore differ from the nominal target f by
one or two, depending on (f, N) (§E.10). This module restates those
expressions exactly, so that:

- the methods' `host_counts` hand the device the same integers the reference
  would compute (float32 on device could truncate differently, §E.0);
- the §E.10 / §H tables (nominal and measured final weight counts per method)
  are generated from the formulas, not hard-coded (`count_table`).

Everything here is plain Python/numpy on the host; nothing is traced. "N" is
the run's number of weights N(w) = 2w^2 + 3w and "f" the nominal target
(`final_nnz_weights`).
"""

from __future__ import annotations

import math

import numpy as np

from cubist import mlp

# IMP (§E.1): the reference's `PRUNINGTIMES = 199.0` and interval
# `int(total_iters / (PRUNINGTIMES + 1))`.
IMP_PRUNING_TIMES = 199.0
# LTH (§E.2): 5 rounds of 50 epochs, pruning after rounds 1..4.
LTH_ROUNDS = 5
# RigL (§E.9): update period ΔT, initial drop fraction α, T_end fraction.
RIGL_DELTA_T = 100
RIGL_ALPHA = 0.3
RIGL_END_FRACTION = 0.75
# SoS magnitude pruning (§F.1): histogram bins of tf.contrib.model_pruning.
SOS_NBINS = 256
# Methods of the §E.10 table, in its order.
TABLE_METHODS = ("imp", "lth", "snip", "grasp", "synflow", "iter_snip", "force", "prospr", "rigl")


# --------------------------------------------------------------------------- geometry


def width_from_num_weights(num_weights: int) -> int:
  """The hidden width w with N(w) = 2w^2 + 3w = num_weights; ValueError if none.

  The magnitude-family and RigL count schedules need the layer sizes of the
  dense width-w network they start from (pruning always starts dense, §E.0).
  """
  num_weights = int(num_weights)
  width = int(round((math.sqrt(9 + 8 * num_weights) - 3) / 4))
  if width < 1 or mlp.num_weights(width) != num_weights:
    raise ValueError(f"N={num_weights} is not 2w^2+3w for any width w (a dense network's count)")
  return width


def layer_sizes(width: int) -> tuple[int, int, int, int]:
  """Weights per matrix (n_1..n_4) = (2w, w^2, w^2, w) of the dense width-w network."""
  return tuple(int(np.prod(weight_shape)) for weight_shape, _ in mlp.layer_shapes(width))


def _check_target(f: int, num_weights: int) -> None:
  if not 1 <= f < num_weights:
    raise ValueError(f"target f={f} must be in 1..N-1 for N={num_weights} (configs use f < N(w))")


# --------------------------------------------------------------------------- IMP (§E.1)


def imp_interval(total_steps: int) -> int:
  """Δ = int(I / 200.0), the steps between IMP events (97 at I = 19,500)."""
  interval = int(total_steps / (IMP_PRUNING_TIMES + 1))
  if interval < 1:
    raise ValueError(f"IMP needs at least 200 training steps, got total_steps={total_steps}")
  return interval


def imp_event_steps(total_steps: int) -> np.ndarray:
  """Global 0-based steps of the IMP events: t % Δ == 0 and t > 0, t < I (201 at I = 19,500)."""
  interval = imp_interval(total_steps)
  return np.arange(interval, total_steps, interval)


def imp_counts(
  f: int, num_weights: int, total_steps: int = 19_500, clamp: bool = False
) -> np.ndarray:
  """K_k = int(f + (N - f) * (1 - frac_k)**3), frac_k = t_k / (199.0 * Δ), for every event k.

  Reference (clamp=False): events 200 and 201 have frac > 1, so (1 - frac)^3 is
  slightly negative and int() lands on f - 1 (§E.1 overshoot, §H 1). clamp=True
  (the clean mode) caps frac at 1, so the last events ask for exactly f.
  Returns int32 (num_events,).
  """
  _check_target(f, num_weights)
  interval = imp_interval(total_steps)
  out = []
  for step in imp_event_steps(total_steps):
    frac = int(step) / (IMP_PRUNING_TIMES * interval)
    if clamp:
      frac = min(frac, 1.0)
    out.append(int(f + (num_weights - f) * ((1 - frac) ** 3)))
  return np.asarray(out, np.int32)


# --------------------------------------------------------------------------- LTH (§E.2)


def lth_counts(
  f: int, num_weights: int, rounds: int = LTH_ROUNDS, exact: bool = False
) -> np.ndarray:
  """K_r = int(N * (f/N)**(r/(rounds-1))) after rounds r = 1..rounds-1.

  N = 560, f = 20 gives 243, 105, 46, 20.

  Reference: the float expression can truncate to f - 1 at the last round
  (N = 44, f = 15 gives 14). exact=True keeps the same schedule but asks for
  exactly f at the last round (§E.10 recommendation). Returns int32 (rounds-1,).
  """
  _check_target(f, num_weights)
  times_pruned = rounds - 1
  out = []
  for prune_round in range(1, rounds):
    power = prune_round / times_pruned
    out.append(int(num_weights * ((float(f) / num_weights) ** power)))
  if exact:
    out[-1] = f
  return np.asarray(out, np.int32)


# --------------------------------------------------------------------------- chains


def kept_after_events(counts, num_weights: int, strict: bool) -> int:
  """Weights left after successive global magnitude prunes asking for `counts` (no ties).

  A strict threshold at sorted index N - K keeps K - 1 (§H 2); already-pruned
  weights are zero and never re-enter, so a larger later K keeps what is left.
  """
  kept = int(num_weights)
  for count in counts:
    kept = min(kept, int(count) - 1 if strict else int(count))
  return kept


# --------------------------------------------------------------------------- RigL (§E.9)


def erk_densities(shapes, density: float, power_scale: float = 1.0) -> list[float]:
  """ERK layer densities with the dense-layer iteration, as the reference computes them.

  raw_l = ((out + in) / (out * in))**power_scale; eps solves
  sum_{sparse} eps raw_l n_l = sum_{sparse} d n_l - sum_{dense} (1 - d) n_l; while
  the largest eps raw_l exceeds 1, every layer attaining the largest raw value
  is made dense. Accumulation order and float64 arithmetic follow the
  reference (so raw-value ties, e.g. W2 and W3, go dense together).
  """
  dense_layers: set[int] = set()
  while True:
    divisor = 0.0
    rhs = 0.0
    raw = [None] * len(shapes)
    for index, shape in enumerate(shapes):
      n_param = np.prod(shape)
      if index in dense_layers:
        rhs -= n_param * (1 - density)
      else:
        rhs += n_param * density
        raw[index] = (np.sum(shape) / np.prod(shape)) ** power_scale
        divisor += raw[index] * n_param
    epsilon = rhs / divisor
    max_raw = np.max([value for value in raw if value is not None])
    if max_raw * epsilon > 1:
      for index, value in enumerate(raw):
        if value == max_raw:
          dense_layers.add(index)
    else:
      break
  return [
    1.0 if index in dense_layers else float(epsilon * raw[index]) for index in range(len(shapes))
  ]


def erk_layer_counts(f: int, num_weights: int, exact: bool = False) -> np.ndarray:
  """Active weights per layer of RigL's initial ERK mask: int32 (4,).

  Reference: d = f / N; each layer with S_l = 1 - density_l > 0 zeroes
  int(S_l * n_l) entries, so n_l - int(S_l n_l) stay and the total rounds *up*
  past f (§E.9, §H 10: w=16 f=20 -> 4+7+7+4 = 22). Layers with S_l <= 0 are
  dense. exact=True apportions the ERK expectations density_l * n_l (which sum
  to f) by largest remainder (ties to the lower layer) so the total is exactly f.
  """
  _check_target(f, num_weights)
  width = width_from_num_weights(num_weights)
  shapes = [weight_shape for weight_shape, _ in mlp.layer_shapes(width)]
  sizes = layer_sizes(width)
  densities = erk_densities(shapes, f / num_weights)
  if not exact:
    out = []
    for density, size in zip(densities, sizes):
      sparsity = 1 - density
      out.append(size if sparsity <= 0 else size - int(sparsity * size))
    return np.asarray(out, np.int32)
  expected = [min(density, 1.0) * size for density, size in zip(densities, sizes)]
  counts = [int(math.floor(value)) for value in expected]
  order = sorted(range(len(sizes)), key=lambda index: (-(expected[index] - counts[index]), index))
  for index in order:
    if sum(counts) >= f:
      break
    if counts[index] < sizes[index]:
      counts[index] += 1
  return np.asarray(counts, np.int32)


def rigl_end_step(total_steps: int) -> int:
  """T_end = int(0.75 * I): topology updates stop at scheduler step T_end (14,625 at I = 19,500)."""
  return int(RIGL_END_FRACTION * total_steps)


def rigl_update_steps(total_steps: int) -> np.ndarray:
  """Global 0-based steps t of RigL updates: s = t + 1 with s % 100 == 0 and s < T_end.

  The scheduler counter s is incremented after every backward pass, so the
  update at s uses the gradient of iteration t = s - 1 (§E.9). 146 at I = 19,500.
  """
  scheduler_steps = np.arange(RIGL_DELTA_T, rigl_end_step(total_steps), RIGL_DELTA_T)
  return scheduler_steps - 1


def rigl_drop_fractions(total_steps: int) -> np.ndarray:
  """alpha_s = alpha/2 * (1 + cos(s pi / T_end)) at every update s (float64, reference order)."""
  end_step = rigl_end_step(total_steps)
  return np.asarray(
    [
      RIGL_ALPHA / 2 * (1 + np.cos((int(step + 1) * np.pi) / end_step))
      for step in rigl_update_steps(total_steps)
    ],
    np.float64,
  )


def rigl_drop_counts(layer_counts, dense, total_steps: int) -> np.ndarray:
  """n_drop[e, l] = int(n_on_l * alpha_e) for sparse layers, 0 for dense ones: int32 (events, 4).

  n_on is conserved by every update (n_keep + n_grow = n_on), so it stays the
  initial ERK count.
  """
  fractions = rigl_drop_fractions(total_steps)
  out = np.zeros((fractions.shape[0], len(layer_counts)), np.int32)
  for event, fraction in enumerate(fractions):
    for layer, (count, is_dense) in enumerate(zip(layer_counts, dense)):
      out[event, layer] = 0 if is_dense else int(int(count) * fraction)
  return out


def rigl_dense_layers(f: int, num_weights: int) -> list[bool]:
  """Which layers ERK makes dense (S_l <= 0): RigL leaves them untouched (§E.9)."""
  width = width_from_num_weights(num_weights)
  shapes = [weight_shape for weight_shape, _ in mlp.layer_shapes(width)]
  return [1 - density <= 0 for density in erk_densities(shapes, f / num_weights)]


# --------------------------------------------------------------------------- SoS (§F.1, §F.2)


def sos_schedule(total_steps: int, begin: float, end: float, freq: float) -> tuple[int, int, int]:
  """(t_begin, t_end, frequency) in steps from fractions of training (§F.1 "adapting").

  Fractions are floored (a 1e-9 guard absorbs float noise such as 0.59 * 19500);
  the frequency is at least one step.
  """

  def steps(fraction):
    return int(math.floor(fraction * total_steps + 1e-9))

  t_begin, t_end, frequency = steps(begin), steps(end), max(1, steps(freq))
  if t_end <= t_begin:
    raise ValueError(f"SoS pruning must begin before it ends: t_begin={t_begin}, t_end={t_end}")
  return t_begin, t_end, frequency


def sos_event_steps(total_steps: int, begin: float, end: float, freq: float) -> np.ndarray:
  """Global steps of SoS mask updates: t_begin <= t <= t_end and t >= last + freq (last from 0).

  tf.contrib.model_pruning runs the update after the train op, with the global
  step already incremented: the update at global step t happens after t
  optimiser steps, i.e. at the start of our 0-based iteration t. With
  t_begin = 0 the first update is at t = freq; with t_begin >= freq it is at
  t_begin. Updates at t >= total_steps (after the last step) are dropped.
  """
  t_begin, t_end, frequency = sos_schedule(total_steps, begin, end, freq)
  out, last = [], 0
  for step in range(1, min(t_end, total_steps - 1) + 1):
    if step >= t_begin and step >= last + frequency:
      out.append(step)
      last = step
  return np.asarray(out, np.int64)


def sos_sparsity(
  step,
  target_sparsity: float,
  t_begin: int,
  t_end: int,
  initial_sparsity: float = 0.0,
  exponent: float = 3.0,
):
  """Zhu-Gupta s_t = s_f + (s_i - s_f) (1 - p)^3, p = clip((t - t_b)/(t_e - t_b), 0, 1).

  Float64 on the host (the device version, magnitude.sos_sparsity, is float32 like TF).
  """
  p = np.clip((np.asarray(step, np.float64) - t_begin) / (t_end - t_begin), 0.0, 1.0)
  return target_sparsity + (initial_sparsity - target_sparsity) * (1 - p) ** exponent


def sos_counts(
  f: int, num_weights: int, total_steps: int, begin: float, end: float, freq: float, scope: str
) -> np.ndarray:
  """Weights to keep at every SoS event, round(n (1 - s_t)) with s_f = 1 - f/N.

  scope "layer": per weight tensor (SoS's layer-wise uniform sparsity), int32
  (events * 4,) event-major; "global": one count over all weights, int32
  (events,). The rounding is that of model_pruning's exact (TPU) variant,
  k = round(size * (1 - sparsity)); the reference histogram threshold of §F.1
  needs no count.
  """
  _check_target(f, num_weights)
  if scope not in ("layer", "global"):
    raise ValueError(f"sos_scope={scope!r} must be 'layer' or 'global'")
  t_begin, t_end, _ = sos_schedule(total_steps, begin, end, freq)
  steps = sos_event_steps(total_steps, begin, end, freq)
  keep = 1 - sos_sparsity(steps, 1 - f / num_weights, t_begin, t_end)  # (events,)
  if scope == "global":
    return np.rint(num_weights * keep).astype(np.int32)
  sizes = np.asarray(layer_sizes(width_from_num_weights(num_weights)), np.float64)
  return np.rint(keep[:, None] * sizes[None, :]).astype(np.int32).reshape(-1)


# --------------------------------------------------------------------------- §E.10 table


def nominal_counts(f: int, num_weights: int, total_steps: int = 19_500) -> dict[str, int]:
  """Each method's last requested count, before the strict-threshold effect (§H examples).

  imp: K_201 (f - 1 by the overshoot); lth: K_4; snip: int(N * (f/N)); grasp:
  N - int(N (1 - keep)); synflow: N - P_100; iter_snip/force: K_10 = int(N
  rho_10); prospr: ceil(N (1 - pr)); rigl: the ERK total.
  """
  n = num_weights
  return {
    "imp": int(imp_counts(f, n, total_steps)[-1]),
    "lth": int(lth_counts(f, n)[-1]),
    "snip": snip_count(f, n),
    "grasp": grasp_count(f, n),
    "synflow": n - synflow_prune_counts(f, n)[-1],
    "iter_snip": force_counts(f, n)[-1],
    "force": force_counts(f, n)[-1],
    "prospr": prospr_count(f, n),
    "rigl": int(erk_layer_counts(f, n).sum()),
  }


def snip_count(f: int, num_weights: int) -> int:
  """SNIP k = int(N * keep_ratio), keep_ratio = f / float(N); kept with >= (§E.3)."""
  return int(num_weights * (f / float(num_weights)))


def grasp_count(f: int, num_weights: int) -> int:
  """GraSP keeps N - R, R = int(N * (1 - keep_ratio)), keep_ratio = 1 - (1 - f/N) (§E.4)."""
  keep_ratio = 1 - (1.0 - f / float(num_weights))
  return num_weights - int(num_weights * (1 - keep_ratio))


def synflow_prune_counts(f: int, num_weights: int) -> list[int]:
  """SynFlow P_i = int(N - f**r_i / N**(r_i - 1)), r_i = i/100, i = 1..100 (§E.5)."""
  n = num_weights
  return [
    int(n - ((f ** ((i + 1.0) / 100.0)) / (n ** ((i + 1.0) / 100.0 - 1.0)))) for i in range(100)
  ]


def synflow_final_count(f: int, num_weights: int) -> int:
  """SynFlow's kept count after its 100 iterations with no ties (f - 1, §E.5).

  With P_i >= 1 the strict threshold at sorted index P_i keeps N - P_i - 1
  (weights pruned earlier score 0 and stay out); with P_i < 1 the reference
  installs an all-ones mask.
  """
  kept = num_weights
  for prune in synflow_prune_counts(f, num_weights):
    kept = min(kept, num_weights - prune - 1) if prune >= 1 else num_weights
  return kept


def force_counts(f: int, num_weights: int, num_steps: int = 10) -> list[int]:
  """Iter-SNIP / FORCE K_x = int(N * exp(-x (-ln(f/N)) / 10)), x = 1..10 (§E.6)."""
  factor = f / float(num_weights)
  return [
    int(num_weights * np.exp(0 - ((x + 1) * (0 - np.log(factor)) / num_steps)))
    for x in range(num_steps)
  ]


def prospr_count(f: int, num_weights: int) -> int:
  """ProsPr keeps ceil(N * (1 - prune_ratio)), prune_ratio = 1 - f/N, by top-k (§E.8)."""
  return math.ceil(num_weights * (1 - (1.0 - f / float(num_weights))))


def final_counts(
  f: int,
  num_weights: int,
  total_steps: int = 19_500,
  count_mode: str = "reference",
  clean: bool = False,
) -> dict[str, int]:
  """Measured final Weight NNZ of each method with no score ties (§E.10).

  reference: imp f-2 (strict + overshoot), lth K_4 - 1, snip int(N f/N) (>=),
  grasp N - R (strict <), synflow N - P_100 - 1 (strict >), iter_snip/force
  K_10 - 1 (strict >), prospr ceil(...) (top-k), rigl the ERK total.
  exact: f for every method (RigL apportions ERK to exactly f). clean only
  changes IMP (no overshoot: f - 1 in reference count mode).
  """
  if count_mode == "exact":
    return {method: f for method in TABLE_METHODS}
  n = num_weights
  return {
    "imp": kept_after_events(imp_counts(f, n, total_steps, clamp=clean), n, strict=True),
    "lth": kept_after_events(lth_counts(f, n), n, strict=True),
    "snip": snip_count(f, n),
    "grasp": grasp_count(f, n),
    "synflow": synflow_final_count(f, n),
    # Iter-SNIP prunes progressively (pruned entries get the minimum saliency).
    "iter_snip": kept_after_events(force_counts(f, n), n, strict=True),
    # FORCE re-scores the dense original every step (pruned weights may revive).
    "force": force_counts(f, n)[-1] - 1,
    "prospr": prospr_count(f, n),
    "rigl": int(erk_layer_counts(f, n).sum()),
  }


def count_table(
  widths, targets, total_steps: int = 19_500, count_mode: str = "reference", clean: bool = False
) -> list[dict]:
  """Rows {w, N, f, <method>: measured final count, <method>_nominal: nominal count} for f < N(w).

  The §E.10 / §H tables generated from the formulas (one row per (w, f)).
  """
  rows = []
  for width in widths:
    n = mlp.num_weights(width)
    for f in targets:
      if not 1 <= f < n:
        continue
      row = {"w": width, "N": n, "f": f}
      row.update(final_counts(f, n, total_steps, count_mode, clean))
      row.update(
        {f"{method}_nominal": value for method, value in nominal_counts(f, n, total_steps).items()}
      )
      rows.append(row)
  return rows


def format_count_table(rows, methods=TABLE_METHODS, nominal: bool = False) -> str:
  """A markdown table of `count_table` rows: measured counts, or nominal ones if nominal=True."""
  keys = [f"{method}_nominal" if nominal else method for method in methods]
  header = "| w | N | f | " + " | ".join(methods) + " |"
  rule = "|" + "---|" * (3 + len(methods))
  lines = [header, rule]
  for row in rows:
    values = [row["w"], row["N"], row["f"]] + [row[key] for key in keys]
    lines.append("| " + " | ".join(str(value) for value in values) + " |")
  return "\n".join(lines)
