r"""Run the combinatorial search (Algorithm 1) into a workdir and print the answer.

  python -m experiments.search --config=experiments/configs/search.py:target=95 --workdir=DIR

Resumable: the same command continues where it stopped. On a batch cluster run
`--num_shards=N --shard_index=i` on N nodes sharing DIR; each shard trains its
part of every level and waits for the others at level boundaries. With
`--distributed`, jax.distributed.initialize() joins several hosts and each
process becomes one shard.
"""

from cubist import devices

devices.use_host_cores()  # before JAX starts: one host device per core

import sys

from absl import app, flags
from ml_collections import config_flags

from search import combinatorial, phases

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file (experiments/configs/search.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the stores and the answer.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Split every level into this many shards.")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "Which shard this process runs.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Join hosts with jax.distributed.")
flags.mark_flags_as_required(["config", "workdir"])


def search_config(config) -> phases.SearchConfig:
  fields = config.to_dict()
  for name in ("lrs", "schedules", "phase1_widths"):
    if fields.get(name) is not None:
      fields[name] = tuple(fields[name])
  return phases.SearchConfig(**fields)


def main(argv):
  del argv
  shard_index, num_shards = _SHARD_INDEX.value, _NUM_SHARDS.value
  if _DISTRIBUTED.value:
    import jax

    jax.distributed.initialize()
    shard_index, num_shards = jax.process_index(), jax.process_count()
  try:
    search = combinatorial.Search(
      search_config(_CONFIG.value), _WORKDIR.value, shard_index=shard_index, num_shards=num_shards
    )
    result = search.run()
  except ValueError as error:
    sys.exit(f"error: {error}")
  print(combinatorial.format_result(result))
  if "model_path" in result:
    print(f"sparsest model: {result['model_path']}")


if __name__ == "__main__":
  app.run(main)
