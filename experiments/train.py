r"""Train a grid of (widths x seeds x learning rates x schedules) into the store.

  python -m experiments.train --config=experiments/configs/train.py --workdir=DIR

Resumable: run the same command again and finished experiments are skipped.
`--num_shards/--shard_index` split the sweep for batch clusters; each shard
writes its own store file in DIR (a workdir keeps the layout it was started
with). Ctrl-C or SIGTERM stops after the chunk in flight is committed and prints
the command that resumes (exit status 130). A mistake in the config, the flags,
an init file, the workdir or its store is one line on stderr (exit status 2)
before anything is created or compiled; --debug shows its traceback.
"""

import itertools

from absl import flags

from cubist import summary
from cubist.specs import ExperimentSpec
from experiments import cli, sweep

flags.adopt_module_key_flags(sweep)  # --help lists the sweep's and the error path's flags
flags.adopt_module_key_flags(cli)


def _grid(config, name: str, kind, description: str) -> tuple:
  """config[name] as a non-empty tuple of `kind` values, or a one-line ValueError."""
  values = config[name]
  if isinstance(values, (str, int, float)):
    values = (values,)
  values = tuple(values)
  if not values:
    raise ValueError(f"config.{name} is empty, so the sweep has no runs; give at least one value")
  for value in values:
    if isinstance(value, bool) or not isinstance(value, kind):
      raise ValueError(f"config.{name}={values}: {value!r} is not {description}")
  return values


def grid_specs(config) -> list[ExperimentSpec]:
  """Every (widths, seed, lr, schedule) combination of the config.

  A malformed grid field, or one that is empty (so the sweep would have no
  runs), is a one-line ValueError naming it; the specs' own validation (in
  the engine) checks the values.
  """
  widths = _grid(config, "widths", (tuple, list), "a triple (d1, d2, d3) of hidden widths")
  for triple in widths:
    if len(triple) != 3 or not all(isinstance(d, int) and not isinstance(d, bool) for d in triple):
      raise ValueError(
        f"config.widths={widths}: {triple!r} is not a triple (d1, d2, d3) of integers"
      )
  seeds = _grid(config, "seeds", int, "an integer seed")
  lrs = _grid(config, "lrs", (int, float), "a number")
  schedules = _grid(config, "schedules", str, "a schedule name")
  return [
    ExperimentSpec(
      seed=int(seed),
      lr=float(lr),
      schedule=schedule,
      width=int(config.width),
      widths=tuple(int(d) for d in triple),
      epochs=int(config.epochs),
      batch_size=int(config.batch_size),
      init=config.init,
      shared_order=bool(config.shared_order),
      family="train",
      repeat=repeat,
    )
    for triple, (repeat, seed), lr, schedule in itertools.product(
      widths, enumerate(seeds), lrs, schedules
    )
  ]


def format_rows(rows) -> str:
  return summary.table(rows, group_by=("d1", "d2", "d3", "lr", "schedule"))


if __name__ == "__main__":
  cli.run(sweep.main(grid_specs, format_rows))
