"""The pruning experiment families as lists of specs (METHODS §E.0, §F, §G.2, §G.3).

- overparam (§G.2): random init at widths w, every method, targets f < N(w),
  lr {0.05, 0.1, 0.2} x 3 schedules, one run per configuration.
- fixed (§G.3): an npz initialisation (BENCH-95 or BENCH-995) sliced to the
  optimal width and to 16, the fixed-init f grid, 5 repeats.
- sos (§F): State-of-Sparsity methods at one width: magnitude and random at
  weight targets, VD and L0 over a log grid of strengths (and VD thresholds).
- retrain (§F.5): for every finished run of some methods in another store,
  scratch_e (fresh init, same steps), scratch_b (fresh init, twice the epochs)
  and lottery (the source run's own seed and init, i.e. its original
  initialisation) with the learned mask held fixed.

Every run's seed is a hash of what it is, so a restarted or sharded sweep
trains identical runs. `specs_from_config` is what the binary calls.
"""

from __future__ import annotations

import itertools

import numpy as np

from cubist import mlp
from cubist import store as store_ops
from cubist.specs import RANDOM_INIT, ExperimentSpec, init_id, run_seed
from search.pruning import registry

# The seed salt of every pruning run: the same method and setting gets the same
# seed in whichever family it appears (its exp_id still differs by family).
SEED_SALT = "prune"


def _spec(
  method: str,
  width: int,
  target: int | None,
  lr: float,
  schedule: str,
  repeat: int,
  config,
  strength: float = 0.0,
  threshold: float = 3.0,
  options: tuple = (),
) -> ExperimentSpec:
  init = config.get("init", RANDOM_INIT)
  return ExperimentSpec(
    seed=run_seed(
      SEED_SALT,
      method,
      width,
      target,
      lr,
      schedule,
      repeat,
      init_id(init),
      strength,
      threshold,
      options,
    ),
    lr=float(lr),
    schedule=schedule,
    width=int(width),
    epochs=int(config.epochs),
    init=init,
    method=method,
    target_nnz=None if target is None else int(target),
    count_mode=config.count_mode,
    strength=float(strength),
    threshold=float(threshold),
    method_options=tuple(options),
    family=config.family,
    repeat=int(repeat),
  )


def _integers(config, name: str, low: int) -> tuple[int, ...]:
  """config[name] as a non-empty tuple of integers >= low, or a one-line ValueError."""
  values = config[name]
  if isinstance(values, (int, float, str)):
    values = (values,)
  values = tuple(values)
  if not values:
    raise ValueError(f"config.{name} is empty, so the sweep has no runs; give at least one value")
  for value in values:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
      raise ValueError(f"config.{name}={values}: {value!r} is not an integer >= {low}")
  return values


def check_grid(config) -> None:
  """One-line ValueErrors, before any spec is made, for a grid config that is
  malformed or that expands to no runs, naming the field responsible."""
  for name in ("methods", "lrs", "schedules"):
    if not len(config[name]):
      raise ValueError(f"config.{name} is empty, so the sweep has no runs; give at least one value")
  for name in config.methods:
    if not registry.is_pruning(name):
      raise ValueError(f"unknown pruning method {name!r}; known: {', '.join(registry.names())}")
  widths = _integers(config, "widths", 1)
  targets = _integers(config, "targets", 1)
  repeats = config.repeats
  if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
    raise ValueError(f"config.repeats={repeats!r} must be an integer >= 1 (the sweep has no runs)")
  if min(targets) >= max(mlp.num_weights(w) for w in widths):
    counts = ", ".join(f"N({w})={mlp.num_weights(w)}" for w in widths)
    raise ValueError(
      f"config.targets={targets}: no target is below the weight count of any width in "
      f"config.widths={widths} ({counts}), so the sweep has no runs; lower the targets or "
      "add wider networks"
    )


def grid_specs(config) -> list[ExperimentSpec]:
  """methods x widths x targets (f < N(w)) x lrs x schedules x repeats (+ strengths).

  A config that is malformed or expands to no runs is a one-line ValueError
  naming the field (`check_grid`, and a final check for what empties it later).
  """
  check_grid(config)
  specs = []
  for method, width, target, lr, schedule, repeat in itertools.product(
    config.methods,
    config.widths,
    config.targets,
    config.lrs,
    config.schedules,
    range(config.repeats),
  ):
    if target >= mlp.num_weights(width):
      continue  # §G.2: only where f < N(w)
    uses_strength = registry.get(method).uses_strength
    if uses_strength:
      if target != min(config.targets):
        continue  # sparsity emerges from the strength: one run per strength, no target
      target = None
    strengths = tuple(config.strengths.get(method, (0.0,))) if uses_strength else (0.0,)
    thresholds = config.thresholds if method == "vd" else (3.0,)
    options = tuple(sorted(dict(config.get("method_options", {})).items()))
    for strength, threshold in itertools.product(strengths, thresholds):
      specs.append(
        _spec(
          method, width, target, lr, schedule, repeat, config, strength, threshold, options=options
        )
      )
  if not specs:
    raise ValueError(
      f"config.strengths={dict(config.strengths)} and config.thresholds="
      f"{tuple(config.thresholds)} leave no run of methods {tuple(config.methods)}, so the "
      "sweep has no runs; give at least one strength (and VD threshold) per method"
    )
  return specs


def retrain_specs(config) -> list[ExperimentSpec]:
  """scratch_e / scratch_b / lottery runs for the finished runs of `config.retrain_methods`."""
  repeats = config.repeats
  if isinstance(repeats, bool) or not isinstance(repeats, (int, np.integer)) or repeats < 1:
    raise ValueError(f"config.repeats={repeats!r} must be an integer >= 1 (the sweep has no runs)")
  rows = store_ops.merge_stores(store_ops.find_stores(config.retrain_from))
  rows = [r for r in rows if r["status"] == "ok" and r["method"] in config.retrain_methods]
  if not rows:
    raise ValueError(f"no finished runs of {list(config.retrain_methods)} in {config.retrain_from}")
  specs = []
  for row, kind, repeat in itertools.product(rows, registry.RETRAIN_METHODS, range(config.repeats)):
    source = store_ops.row_spec(row)
    lottery = kind == "lottery"
    if lottery and repeat > 0:
      continue  # the original initialisation is one
    seed = source.seed if lottery else run_seed("retrain", kind, row["exp_id"], repeat)
    specs.append(
      ExperimentSpec(
        seed=seed,
        lr=source.lr,
        schedule=source.schedule,
        width=source.width,
        mask=store_ops.row_masks(row),
        epochs=source.epochs * (2 if kind == "scratch_b" else 1),
        init=source.init,
        method=kind,
        target_nnz=source.target_nnz,
        family="retrain",
        repeat=repeat,
        source_id=row["exp_id"],
        source_method=row["method"],
      )
    )
  return specs


def specs_from_config(config) -> list[ExperimentSpec]:
  """The specs of a prune config (see experiments/configs/prune.py)."""
  if config.family == "retrain":
    return retrain_specs(config)
  return grid_specs(config)


def summary_rows(rows: list[dict]) -> list[dict]:
  """Per (method, width, target, strength, threshold): runs, diverged and failed runs,
  best and median accuracy and measured weight NNZ of the ok runs (None without one).

  Strength and threshold only vary for VD and L0. Diverged and failed runs are
  counted apart: their accuracy is not a result, so it never enters best or
  median (which are None, not nan, when no run of the group is ok).
  """
  groups = {}
  for row in rows:
    key = (
      row["method"],
      row["width"],
      row["target_nnz"],
      row.get("strength") or 0.0,
      row.get("threshold") if row["method"] == "vd" else None,
    )
    groups.setdefault(key, []).append(row)
  out = []
  for (method, width, target, strength, threshold), members in sorted(
    groups.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2] or -1, kv[0][3], kv[0][4] or 0.0)
  ):
    ok = [r for r in members if r["status"] == "ok" and r["accuracy"] is not None]
    accuracy = np.array([r["accuracy"] for r in ok], float)
    setting = (
      ""
      if not strength
      else f"c={strength * 49_982:.3g}" + (f" tau={threshold:g}" if threshold is not None else "")
    )
    out.append(
      dict(
        method=method,
        width=width,
        target_nnz=target,
        setting=setting,
        runs=len(members),
        diverged=sum(r["status"] == "diverged" for r in members),
        failed=sum(r["status"] == "failed" for r in members),
        best=float(accuracy.max()) if ok else None,
        median=float(np.median(accuracy)) if ok else None,
        weight_nnz=sorted({r["weight_nnz"] for r in ok if r["weight_nnz"] is not None}),
      )
    )
  return out
