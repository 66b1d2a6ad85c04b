r"""Run a pruning experiment family into the store and print per-method results.

  python -m experiments.prune --config=experiments/configs/prune.py:overparam,quick --workdir=DIR

Resumable: run the same command again and finished experiments are skipped.
`--num_shards/--shard_index` split the sweep for batch clusters.
"""

from cubist import devices

devices.use_host_cores()  # before JAX starts: one host device per core

from absl import app

from experiments import sweep
from search.pruning import families


def format_summary(rows) -> str:
  """One line per (method, width, target): runs, best and median accuracy, weight NNZ."""
  lines = [
    f"{'method':>10} {'width':>5} {'target':>6} {'setting':>16} {'runs':>4} "
    f"{'failed':>6} {'best':>7} {'median':>7}  weight_nnz"
  ]
  for r in families.summary_rows(rows):
    nnz = r["weight_nnz"]
    span = "-" if not nnz else str(nnz[0]) if len(nnz) == 1 else f"{nnz[0]}-{nnz[-1]}"
    lines.append(
      f"{r['method']:>10} {r['width']:>5} {str(r['target_nnz']):>6} "
      f"{r['setting']:>16} {r['runs']:>4} "
      f"{r['failed']:>6} {100 * r['best']:>6.2f}% {100 * r['median']:>6.2f}%  {span}"
    )
  return "\n".join(lines)


if __name__ == "__main__":
  app.run(sweep.main(families.specs_from_config, format_summary))
