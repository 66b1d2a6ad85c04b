r"""Run a pruning experiment family into the store and print per-method results.

  python -m experiments.prune --config=experiments/configs/prune.py:overparam,quick --workdir=DIR

Resumable: run the same command again and finished experiments are skipped.
`--num_shards/--shard_index` split the sweep for batch clusters.
"""

from cubist import devices

devices.use_host_cores()  # before JAX starts: one host device per core

from absl import app, flags
from ml_collections import config_flags

from cubist import engine, summary
from search.pruning import families

_CONFIG = config_flags.DEFINE_config_file("config", None, "Config file (see experiments/configs/).")
_WORKDIR = flags.DEFINE_string("workdir", None, "Directory for the results store.")
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Split the sweep into this many shards.")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "Which shard this process runs.")
flags.mark_flags_as_required(["config", "workdir"])


def format_summary(rows) -> str:
  """One line per (method, width, target): runs, best and median accuracy, weight NNZ."""
  lines = [f"{'method':>10} {'width':>5} {'target':>6} {'setting':>16} {'runs':>4} "
           f"{'failed':>6} {'best':>7} {'median':>7}  weight_nnz"]
  for r in families.summary_rows(rows):
    nnz = r["weight_nnz"]
    span = "-" if not nnz else str(nnz[0]) if len(nnz) == 1 else f"{nnz[0]}-{nnz[-1]}"
    lines.append(f"{r['method']:>10} {r['width']:>5} {str(r['target_nnz']):>6} "
                 f"{r['setting']:>16} {r['runs']:>4} "
                 f"{r['failed']:>6} {100 * r['best']:>6.2f}% {100 * r['median']:>6.2f}%  {span}")
  return "\n".join(lines)


def main(argv):
  del argv
  config = _CONFIG.value
  try:
    specs = families.specs_from_config(config)
    results = engine.run(specs, _WORKDIR.value, sweep_name=config.name,
                         fingerprint=summary.config_fingerprint(config),
                         shard_index=_SHARD_INDEX.value, num_shards=_NUM_SHARDS.value)
  except ValueError as error:
    raise SystemExit(f"error: {error}") from None
  rows = results.rows()
  print(format_summary(rows))
  print(f"\n{len(rows)} runs in {results.path}")


if __name__ == "__main__":
  app.run(main)
