"""The whole study of paper (1) as one resumable, shardable plan (METHODS §0.2).

The authors ran three launchers (fixed-init 95%, fixed-init 99.5%, random
init), each a list of experiment lists. Here every such list is a *family*
with its own sub-workdir DIR/<family> and its own store(s), so any subset can
be run, sharded, resumed or handed to the report on its own:

  launcher          families (target label t: 95, 995)    what
  fixed-init t%     fixed<t>_prune                         §G.3: the paper's nine methods from
                                                           the fixed init, widths (optimal, 16)
                    fixed<t>_phase1                        §D.2: phase 1 from the fixed init,
                                                           triples with P(d) below P(random answer)
                    fixed<t>_phase2                        §D.3: phase 2 inside the fixed-init widths
  random init       random_overparam                       §G.2: widths 3..256, f < N(w)
                    random_phase1                          §D.2: all 4,096 triples (both targets)
                    random_phase2_<t>                      §D.3: phase 2 inside the random-init widths

Phase 1 is one exhaustive grid per initialisation whatever the target (the
random-init launcher trains it once for both), phase 2 walks every nnz level
(the launchers list every mask triple), and pruning families are plain engine
sweeps of `search.pruning.families.grid_specs`. The searches run through
`search.combinatorial.Search` (phase 1 with `exhaustive_phase1` and
`phase1_only`; phase 2 with the widths given and `all_levels`), so each
family's store, search.json and sparsest model are what the search binary
would write.

Two plans. *Reference* (`StudyConfig.random_widths` and `fixed_widths` set):
the widths the authors' configs fix ((3,3,3) and (7,3,3) from random init,
(3,2,2) and (6,3,2) from BENCH-95 and BENCH-995), the released 99.5% caps
(`capped`), hence the fixed-init phase-1 budgets P(3,3,3) = 37 and P(7,3,3) =
61 and the optimal pruning widths 3 and 6. *Adaptive* (both None): every width
comes from our own phase 1, whose answers are read from its finished store:
random_phase1 decides the random phase-2 widths and the fixed-init phase-1
budgets; fixed<t>_phase1 decides the fixed phase-2 widths and the optimal
pruning width (if it finds no triple below the budget, the random-init widths
stand in: they are the budget's own triple). The dependent families wait for
their phase 1 (`Job.waiting`).

Counting never materialises phase-2 masks: phase 1 counts `phase1_levels`,
phase 2 counts per level what `phases.level_mask_triples` yields (the same
ranges, `count_layer_masks` and caps; the study's searches use the reference
rule, which trains every mask), pruning counts `grid_specs` itself.
Done counts read the stores read-only: a store with the family's sweep
fingerprint holds only that family's runs (the store refuses others). The
projection of the time (search/study_cost.py) turns `make bench`'s measured
rates into time, as experiments/projection.py (searches) and
experiments/bench_pruning.py (`project_overparam`, pruning) do; running the
plan is search/study_runner.py.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from typing import NamedTuple

from cubist import masks as mask_ops
from cubist import mlp, schedules
from cubist import specs as spec_ops
from cubist.specs import ExperimentSpec
from search import grids, phases
from search.pruning import families as pruning_families
from search.pruning import registry

PRUNE, OVERPARAM, PHASE1, PHASE2 = "prune", "overparam", "phase1", "phase2"
RANDOM, FIXED = "random", "fixed"
PLAIN = "plain"  # the workload key of fixed-mask (search) runs
RANDOM_PHASE1, RANDOM_OVERPARAM = "random_phase1", "random_overparam"
# When each kind of family runs: phase 1s first (they decide the rest), then the
# fixed-init launchers, then the random-init pruning and phase-2 families.
_STAGES = {(RANDOM, PHASE1): 0, (FIXED, PHASE1): 1, (FIXED, PHASE2): 2, (FIXED, PRUNE): 3}
_STAGES |= {(RANDOM, OVERPARAM): 4, (RANDOM, PHASE2): 5}


@dataclasses.dataclass(frozen=True)
class StudyConfig:
  """Everything that defines the study (experiments/configs/study.py builds it).

  Per target (the tuples run parallel to `targets`; the first and second are
  the paper's 95% and 99.5%):
  fixed_inits: the npz initialisation of its fixed-init launcher (BENCH-95, BENCH-995).
  phase2_lrs: phase 2's learning rates (§C.3: {0.05, 0.1} at 95%, {0.05} at 99.5%).
  fixed_targets: the fixed-init pruning budgets f (§E.0).
  capped: its phase 2 keeps the released restrictions (§D.3: 99.5% only; the
    random-init and fixed-init caps of search.grids).
  random_widths, fixed_widths: the phase-2 widths from random and fixed init
    (reference), or None: our own phase 1's answers (adaptive).

  Shared: search_lrs (phase 1), schedules (every family), pruning_lrs, methods
  (the pruning methods), overparam_widths and overparam_targets (§G.2),
  fixed_repeats (runs per fixed-init pruning configuration), epochs, width
  (the searches' model, 16) and max_width (phase 1's triples range over
  1..max_width), count_mode (the pruning methods' counts, §E.10), families
  (run only these; empty: all).
  """

  targets: tuple[float, ...] = grids.SEARCH_TARGETS
  fixed_inits: tuple[str, ...] = (
    "../shared/data/bench95_init.npz",
    "../shared/data/bench995_init.npz",
  )
  phase2_lrs: tuple[tuple[float, ...], ...] = (grids.SEARCH_LRS, (0.05,))
  fixed_targets: tuple[tuple[int, ...], ...] = (
    grids.FIXED_TARGETS[0.95],
    grids.FIXED_TARGETS[0.995],
  )
  capped: tuple[bool, ...] = (False, False)
  random_widths: tuple[tuple[int, int, int], ...] | None = None
  fixed_widths: tuple[tuple[int, int, int], ...] | None = None
  search_lrs: tuple[float, ...] = grids.SEARCH_LRS
  schedules: tuple[str, ...] = grids.SCHEDULES
  pruning_lrs: tuple[float, ...] = grids.PRUNING_LRS
  methods: tuple[str, ...] = registry.PAPER_METHODS
  overparam_widths: tuple[int, ...] = grids.OVERPARAM_WIDTHS
  overparam_targets: tuple[int, ...] = grids.OVERPARAM_TARGETS
  fixed_repeats: int = grids.FIXED_REPEATS
  epochs: int = 50
  width: int = 16
  max_width: int = 16
  count_mode: str = "reference"
  families: tuple[str, ...] = ()
  name: str = "study"

  @classmethod
  def from_dict(cls, fields: dict) -> "StudyConfig":
    """From a config's to_dict(): lists become tuples (nested too); unknown fields are an error."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"unknown study config field(s) {unknown}; known: {sorted(known)}")
    return cls(**{name: _tuples(value) for name, value in fields.items()})

  @property
  def reference(self) -> bool:
    """The widths are the authors' (given), not our phase 1's answers."""
    return self.random_widths is not None

  def validate(self) -> None:
    """One-line ValueError for anything that would fail later (init files included)."""
    count = len(self.targets)
    if count == 0:
      raise ValueError("targets must not be empty")
    for target in self.targets:
      if not 0 < target <= 1:
        raise ValueError(f"target={target:g} must be in (0, 1]")
    if len({target_label(t) for t in self.targets}) != count:
      raise ValueError(f"targets {self.targets} must have distinct labels")
    for name in ("fixed_inits", "phase2_lrs", "fixed_targets", "capped"):
      if len(getattr(self, name)) != count:
        raise ValueError(f"{name} needs one entry per target ({count}), not {getattr(self, name)}")
    if (self.random_widths is None) != (self.fixed_widths is None):
      raise ValueError("random_widths and fixed_widths are both given (reference) or both None")
    for name in ("random_widths", "fixed_widths"):
      widths = getattr(self, name)
      if widths is not None:
        if len(widths) != count:
          raise ValueError(f"{name} needs one triple per target ({count}), not {widths}")
        for triple in widths:
          mask_ops.validate_widths(triple, self.width)
    for lrs in (self.search_lrs, self.pruning_lrs, *self.phase2_lrs):
      if not lrs or not all(lr > 0 for lr in lrs):
        raise ValueError(f"learning rates {lrs} must be non-empty and > 0")
    if not self.schedules:
      raise ValueError("schedules must not be empty")
    for name in self.schedules:
      schedules.schedule_id(name)  # an unknown schedule names the known ones
    if not self.methods:
      raise ValueError("methods must not be empty (the pruning families would have no runs)")
    for method in self.methods:
      if not registry.is_pruning(method):
        raise ValueError(f"unknown pruning method {method!r}; known: {', '.join(registry.names())}")
    if self.epochs < 1 or self.fixed_repeats < 1:
      raise ValueError(f"epochs={self.epochs} and fixed_repeats={self.fixed_repeats} must be >= 1")
    if not 1 <= self.max_width <= self.width:
      raise ValueError(f"max_width={self.max_width} is outside 1..{self.width}")
    names = [f.name for f in all_families(self)]
    unknown = sorted(set(self.families) - set(names))
    if unknown:
      raise ValueError(f"unknown study families {unknown}; known: {names}")
    for init in self.fixed_inits:
      spec_ops.init_id(init)  # a missing or unreadable file is a one-line error now
      mlp.load_init(init, self.width)


def _tuples(value):
  if isinstance(value, (list, tuple)):
    return tuple(_tuples(v) for v in value)
  return value


def target_label(target: float) -> str:
  """95 for 0.95, 995 for 0.995: how family names spell a target."""
  return f"{100 * target:g}".replace(".", "")


# --- Families ---------------------------------------------------------------


class Family(NamedTuple):
  """One experiment list of the authors' launchers, trained into DIR/<name>.

  kind: PRUNE (fixed-init pruning), OVERPARAM, PHASE1 or PHASE2; start: the
  initialisation (RANDOM or FIXED); arm: the index of its target in
  `StudyConfig.targets` (None for the random-init phase 1, which serves every
  target, and the overparameterisation family).
  """

  name: str
  launcher: str
  kind: str
  start: str
  arm: int | None


def all_families(config: StudyConfig) -> list[Family]:
  """Every family, in the launchers' order (§0.2): fixed-init per target, then random init."""
  out = []
  for arm, target in enumerate(config.targets):
    label, launcher = target_label(target), f"fixed-init {100 * target:g}%"
    for kind in (PRUNE, PHASE1, PHASE2):
      out.append(Family(f"fixed{label}_{kind}", launcher, kind, FIXED, arm))
  out.append(Family(RANDOM_OVERPARAM, "random init", OVERPARAM, RANDOM, None))
  out.append(Family(RANDOM_PHASE1, "random init", PHASE1, RANDOM, None))
  for arm, target in enumerate(config.targets):
    name = f"random_phase2_{target_label(target)}"
    out.append(Family(name, "random init", PHASE2, RANDOM, arm))
  return out


def selected_families(config: StudyConfig) -> list[Family]:
  """The families this config runs (`config.families`, or all), in launcher order."""
  return [f for f in all_families(config) if not config.families or f.name in config.families]


def execution_order(families: list[Family]) -> list[Family]:
  """Phase 1s first (random, then fixed: the fixed budgets need the random answer),
  then the families that depend on them; launcher order within a stage."""
  return sorted(families, key=lambda f: (_STAGES[(f.start, f.kind)], f.arm or 0))


# --- What a family trains -----------------------------------------------------


@dataclasses.dataclass(frozen=True)
class PruneGrid:
  """A pruning family's grid, in the fields `search.pruning.families.grid_specs` reads."""

  family: str
  methods: tuple[str, ...]
  widths: tuple[int, ...]
  targets: tuple[int, ...]
  lrs: tuple[float, ...]
  schedules: tuple[str, ...]
  repeats: int
  epochs: int
  init: str
  count_mode: str
  strengths: dict = dataclasses.field(default_factory=dict)
  thresholds: tuple[float, ...] = (3.0,)
  method_options: dict = dataclasses.field(default_factory=dict)

  def get(self, name: str, default=None):
    """ConfigDict-style access, as grid_specs uses it."""
    return getattr(self, name, default)

  def __getitem__(self, name: str):
    return getattr(self, name)


class Job(NamedTuple):
  """What one family trains, as far as it is known.

  search: the SearchConfig of a phase family; specs: a pruning family's runs.
  widths: the phase-2 widths, or the fixed-init phase-1 answer behind a pruning
  family's optimal width. waiting: non-empty when it depends on a phase 1 that
  has not finished (its count is unknown). note: why a family trains nothing
  (its phase 1 found no widths).
  """

  family: Family
  search: phases.SearchConfig | None = None
  specs: tuple[ExperimentSpec, ...] | None = None
  widths: tuple[int, int, int] | None = None
  waiting: str = ""
  note: str = ""


# Keys of the phase-1 answers a plan depends on: (RANDOM or FIXED, arm).
Answers = dict[tuple[str, int], "tuple[int, int, int] | None"]


def reference_answers(config: StudyConfig) -> Answers:
  """The widths a reference config fixes ({} for an adaptive one)."""
  if not config.reference:
    return {}
  answers = {(RANDOM, arm): tuple(w) for arm, w in enumerate(config.random_widths)}
  answers |= {(FIXED, arm): tuple(w) for arm, w in enumerate(config.fixed_widths)}
  return answers


def _search(config: StudyConfig, target: float, **fields) -> phases.SearchConfig:
  """A reference-rule SearchConfig with the study's shared settings (phase 1's lrs unless given)."""
  shared = dict(
    width=config.width,
    max_width=config.max_width,
    lrs=config.search_lrs,
    schedules=config.schedules,
    epochs=config.epochs,
  )
  return phases.SearchConfig(target=target, **{**shared, **fields})


def _phase1_config(config: StudyConfig, family: Family, answers: Answers):
  """The family's phase-1 SearchConfig, or the name of the family it waits for."""
  if family.start == RANDOM:
    return _search(config, config.targets[0], exhaustive_phase1=True, phase1_only=True)
  if (RANDOM, family.arm) not in answers:
    return RANDOM_PHASE1
  random_widths = answers[(RANDOM, family.arm)]
  return _search(
    config,
    config.targets[family.arm],
    init=config.fixed_inits[family.arm],
    phase1_budget=None if random_widths is None else mask_ops.dense_parameter_count(random_widths),
    exhaustive_phase1=True,
    phase1_only=True,
  )


def resolve(config: StudyConfig, family: Family, answers: Answers) -> Job:
  """The family's Job given the phase-1 answers known so far."""
  if family.kind == OVERPARAM:
    grid = _grid(config, OVERPARAM, config.overparam_widths, config.overparam_targets, 1)
    return Job(family, specs=tuple(pruning_families.grid_specs(grid)))
  if family.kind == PHASE1:
    search = _phase1_config(config, family, answers)
    if isinstance(search, str):
      return Job(family, waiting=f"depends on {search}")
    return Job(family, search=search)
  arm = family.arm
  target = config.targets[arm]
  key = (family.start, arm)
  if key not in answers:
    source = RANDOM_PHASE1 if family.start == RANDOM else f"fixed{target_label(target)}_phase1"
    return Job(family, waiting=f"depends on {source}")
  widths = answers[key]
  if family.kind == PRUNE:
    optimal = () if widths is None else (max(widths),)
    grid = _grid(
      config,
      FIXED,
      tuple(dict.fromkeys(optimal + (config.width,))),
      config.fixed_targets[arm],
      config.fixed_repeats,
      init=config.fixed_inits[arm],
    )
    return Job(family, specs=tuple(pruning_families.grid_specs(grid)), widths=widths)
  if widths is None:
    return Job(family, note=f"phase 1 found no widths reaching {100 * target:g}%")
  cap = RANDOM if family.start == RANDOM else FIXED
  search = _search(
    config,
    target,
    init=spec_ops.RANDOM_INIT if family.start == RANDOM else config.fixed_inits[arm],
    lrs=config.phase2_lrs[arm],
    phase1_widths=tuple(widths),
    all_levels=True,
    reference_caps=config.capped[arm],
    cap_sum=grids.CAP_SUM[cap],
    cap_w2=grids.CAP_W2[cap],
  )
  return Job(family, search=search, widths=tuple(widths))


def _grid(config, family, widths, targets, repeats, init=spec_ops.RANDOM_INIT) -> PruneGrid:
  return PruneGrid(
    family=family,
    methods=config.methods,
    widths=tuple(widths),
    targets=tuple(targets),
    lrs=config.pruning_lrs,
    schedules=config.schedules,
    repeats=repeats,
    epochs=config.epochs,
    init=init,
    count_mode=config.count_mode,
  )


# --- Counting -------------------------------------------------------------------


def phase1_triples(config: phases.SearchConfig) -> list[tuple[int, int, int]]:
  return [t for _, triples in phases.phase1_levels(config) for t in triples]


def count(job: Job) -> int | None:
  """Experiments of a job (None while it waits for a phase 1)."""
  if job.waiting:
    return None
  if job.specs is not None:
    return len(job.specs)
  if job.search is None:
    return 0
  if job.family.kind == PHASE1:
    return len(phase1_triples(job.search)) * len(phases.settings(job.search, phases.PHASE1))
  settings = len(phases.settings(job.search, phases.PHASE2))
  return sum(phases.level_mask_triple_counts(job.search, job.widths).values()) * settings


def workload(job: Job) -> Counter:
  """{(method, width): runs}: a job's runs by what they cost (PLAIN for the searches'
  fixed-mask runs, at the padded width that holds them: max(d1, d2, d3))."""
  if job.waiting:
    return Counter()
  if job.specs is not None:
    return Counter((s.method, s.width) for s in job.specs)
  if job.search is None:
    return Counter()
  if job.family.kind == PHASE1:
    settings = len(phases.settings(job.search, phases.PHASE1))
    return Counter(
      {(PLAIN, w): n * settings for w, n in Counter(map(max, phase1_triples(job.search))).items()}
    )
  return Counter({(PLAIN, max(job.widths)): count(job)})


# --- Identity -----------------------------------------------------------------


def fingerprint(job: Job) -> str:
  """The sweep fingerprint the family's stores carry (a search's, or the engine's
  default over a pruning family's exp_ids)."""
  if job.search is not None:
    return job.search.fingerprint()
  return spec_ops.sweep_fingerprint(job.specs or ())
