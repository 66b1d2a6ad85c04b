"""The combinatorial search (Algorithm 1) for the sparsest network reaching a target.

Paper settings, random init, 95% target:

  python -m experiments.search --config=experiments/configs/search.py:target=95 --workdir=/tmp/search95

Phase 1 walks width triples by dense parameter count (smallest first) and stops
once a level reaches the target; phase 2 walks unstructured masks inside those
widths by nnz (sparsest first) and stops at the first level where a mask reaches
the target. Observed on a 2-core CPU for 95% from random init: about 20 minutes;
phase 1 settled at (7, 1, 4) (dense params 42, one run at 96.2%, 840 runs), and
none of the 34 masks inside it reached 95% in phase 2 (204 runs, best 80.2%): see
the README and the `fallback` variant. 99.5%: `target=99.5` (phase 1 reaches much
wider networks, so hours).

Variants, comma-separated after the file name:
  target=95 | target=99.5     the accuracy to reach (percent)
  fixed=PATH                  fixed-initialisation search from an npz init
  reference_caps              the released 99.5% phase-2 restrictions (§D.3)
  exhaustive                  phase 1 over all 4,096 triples; phase 2 over all levels
  canonical                   one mask per hidden-unit relabelling class (random init only)
  fallback                    extension: if phase 2 finds no mask inside the phase-1 widths,
                              continue with the next triple that reached the target in phase 1
  phase1_only                 stop after phase 1 (rerun without it to continue into phase 2)
  quick                       the demo: widths 1..3, 10 epochs, constant schedule, target 70%

Any field can also be overridden, e.g. `--config.epochs=20`.
"""

import ml_collections

from experiments.configs.common import number, parse_options
from search import grids

KNOWN = {
  "target",
  "fixed",
  "reference_caps",
  "exhaustive",
  "canonical",
  "quick",
  "fallback",
  "phase1_only",
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = parse_options(arg, KNOWN, "search")
  config = ml_collections.ConfigDict()
  config.target = number(options, "target", 95, "search") / 100  # checked by SearchConfig
  config.width = 16
  config.max_width = 16
  config.lrs = grids.SEARCH_LRS
  config.schedules = grids.SCHEDULES
  config.repeats = 1
  config.epochs = 50
  config.init = options.get("fixed", "random")
  config.phase1_budget = ml_collections.FieldReference(None, field_type=int)
  config.exhaustive_phase1 = "exhaustive" in options
  config.all_levels = "exhaustive" in options
  config.reference_caps = "reference_caps" in options
  # The released 99.5% sweeps: sum < 33 and 3 W2 masks (random init), < 31 and 6 (fixed).
  family = "random" if config.init == "random" else "fixed"
  config.cap_sum = grids.CAP_SUM[family]
  config.cap_w2 = grids.CAP_W2[family]
  config.canonical = "canonical" in options
  config.shared_order = False
  config.phase1_widths = ml_collections.FieldReference(None, field_type=tuple)
  config.phase1_fallback = "fallback" in options
  config.max_fallbacks = 8
  config.phase1_only = "phase1_only" in options
  if config.target > 0.99 and config.reference_caps:
    config.lrs = (0.05,)  # §C.3: phase 2 at 99.5% uses lr 0.05 only
  if "quick" in options:
    # Widths 1..3 and one setting (constant) for 10 epochs: phase 1 is
    # 54 runs and phase 2 a few hundred width-3 masks.
    config.max_width = 3
    config.epochs = 10
    config.lrs = grids.SEARCH_LRS
    config.schedules = ("constant",)
    if "target" not in options:
      config.target = 0.7
  return config
