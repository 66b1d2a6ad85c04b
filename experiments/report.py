r"""Write the HTML report of one or more result stores.

  python -m experiments.report --workdir=DIR [--workdir=DIR ...] [--reproduce=N]
      [--reproduce_tolerance=0.005]

Writes FIRST_DIR/report/index.html (or --out), with PNG images and one CSV per
table beside it. Each workdir is a store of one sweep (a search, a pruning
family, retraining); their rows are combined. Models are drawn from the
weights the store keeps: nothing is retrained. `--reproduce=N` retrains N
stored runs from their stored specs, in their stored layouts, and checks that
their weights come out bit for bit where the stored bits are comparable on
this machine (portable arithmetic of its CPU class and jaxlib, or the same
machine: cubist.machine), else that their accuracy is within
--reproduce_tolerance (a section of the page says which, per run). Runs of
another training semantics are listed, not retrained. Stores are opened read-only, so a store
in a read-only place (copied off a cluster) is read where it lies; the page
then needs an --out it can write. Bad input (no store, incompatible shards, a
target outside (0, 100], an output folder that cannot be written) is a
one-line error.
"""

import math
from pathlib import Path

from absl import flags

from experiments import cli
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
  "Retrain this many stored runs (the drawn models first) and check that their weights "
  "come out bit for bit (or, where the stored bits are machine-specific and from another "
  "machine, their accuracy within --reproduce_tolerance).",
  lower_bound=0,
)
_REPRODUCE_TOLERANCE = flags.DEFINE_float(
  "reproduce_tolerance",
  report.models.TOLERANCE,
  "With --reproduce: the largest accuracy difference (a fraction: 0.005 is half a "
  "percentage point) that passes for a run whose bits cannot be compared here "
  "(machine-specific bits trained on another machine).",
  lower_bound=0,
  upper_bound=1,
)
flags.mark_flags_as_required(["workdir"])
flags.adopt_module_key_flags(cli)  # --help lists --debug too


def targets(texts) -> list[float]:
  """--targets as fractions; each must be a number in (0, 100] percent."""
  if not texts:
    raise cli.UserError("flag", "--targets=", "no target given", "e.g. --targets=95,99.5")
  values = []
  for text in texts:
    try:
      value = float(text)
    except ValueError:
      value = math.nan
    if not (math.isfinite(value) and 0 < value <= 100):
      raise cli.UserError(
        "flag",
        f"--targets={','.join(texts)}",
        f"{text!r} is not an accuracy in (0, 100] percent",
        "e.g. --targets=95,99.5",
      )
    values.append(value / 100)
  return values


def output_folder(workdirs, out) -> Path | None:
  """Check that the page's folder can be written (created) before reading anything."""
  if out is not None:
    return cli.check_writable_dir(Path(out), "output folder", "--out")
  first = Path(workdirs[0])
  if not first.is_dir():
    return None  # the report says what is wrong with the workdir
  try:
    return cli.check_writable_dir(first / "report", "output folder", "--out")
  except cli.UserError as error:
    raise cli.UserError(
      error.what, error.where, error.why, "pass --out=DIR, a writable folder for the page"
    ) from None


def main(argv):
  cli.no_arguments(argv)
  fractions = targets(_TARGETS.value)
  for workdir in _WORKDIR.value:
    cli.check_readable_dir(workdir, "workdir", "--workdir")
  output_folder(_WORKDIR.value, _OUT.value)
  path = report.build_report(
    _WORKDIR.value,
    out_dir=_OUT.value,
    init_dir=_INIT_DIR.value,
    targets=fractions,
    reproduce=_REPRODUCE.value,
    reproduce_tolerance=_REPRODUCE_TOLERANCE.value,
  )
  print(f"report: {path}")


if __name__ == "__main__":
  cli.run(main)
