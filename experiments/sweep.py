"""What the sweep binaries (train, prune) share: their flags and their main.

A sweep binary turns its config into specs, trains them into the workdir's
store through the engine (resumable, shardable) and prints a summary table.
"""

from __future__ import annotations

from typing import Callable

from absl import flags
from ml_collections import config_flags

from cubist import engine, summary
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

  Bad input (a ValueError from the specs, the engine or the store) is a one-line error.
  """

  def run(argv):
    del argv
    config = CONFIG.value
    try:
      specs = build_specs(config)
      with engine.run(
        specs,
        WORKDIR.value,
        sweep_name=config.name,
        fingerprint=summary.config_fingerprint(config),
        shard_index=SHARD_INDEX.value,
        num_shards=NUM_SHARDS.value,
        methods=registry.get,
      ) as results:
        rows = results.rows()
        path = results.path
    except ValueError as error:
      raise SystemExit(f"error: {error}") from None
    print(format_rows(rows))
    print(f"\n{len(rows)} runs in {path}")

  return run
