"""Pruning experiment families (METHODS §E, §F, §G.2, §G.3).

  python -m experiments.prune --config=experiments/configs/prune.py:overparam --workdir=DIR

Variants, comma-separated after the file name (one family, then modifiers):
  overparam        §G.2: random init, widths 3..8, 16, 32, 64, 128, 256, targets
                   15..26, 30, ..., 65 (f < N(w)), lr {0.05, 0.1, 0.2} x 3 schedules,
                   the nine methods of paper (1), one run each (18,954 runs in the
                   reference; hours on a 2-core CPU, `make bench` prints the projection).
  fixed=PATH       §G.3: an npz init (../shared/data/bench95_init.npz), at width=W
                   (the optimal width of the fixed-init search, default 4) and 16, the
                   fixed-init f grid of target=95|99.5, 5 repeats.
  sos              §F: magnitude and random (layer-wise, Zhu-Gupta schedule) at weight
                   targets, VD and L0 over a log grid of strengths c / 49,982, VD
                   thresholds tau in {0, 0.5, ..., 5}; width 16.
  study            every method at w = 16, f = 40, 14 seeds x 9 settings (VD and L0 at two
                   strengths each): the per-method table of the README (~25 min, 2 cores).
  retrain=DIR      §F.5: scratch_e, scratch_b and lottery for every finished run of
                   retrain_methods (default magnitude) in DIR's store.
Modifiers:
  quick            2 epochs, few widths/targets, one lr and schedule: minutes on 2 cores.
  methods=a+b      only these methods (names from search.pruning.registry).
  exact            count_mode="exact" (exactly f kept, ties by index) instead of the
                   reference's measured counts (§E.10).
  clean            the clean variants of the quirks with one (§H 1, 7).

Expected: quick overparam, about 5 minutes on a 2-core CPU (36 runs, mostly
compilation), every method's row in the printed table; the full family's
accuracies at w = 16, f = 40 are in the README.
"""

import ml_collections

from experiments.configs.common import integer, number, parse_options, path
from search import grids
from search.pruning import registry, variational

PAPER = registry.PAPER_METHODS
SOS = registry.SOS_METHODS
KNOWN = {
  "overparam",
  "fixed",
  "sos",
  "study",
  "retrain",
  "quick",
  "methods",
  "exact",
  "clean",
  "target",
  "width",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = parse_options(arg, KNOWN, "prune")
  families = [f for f in ("overparam", "fixed", "sos", "study", "retrain") if f in options] or [
    "overparam"
  ]
  if len(families) > 1:
    raise ValueError(
      f"prune config: choose one family, not {families}; e.g. prune.py:{families[0]},quick"
    )
  quick = "quick" in options
  config = ml_collections.ConfigDict()
  config.family = families[0]
  config.name = config.family + ("_quick" if quick else "")
  config.epochs = 2 if quick else 50
  config.count_mode = "exact" if "exact" in options else "reference"
  config.method_options = {"clean": True} if "clean" in options else {}
  config.init = "random"
  config.lrs = (0.1,) if quick else grids.PRUNING_LRS
  config.schedules = ("cosine",) if quick else grids.SCHEDULES
  config.repeats = 1
  config.strengths = {}
  config.thresholds = (3.0,)
  config.retrain_from = ""
  config.retrain_methods = ("magnitude",)
  if config.family == "overparam":
    config.methods = PAPER
    config.widths = (4, 16) if quick else grids.OVERPARAM_WIDTHS
    config.targets = (20, 40) if quick else grids.OVERPARAM_TARGETS
  elif config.family == "fixed":
    config.methods = PAPER
    config.init = path(options, "fixed", "prune", "fixed=../shared/data/bench95_init.npz")
    target = 0.995 if number(options, "target", 95, "prune") > 99 else 0.95
    optimal = integer(options, "width", 4, "prune")
    config.widths = (optimal,) if quick else (optimal, 16)
    config.targets = (
      ((15, 20) if target < 0.99 else (20, 30)) if quick else (grids.FIXED_TARGETS[target])
    )
    config.repeats = 1 if quick else grids.FIXED_REPEATS
  elif config.family == "sos":
    config.methods = SOS
    config.widths = (16,)
    config.targets = (40, 140) if quick else grids.SOS_TARGETS  # 95..50% sparse
    # VD / L0 strengths c / N_train on log grids (§F.3, J.11: a proposal for our scale,
    # calibrated in search.pruning.variational.proposed_strengths).
    if quick:
      config.strengths = {"vd": (1 / 49_982, 100 / 49_982), "l0": (100 / 49_982, 1000 / 49_982)}
    else:
      config.strengths = {
        name: tuple(float(v) for v in variational.proposed_strengths(name)) for name in ("vd", "l0")
      }
    config.thresholds = (
      (3.0,) if quick else tuple(float(t) for t in variational.PROPOSED_THRESHOLDS)
    )
  elif config.family == "study":
    config.methods = PAPER + SOS
    config.widths = (16,)
    config.targets = (40,)
    config.repeats = 2 if quick else 14  # 14 x 9 settings = 126 runs: one chunk of 128
    config.strengths = {"vd": (3 / 49_982, 30 / 49_982), "l0": (300 / 49_982, 1000 / 49_982)}
  else:
    config.methods = ()
    config.widths = ()
    config.targets = ()
    config.retrain_from = path(options, "retrain", "prune", "retrain=/tmp/prune_overparam")
    config.repeats = 1 if quick else 3
  if "methods" in options:
    config.methods = tuple(options["methods"].split("+"))
  return config
