"""What a search leaves behind: its answer's model file and its printed summary.

`save_model` writes sparsest_<target>.npz from the store (the winning run's
stored weights and masks, and its initial weights drawn again from its spec:
nothing is retrained); `format_result` prints search.json's answer, per-level
table and (for the robust rule) intervals and the seed allocation's saving;
`jsonable` and `public_row` make rows fit for search.json.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from cubist import chunks, mlp
from cubist import masks as mask_ops
from cubist import store as store_ops
from cubist.mlp import Layer
from search.phases import SearchConfig


def public_row(row: dict) -> dict:
  """A row without its binary columns (for search.json)."""
  return {k: v for k, v in row.items() if k not in ("mask", "params")}


def jsonable(value):
  if isinstance(value, (np.integer,)):
    return int(value)
  if isinstance(value, (np.floating,)):
    return float(value)
  if isinstance(value, (tuple, set)):
    return list(value)
  raise TypeError(f"cannot serialise {type(value)}")


def save_model(config: SearchConfig, answer: dict, row: dict, workdir) -> Path:
  """Save the winning run's masks, initial and trained weights (from the store) as an npz.

  Nothing is retrained: the trained weights and masks are the store row's, the
  initial weights are drawn again from the row's spec (no training involved).
  `init_*` holds them at the network's occupied width, zero-padded to the full width.
  row: the winner's full store row (weights included).
  """
  spec = store_ops.row_spec(row)
  padded = mask_ops.occupied_width(spec.masks())
  initial = _first(chunks.initial_params([spec], padded))
  arrays = {}
  for prefix, tree in (
    ("init", mlp.pad_params(initial, config.width)),
    ("trained", store_ops.row_params(row, config.width)),
    ("mask", store_ops.row_masks(row)),
  ):
    arrays.update({f"{prefix}_{k}": v for k, v in mlp.to_numpy_dict(tree).items()})
  arrays = {k: (v.astype(bool) if k.startswith("mask_") else v) for k, v in arrays.items()}
  path = Path(workdir) / f"sparsest_{config.target:g}.npz"
  np.savez(
    path,
    **arrays,
    accuracy=row["accuracy"],
    seed=row["seed"],
    lr=row["lr"],
    schedule=row["schedule"],
    mask_config=row["mask_config"],
    exp_id=row["exp_id"],
    weight_nnz=answer["weight_nnz"],
    model_nnz=answer["model_nnz"],
  )
  return path


def _first(tree):
  """The first experiment of a stacked (leading-axis) Params, as numpy."""
  return tuple(Layer(np.asarray(layer.weight[0]), np.asarray(layer.bias[0])) for layer in tree)


def format_result(result: dict) -> str:
  """The printed summary: phase-1 answer, phase-2 per-level table, sparsest model.

  Under the robust rule, "reaches" means "reaches with probability >= q": the
  answers add their best setting's success probability, the level table how
  many masks are still undecided (unreach: of those, how many could not be above q
  within max_seeds, so got no more seeds) and the level's most convincing mask's
  interval, and a last line the seed allocation's saving.
  """
  lines = []
  phase1 = result["phase1"]
  config = result["config"]
  target = config["target"]
  robust = config.get("rule") == "robust"
  reaches = f"reaches {target:g}" + (f" with probability >= q={config['q']:g}" if robust else "")
  if phase1.get("widths") is None:
    lines.append(f"phase 1: no width triple {reaches}")
    return "\n".join(lines + _allocation_lines(result))
  lines.append(
    f"phase 1: widths {tuple(phase1['widths'])}"
    + (
      f" (dense params {phase1.get('dense_params')}, best accuracy "
      f"{phase1.get('accuracy', float('nan')):.4f})"
      if not phase1.get("given")
      else " (given)"
    )
  )
  if robust and "success" in phase1:
    lines.append(f"  {_success_text(phase1['success'], config)}")
  if config.get("phase1_only"):
    lines.append("phase 2 not run (phase1_only)")
    return "\n".join(lines + _allocation_lines(result))
  for attempt in result.get("phase2_attempts", [])[:-1]:
    lines.append(
      f"phase 2 inside {tuple(attempt['widths'])}: no mask {reaches}; "
      "phase-1 fallback to the next reaching widths"
    )
  phase2 = result.get("phase2", {})
  lines.append(f"phase 2 levels (widths {tuple(phase2.get('widths') or phase1['widths'])}):")
  lines.append(
    f"  {'weight_nnz':>10} {'model_nnz':>9} {'masks':>6} {'runs':>6} "
    f"{'best_acc':>9} {'reached':>7}"
    + (f" {'undecided':>9} {'unreach':>7} {'k/n':>6} {'interval':>13}" if robust else "")
    + "  best mask"
  )
  for level in phase2.get("levels", []):
    extra = ""
    if robust:
      best = level["best_success"]
      extra = (
        f" {level['undecided']:>9} {level.get('out_of_reach', '-'):>7} "
        f"{best['successes']:>3}/{best['trials']:<2} "
        f"[{best['lower']:.3f},{best['upper']:.3f}]"
      )
    lines.append(
      f"  {level['weight_nnz']:>10} {level['model_nnz']:>9} {level['masks']:>6} "
      f"{level['runs']:>6} {level['best_accuracy']:>9.4f} {level['reached']:>7}{extra}"
      f"  {level['best_mask_config']}"
    )
  if phase2.get("mask_config"):
    lines.append(
      f"sparsest model reaching {target:g}: widths {tuple(phase2['widths'])}, masks "
      f"{phase2['mask_config']}, accuracy {phase2['accuracy']:.4f}, weight nnz "
      f"{phase2['weight_nnz']}, model nnz {phase2['model_nnz']}"
    )
    if robust:
      lines.append(f"  {_success_text(phase2['success'], config)}")
  elif phase2.get("stopped"):
    stopped = phase2["stopped"]
    lines.append(
      f"phase 2: no mask {reaches} below weight nnz {stopped['weight_nnz']}, where it stopped "
      f"({stopped['mask_triples']:,} mask triples > phase2_max_masks="
      f"{config['phase2_max_masks']:,}){_dense_answer(phase1)}"
    )
  else:
    lines.append(f"phase 2: no mask {reaches}{_dense_answer(phase1)}")
  return "\n".join(lines + _allocation_lines(result))


def _dense_answer(phase1: dict) -> str:
  """When phase 2 finds no mask, phase 1's dense network stays the sparsest model the
  search found to reach the target (given widths: the sparsest known; this search did
  not train them dense)."""
  widths = tuple(phase1["widths"])
  counts = (
    f"weight nnz {mask_ops.dense_weight_count(widths)}, "
    f"model nnz {mask_ops.dense_parameter_count(widths)}"
  )
  if phase1.get("given"):
    return (
      f"; the dense network at the given widths {widths} ({counts}) is the sparsest model "
      "known to reach it"
    )
  return f"; the sparsest model found is phase 1's dense network {widths}, {counts}"


def _success_text(success: dict, config: dict) -> str:
  """One line: k of n runs of the best setting reach the target, with the interval."""
  return (
    f"{success['successes']} of {success['trials']} seeds reach {config['target']:g} at lr "
    f"{success['lr']:g}, {success['schedule']}: p {success['estimate']:.3f}, "
    f"{100 * config['confidence']:g}% interval [{success['lower']:.3f}, {success['upper']:.3f}]"
    f" (q={config['q']:g})"
  )


def _allocation_lines(result: dict) -> list[str]:
  """The robust search's seed-allocation line (none for the reference rule)."""
  allocation = result.get("allocation")
  if not allocation:
    return []
  return [
    f"seed allocation: {allocation['runs']} runs, {allocation['cap_runs']} with max_seeds="
    f"{result['config']['max_seeds']} for every setting (saving "
    f"{100 * allocation['saving']:.0f}%)"
  ]
