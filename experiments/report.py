r"""Write the HTML report of one or more result stores.

  python -m experiments.report --workdir=DIR [--workdir=DIR ...] [--reproduce=N]

Writes FIRST_DIR/report/index.html (or --out), with PNG images and one CSV per
table beside it. Each workdir is a store of one sweep (a search, a pruning
family, retraining); their rows are combined. Models are drawn from the
weights the store keeps: nothing is retrained. `--reproduce=N` retrains N
stored runs from their stored specs and checks that their weights come out
bit for bit (a section of the page). Bad input (no store, incompatible
shards) is a one-line error.
"""

from cubist import devices

devices.use_host_cores()  # before JAX starts: one host device per core

import sys

from absl import app, flags

from search import report

_WORKDIR = flags.DEFINE_multi_string("workdir", None, "A result-store directory (repeatable).")
_OUT = flags.DEFINE_string("out", None, "Output directory (default: FIRST_WORKDIR/report).")
_INIT_DIR = flags.DEFINE_string(
  "init_dir", "../shared/data", "Directory of the npz initialisations the runs name."
)
_TARGETS = flags.DEFINE_list(
  "targets", ["95", "99.5"], "Accuracy targets in percent (the searches' targets are added)."
)
_REPRODUCE = flags.DEFINE_integer(
  "reproduce",
  0,
  "Retrain this many stored runs (the drawn "
  "models first) and check that their weights come out bit for "
  "bit.",
  lower_bound=0,
)
flags.mark_flags_as_required(["workdir"])


def main(argv):
  if len(argv) > 1:
    sys.exit(f"error: unexpected arguments {argv[1:]}")
  try:
    targets = [float(t) / 100 for t in _TARGETS.value]
    path = report.build_report(
      _WORKDIR.value,
      out_dir=_OUT.value,
      init_dir=_INIT_DIR.value,
      targets=targets,
      reproduce=_REPRODUCE.value,
    )
  except (ValueError, OSError) as error:
    sys.exit(f"error: {error}")
  print(f"report: {path}")


if __name__ == "__main__":
  app.run(main)
