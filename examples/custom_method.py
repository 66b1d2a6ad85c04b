"""A pruning method of your own, registered, swept and set against the sparsest network.

    python -m examples.custom_method --workdir=/tmp/custom            # about 2 minutes, 2 CPUs

The method keeps the f largest initial weights (magnitude pruning at
initialisation) and trains them: one `at_init` hook of pure JAX on ONE
experiment; the trainer vmaps it over thousands. It is registered beside the
built-in methods, run on a small sweep of targets and seeds, and compared in
the report with the combinatorial search's sparsest model.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import jax.numpy as jnp

import cubist
from search import combinatorial, phases, report, search_result
from search.pruning import registry, select


def keep_largest_at_init(key, params, masks, x, y, hyper, static):
  """Keep the hyper.target_nnz largest |initial weights|; biases by the bias rule."""
  scores = jnp.abs(select.flat_weights(params))
  valid = select.flat_weights(masks).astype(bool)
  keep = select.keep_top_k(scores, hyper.target_nnz, valid=valid)
  new_masks = select.masks_from_flat(keep, params)
  return select.apply_weight_keep(params, new_masks), new_masks


MAGNITUDE_AT_INIT = cubist.Method(
  "magnitude_at_init", at_init=keep_largest_at_init, description="largest |W0|, then train"
)


def main(workdir: Path, epochs: int, width: int, max_width: int, target: float) -> Path:
  methods = registry.default().register(MAGNITUDE_AT_INIT)
  specs = [
    cubist.ExperimentSpec(
      seed=100 * f + repeat,
      lr=0.1,
      width=width,
      epochs=epochs,
      method=MAGNITUDE_AT_INIT.name,
      target_nnz=f,
      family="custom",
      repeat=repeat,
    )
    for f in (10, 15, 20)
    for repeat in range(4)
  ]
  cubist.run(specs, workdir / "custom", methods=methods.get).close()
  config = phases.SearchConfig(
    target=target, max_width=max_width, epochs=epochs, schedules=("constant",)
  )
  result = combinatorial.Search(config, workdir / "search").run()
  print(search_result.format_result(result))
  return report.build_report([workdir / "search", workdir / "custom"], targets=(target,))


if __name__ == "__main__":
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--workdir", type=Path, default=Path("/tmp/cubist_custom"))
  parser.add_argument("--epochs", type=int, default=10)
  parser.add_argument("--width", type=int, default=4)
  parser.add_argument("--max_width", type=int, default=3, help="the search's widths 1..this")
  parser.add_argument("--target", type=float, default=0.7, help="accuracy to reach, in (0, 1]")
  args = parser.parse_args()
  print(f"report: {main(args.workdir, args.epochs, args.width, args.max_width, args.target)}")
