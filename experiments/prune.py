r"""Run a pruning experiment family into the store and print per-method results.

  python -m experiments.prune --config=experiments/configs/prune.py:overparam,quick --workdir=DIR

Resumable: run the same command again and finished experiments are skipped.
`--num_shards/--shard_index` split the sweep for batch clusters. Ctrl-C or
SIGTERM stops after the chunk in flight is committed and prints the command that
resumes (exit status 130); bad input is one line on stderr (exit status 2)
before anything is created or compiled; --debug shows its traceback.
"""

from absl import flags

from experiments import cli, sweep
from search.pruning import families

flags.adopt_module_key_flags(sweep)  # --help lists the sweep's and the error path's flags
flags.adopt_module_key_flags(cli)


def _percent(value) -> str:
  """An accuracy as a percentage, or "-" where no run of the group is ok (never nan%)."""
  return "-" if value is None else f"{100 * value:.2f}%"


def format_summary(rows) -> str:
  """One line per (method, width, target): runs, diverged and failed runs, best and
  median accuracy of the ok runs, their weight NNZ."""
  lines = [
    f"{'method':>10} {'width':>5} {'target':>6} {'setting':>16} {'runs':>4} "
    f"{'diverged':>8} {'failed':>6} {'best':>7} {'median':>7}  weight_nnz"
  ]
  for r in families.summary_rows(rows):
    nnz = r["weight_nnz"]
    span = "-" if not nnz else str(nnz[0]) if len(nnz) == 1 else f"{nnz[0]}-{nnz[-1]}"
    lines.append(
      f"{r['method']:>10} {r['width']:>5} {str(r['target_nnz']):>6} "
      f"{r['setting']:>16} {r['runs']:>4} {r['diverged']:>8} "
      f"{r['failed']:>6} {_percent(r['best']):>7} {_percent(r['median']):>7}  {span}"
    )
  return "\n".join(lines)


if __name__ == "__main__":
  cli.run(sweep.main(families.specs_from_config, format_summary))
