r"""Run the combinatorial search (Algorithm 1) into a workdir and print the answer.

  python -m experiments.search --config=experiments/configs/search.py:target=95 --workdir=DIR

Resumable: the same command continues where it stopped. On a batch cluster run
`--num_shards=N --shard_index=i` on N nodes sharing DIR; each shard trains its
part of every level and waits for the others at level boundaries. With
`--distributed`, jax.distributed.initialize() joins several hosts and each
process becomes one shard. Ctrl-C or SIGTERM abandons the chunk in flight (the
search cannot yet be asked to stop between chunks), keeps every committed run
and prints the command that resumes (exit status 130); bad input is one line on
stderr (exit status 2) before anything is created or compiled; --debug shows
its traceback.
"""

import dataclasses
import signal

import jax
from absl import flags
from ml_collections import config_flags

from cubist import specs as spec_ops
from cubist import store as store_ops
from experiments import cli
from search import combinatorial, phases

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file (experiments/configs/search.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the stores and the answer.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Split every level into this many shards.")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "Which shard this process runs.")
_DISTRIBUTED = flags.DEFINE_bool("distributed", False, "Join hosts with jax.distributed.")
flags.mark_flags_as_required(["config", "workdir"])
flags.adopt_module_key_flags(cli)  # --help lists --debug too


def search_config(config) -> phases.SearchConfig:
  fields = config.to_dict()
  for name in ("lrs", "schedules", "phase1_widths"):
    if fields.get(name) is not None:
      fields[name] = tuple(fields[name])
  return phases.SearchConfig(**fields)


def validate(config: phases.SearchConfig) -> None:
  """Everything the search would find wrong later, found before anything is created.

  SearchConfig.validate, then every (lr, schedule) setting as a spec (a
  non-finite lr, a bad schedule or init file) and a phase 1 with no width triple
  to train (a search of zero runs): one-line ValueErrors naming the field.
  """
  config.validate()
  probe = spec_ops.ExperimentSpec(
    seed=0, lr=0.1, epochs=config.epochs, width=config.width, init=config.init
  )
  for lr in config.lrs:
    for schedule in config.schedules:
      spec_ops.validate(dataclasses.replace(probe, lr=lr, schedule=schedule))
  if config.phase1_widths is None and not phases.phase1_levels(config):
    raise ValueError(
      f"phase1_budget={config.phase1_budget} leaves no width triple for phase 1 (the smallest "
      "network has more dense parameters), so the search has no runs; raise it"
    )


def main(argv):
  cli.no_arguments(argv)
  shard_index, num_shards = _SHARD_INDEX.value, _NUM_SHARDS.value
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
    shard_index, num_shards = jax.process_index(), jax.process_count()
  cli.check_shards(shard_index, num_shards)
  config = search_config(_CONFIG.value)
  validate(config)
  workdir = cli.check_workdir(_WORKDIR.value)
  path = store_ops.store_path(workdir, shard_index, num_shards)
  store_ops.check_layout(path)
  store_ops.check_writable(path, f"search-{config.target:g}", config.fingerprint())
  # Search.run cannot be asked to stop between chunks (it does not pass engine.run a
  # `stop`), so Ctrl-C and SIGTERM interrupt it: the chunk in flight is abandoned.
  signal.signal(signal.SIGINT, signal.default_int_handler)
  cli.terminate_as_interrupt()
  created = not workdir.exists()
  try:
    search = combinatorial.Search(config, workdir, shard_index=shard_index, num_shards=num_shards)
    result = search.run()
  except KeyboardInterrupt:
    cli.interrupted(
      f"the chunk in flight was abandoned; {_stored_runs(workdir)} runs are in the stores in "
      f"{workdir} and are kept"
    )
  except BaseException:
    if created:
      cli.remove_if_empty(workdir)
    raise
  print(combinatorial.format_result(result))
  if "model_path" in result:
    print(f"sparsest model: {result['model_path']}")


def _stored_runs(workdir) -> int:
  """How many runs the workdir's store files hold (0 if none can be read)."""
  try:
    return len(store_ops.merge_stores(store_ops.find_stores(workdir)))
  except (ValueError, OSError):
    return 0


if __name__ == "__main__":
  cli.run(main)
