r"""Run the combinatorial search (Algorithm 1) into a workdir and print the answer.

  python -m experiments.search --config=experiments/configs/search.py:target=95 --workdir=DIR

Resumable: the same command continues where it stopped. On a batch cluster run
`--num_shards=N --shard_index=i` on N nodes sharing DIR; each shard trains its
part of every level and waits for the others at level boundaries. With
`--distributed`, jax.distributed.initialize() joins several hosts and each
process becomes one shard. Ctrl-C or SIGTERM stops after the chunk in flight is
committed (a second Ctrl-C abandons it), keeps every committed run and prints
the command that resumes (exit status 130); bad input is one line on
stderr (exit status 2) before anything is created or compiled; --debug shows
its traceback.
"""

import jax
from absl import flags
from ml_collections import config_flags

from cubist import engine
from cubist import store as store_ops
from experiments import cli
from search import combinatorial, phases, search_result

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
  for name in ("lrs", "phase2_lrs", "schedules", "phase1_widths"):
    if fields.get(name) is not None:
      fields[name] = tuple(fields[name])
  return phases.SearchConfig(**fields)


def main(argv):
  cli.no_arguments(argv)
  shard_index, num_shards = _SHARD_INDEX.value, _NUM_SHARDS.value
  if _DISTRIBUTED.value:
    jax.distributed.initialize()
    shard_index, num_shards = jax.process_index(), jax.process_count()
  cli.check_shards(shard_index, num_shards)
  config = search_config(_CONFIG.value)
  config.validate()  # every setting as a spec, a phase 1 with no triple: one line each
  workdir = cli.check_workdir(_WORKDIR.value)
  path = store_ops.store_path(workdir, shard_index, num_shards)
  store_ops.check_layout(path)
  store_ops.check_writable(path, f"search-{config.target:g}", config.fingerprint())
  stop = cli.StopRequest().install()  # Ctrl-C / SIGTERM: stop after the committed chunk
  created = not workdir.exists()
  try:
    search = combinatorial.Search(
      config, workdir, shard_index=shard_index, num_shards=num_shards, stop=stop
    )
    result = search.run()
  except engine.Interrupted:
    cli.interrupted(f"{_stored_runs(workdir)} runs are in the stores in {workdir} and are kept")
  except KeyboardInterrupt:  # a second Ctrl-C: the chunk in flight was never committed
    cli.interrupted(
      f"the chunk in flight was abandoned; {_stored_runs(workdir)} runs are in the stores in "
      f"{workdir} and are kept"
    )
  except BaseException:
    if created:
      cli.remove_if_empty(workdir)
    raise
  print(search_result.format_result(result))
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
