r"""Train a grid of (widths x seeds x learning rates x schedules) into the store.

  python -m experiments.train --config=experiments/configs/train.py --workdir=DIR

Resumable: run the same command again and finished experiments are skipped.
`--num_shards/--shard_index` split the sweep for batch clusters; each shard
writes its own store file in DIR.
"""

from cubist import devices

devices.use_host_cores()  # before JAX starts: one host device per core

import itertools
import json

from absl import app, flags
from ml_collections import config_flags

from cubist import engine, summary
from cubist.specs import ExperimentSpec

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (see experiments/configs/).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the results store.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Split the sweep into this many shards.")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "Which shard this process runs.")
flags.mark_flags_as_required(["config", "workdir"])


def grid_specs(config) -> list[ExperimentSpec]:
  """Every (widths, seed, lr, schedule) combination of the config."""
  return [
      ExperimentSpec(seed=int(seed), lr=float(lr), schedule=schedule, width=int(config.width),
                     widths=tuple(int(d) for d in widths), epochs=int(config.epochs),
                     batch_size=int(config.batch_size), init=config.init,
                     shared_order=bool(config.shared_order), family=config.name,
                     method="structured")
      for widths, seed, lr, schedule in itertools.product(
          config.widths, config.seeds, config.lrs, config.schedules)]


def main(argv):
  del argv
  config = _CONFIG.value
  try:
    specs = grid_specs(config)
    fingerprint = summary.config_fingerprint(config)
    results = engine.run(specs, _WORKDIR.value, sweep_name=config.name, fingerprint=fingerprint,
                         shard_index=_SHARD_INDEX.value, num_shards=_NUM_SHARDS.value)
  except ValueError as error:
    raise SystemExit(f"error: {error}") from None
  rows = results.rows()
  print(summary.table(rows, group_by=("d1", "d2", "d3", "lr", "schedule")))
  print(f"\n{len(rows)} runs in {results.path}")


if __name__ == "__main__":
  app.run(main)
