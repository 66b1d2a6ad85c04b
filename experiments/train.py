r"""Train a grid of (widths x seeds x learning rates x schedules) into the store.

  python -m experiments.train --config=experiments/configs/train.py --workdir=DIR

Resumable: run the same command again and finished experiments are skipped.
`--num_shards/--shard_index` split the sweep for batch clusters; each shard
writes its own store file in DIR.
"""

from cubist import devices

devices.use_host_cores()  # before JAX starts: one host device per core

import itertools

from absl import app

from cubist import summary
from cubist.specs import ExperimentSpec
from experiments import sweep


def grid_specs(config) -> list[ExperimentSpec]:
  """Every (widths, seed, lr, schedule) combination of the config."""
  return [
    ExperimentSpec(
      seed=int(seed),
      lr=float(lr),
      schedule=schedule,
      width=int(config.width),
      widths=tuple(int(d) for d in widths),
      epochs=int(config.epochs),
      batch_size=int(config.batch_size),
      init=config.init,
      shared_order=bool(config.shared_order),
      family="train",
      repeat=repeat,
    )
    for widths, (repeat, seed), lr, schedule in itertools.product(
      config.widths, enumerate(config.seeds), config.lrs, config.schedules
    )
  ]


def format_rows(rows) -> str:
  return summary.table(rows, group_by=("d1", "d2", "d3", "lr", "schedule"))


if __name__ == "__main__":
  app.run(sweep.main(grid_specs, format_rows))
