r"""The whole study of paper (1): the authors' three launchers as one resumable plan.

  python -m experiments.study --config=experiments/configs/study.py:reference --workdir=/tmp/study --dry_run
  python -m experiments.study --config=experiments/configs/study.py:reference --workdir=/tmp/study

The dry run prints, without training or creating anything, the experiments of
every family (METHODS §0.2: fixed-init 95% 12,774; fixed-init 99.5% 83,958;
random init 389,106; last line `total: 485,838 experiments`), how many are
already in the workdir, and the projected time of the rest from `make bench`'s
rates (bench.json and bench_pruning.json; a GPU column once bench_gpu.json and
bench_pruning_gpu.json, the same benchmarks run on a GPU, exist). Each family
trains into DIR/<family> (fixed95_prune, fixed95_phase1, fixed95_phase2, the
same for 995, random_overparam, random_phase1, random_phase2_95,
random_phase2_995), so `python -m experiments.report --workdir=DIR/<family>
[--workdir=...]` reads any subset; DIR/study.json lists the families and the
phase-1 answers at the end. The same command resumes; `--num_shards/--shard_index`
(or `--distributed`, one shard per jax process) split every family.

Expected runtime: the reference plan is projected at about 13 hours on the
2-core CPU of the committed bench.json / bench_pruning.json: random-init phase 2
at 99.5% 4.6 h (190k runs at width 7), the overparameterisation family 4.0 h
(nearly all of it LTH, RigL and IMP at widths 128 and 256), fixed-init 99.5%
2.2 h, random-init phase 1 and phase 2 at 95% 1.8 h, fixed-init 95% 19 min;
linear in the epochs, warm rates: compilation is not included, and small
families pay it noticeably (the fixed-init 95% family took about 70 min end to
end on that machine). No GPU rates are measured yet: the dry run adds the GPU column once
bench_gpu.json exists. The adaptive plan's phase 2 is exhaustive, so its size
follows the widths our phase 1 finds (the dry run prints it once phase 1 is
done). Expected result: each phase-2 family's search.json and
sparsest_<target>.npz hold the sparsest mask inside its widths, the pruning
families' stores every method's accuracy per weight budget, and the report's
gap table compares them (METHODS §G.3, §G.4).

Variants, comma-separated after the file name:
  reference        the released settings: phase 2 at (3,3,3) and (7,3,3) from random
                   init and at (3,2,2) and (6,3,2) from BENCH-95 and BENCH-995, the
                   99.5% caps (§D.3), fixed-init phase-1 budgets P(3,3,3) and
                   P(7,3,3), optimal pruning widths 3 and 6, 5 runs per fixed-init
                   pruning configuration: 485,838 experiments.
  (default)        adaptive: every width from our own phase 1 (the fixed-init
                   budgets from the random-init answer, the optimal pruning width
                   from the fixed-init one), phase 2 exhaustive (no caps). Families
                   that depend on a phase 1 wait for it; the dry run says so.
Modifiers:
  quick            the machinery in minutes: 1 epoch, phase 1 over widths 1..2, one
                   lr and schedule, pruning at widths 3 and 4 (overparameterisation)
                   and (optimal, 16) at one target each, 2 fixed-init repeats,
                   targets 50% and 60%: every network reaches 50% (a constant
                   predictor scores one half) and after one epoch none reaches 60%,
                   so the adaptive chain takes both branches (answer, no answer).
                   Reference widths (2,2,2) from random init, (2,1,1) and (2,2,1)
                   from the fixed inits (180 runs with methods=snip, about a minute
                   on 2 cores, mostly compilation; every method: one compilation per
                   method and width, several minutes).
  methods=a+b      only these pruning methods (search.pruning.registry names).
  families=a+b     only these families (their phase 1 must be finished in the
                   workdir or selected too).
  bench95=PATH     the fixed initialisation of the first target
                   (default ../shared/data/bench95_init.npz)
  bench995=PATH    and of the second (default ../shared/data/bench995_init.npz).
  exact            the pruning methods keep exactly f weights (count_mode="exact").

Any field can also be overridden, e.g. `--config.epochs=2`.
"""

import ml_collections

from experiments.configs.common import parse_options, path
from search import grids
from search.pruning import registry

KNOWN = {"reference", "adaptive", "quick", "methods", "families", "bench95", "bench995", "exact"}
# The widths the authors' configs fix (METHODS §0.2, §D, §G.3): phase 2 from
# random init at 95% and 99.5%, and from BENCH-95 and BENCH-995.
REFERENCE_RANDOM_WIDTHS = ((3, 3, 3), (7, 3, 3))
REFERENCE_FIXED_WIDTHS = ((3, 2, 2), (6, 3, 2))
QUICK_RANDOM_WIDTHS = ((2, 2, 2), (2, 2, 2))
QUICK_FIXED_WIDTHS = ((2, 1, 1), (2, 2, 1))


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = parse_options(arg, KNOWN, "study")
  if "reference" in options and "adaptive" in options:
    raise ValueError("choose one of reference and adaptive")
  reference, quick = "reference" in options, "quick" in options
  config = ml_collections.ConfigDict()
  config.name = ("reference" if reference else "adaptive") + ("_quick" if quick else "")
  config.targets = grids.SEARCH_TARGETS
  config.fixed_inits = tuple(
    path(options, name, "study", default) if name in options else default
    for name, default in (
      ("bench95", "../shared/data/bench95_init.npz"),
      ("bench995", "../shared/data/bench995_init.npz"),
    )
  )
  config.phase2_lrs = (grids.SEARCH_LRS, (0.05,))  # §C.3: 99.5% phase 2 uses 0.05 only
  config.fixed_targets = (grids.FIXED_TARGETS[0.95], grids.FIXED_TARGETS[0.995])
  config.capped = (False, reference)  # the released restrictions are at 99.5% only
  config.random_widths = ml_collections.FieldReference(
    REFERENCE_RANDOM_WIDTHS if reference else None, field_type=tuple
  )
  config.fixed_widths = ml_collections.FieldReference(
    REFERENCE_FIXED_WIDTHS if reference else None, field_type=tuple
  )
  config.search_lrs = grids.SEARCH_LRS
  config.schedules = grids.SCHEDULES
  config.pruning_lrs = grids.PRUNING_LRS
  config.methods = registry.PAPER_METHODS
  config.overparam_widths = grids.OVERPARAM_WIDTHS
  config.overparam_targets = grids.OVERPARAM_TARGETS
  config.fixed_repeats = grids.FIXED_REPEATS
  config.epochs = 50
  config.width = 16
  config.max_width = 16
  config.count_mode = "exact" if "exact" in options else "reference"
  config.families = tuple(f for f in options.get("families", "").split("+") if f)
  if quick:
    config.targets = (0.5, 0.6)
    config.epochs = 1
    config.max_width = 2
    config.search_lrs = (0.1,)
    config.schedules = ("constant",)
    config.pruning_lrs = (0.1,)
    config.phase2_lrs = ((0.1,), (0.1,))
    config.overparam_widths = (3, 4)
    config.overparam_targets = (15,)
    config.fixed_targets = ((10,), (12,))
    config.fixed_repeats = 2
    if reference:
      config.random_widths = QUICK_RANDOM_WIDTHS
      config.fixed_widths = QUICK_FIXED_WIDTHS
  if "methods" in options:
    config.methods = tuple(options["methods"].split("+"))
  return config
