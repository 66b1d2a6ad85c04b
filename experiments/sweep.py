"""What the sweep binaries (train, prune) share: their flags and their main.

A sweep binary turns its config into specs, trains them into the workdir's
store through the engine (resumable, shardable) and prints a summary table.
Every mistake in the config, the flags, the workdir or the store is one line
(experiments/cli.py) before anything compiles and before the workdir changes:
the whole sweep is expanded and validated first, and a sweep of zero runs is
refused. Ctrl-C or SIGTERM stops after the chunk in flight is committed and
prints the command that resumes.
"""

from __future__ import annotations

from typing import Callable

from absl import flags
from ml_collections import config_flags

from cubist import engine, summary
from cubist import store as store_ops
from experiments import cli
from search.pruning import registry

CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file (see experiments/configs/).", lock_config=True
)
WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the results store.")
NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Split the sweep into this many shards.")
SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "Which shard this process runs.")
flags.mark_flags_as_required(["config", "workdir"])


def main(build_specs: Callable, format_rows: Callable[[list[dict]], str]) -> Callable:
  """An absl main: `build_specs(config)` trained into the store, `format_rows(rows)` printed.

  Run it with `cli.run`, which turns bad input into one line and exit status 2.
  """

  def run(argv):
    cli.no_arguments(argv)
    config = CONFIG.value
    shard_index, num_shards = cli.check_shards(SHARD_INDEX.value, NUM_SHARDS.value)
    workdir = cli.check_workdir(WORKDIR.value)
    specs = build_specs(config)
    if not specs:
      raise cli.UserError(
        "config",
        cli.config_argument(),
        "the sweep expands to zero runs",
        "check the config fields that list its grid",
      )
    fingerprint = summary.config_fingerprint(config)
    path = store_ops.store_path(workdir, shard_index, num_shards)
    stop = cli.StopRequest().install()
    try:
      with engine.run(
        specs,
        workdir,
        sweep_name=config.name,
        fingerprint=fingerprint,
        shard_index=shard_index,
        num_shards=num_shards,
        methods=registry.get,
        stop=stop,
      ) as results:
        rows = results.rows()
    except engine.Interrupted as stopped:
      if stopped.remaining:
        with store_ops.StoreReader(path, missing_ok=True) as results:
          stored = results.count()
        cli.interrupted(
          f"{stopped.committed} runs committed in this session ({stored} in {path}), "
          f"{stopped.remaining} still to train"
        )
      with store_ops.StoreReader(path, missing_ok=True) as results:
        rows = results.rows()  # stopped after the last chunk: the sweep is complete
    except KeyboardInterrupt:  # a second Ctrl-C: the chunk in flight was never committed
      with store_ops.StoreReader(path, missing_ok=True) as results:
        stored = results.count()
      cli.interrupted(f"the chunk in flight was abandoned; {stored} runs are kept in {path}")
    print(format_rows(rows))
    print(f"\n{len(rows)} runs in {path}")

  return run
