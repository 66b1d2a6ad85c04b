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
projection turns `make bench`'s measured rates (`rates_from_bench`) into time,
as experiments/projection.py (searches) and experiments/bench_pruning.py
(`project_overparam`, pruning) do.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from cubist import engine, mlp, schedules
from cubist import masks as mask_ops
from cubist import specs as spec_ops
from cubist import store as store_ops
from cubist.specs import ExperimentSpec
from search import combinatorial, grids, phases
from search import enumeration as enum
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


def phase2_level_counts(config: phases.SearchConfig, widths) -> dict[int, int]:
  """{hidden nnz level: mask triples}: what `phases.level_mask_triples` yields per level,
  counted (per-layer counts convolved) instead of enumerated. Under the reference
  caps, W2 keeps at most cap_w2 masks per n2 and levels >= cap_sum are empty."""
  shapes = phases.layer_shapes(widths)
  per_layer = [
    {n: enum.count_layer_masks(*shape, n) for n in enum.nnz_range(*shape)} for shape in shapes
  ]
  if config.reference_caps:
    per_layer[1] = {n: min(c, config.cap_w2) for n, c in per_layer[1].items()}
  levels = {0: 1}
  for layer in per_layer:
    combined = Counter()
    for (total, ways), (n, count) in itertools.product(levels.items(), layer.items()):
      combined[total + n] += ways * count
    levels = dict(combined)
  if config.reference_caps:
    levels = {level: c for level, c in levels.items() if level < config.cap_sum}
  return dict(sorted(levels.items()))


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
  settings = len(phases.settings(job.search))
  if job.family.kind == PHASE1:
    return len(phase1_triples(job.search)) * settings
  return sum(phase2_level_counts(job.search, job.widths).values()) * settings


def workload(job: Job) -> Counter:
  """{(method, width): runs}: a job's runs by what they cost (PLAIN for the searches'
  fixed-mask runs, at the padded width that holds them: max(d1, d2, d3))."""
  if job.waiting:
    return Counter()
  if job.specs is not None:
    return Counter((s.method, s.width) for s in job.specs)
  if job.search is None:
    return Counter()
  settings = len(phases.settings(job.search))
  if job.family.kind == PHASE1:
    return Counter(
      {(PLAIN, w): n * settings for w, n in Counter(map(max, phase1_triples(job.search))).items()}
    )
  return Counter({(PLAIN, max(job.widths)): count(job)})


def fingerprint(job: Job) -> str:
  """The sweep fingerprint the family's stores carry (a search's, or the engine's
  default over a pruning family's exp_ids)."""
  if job.search is not None:
    return job.search.fingerprint()
  return spec_ops.sweep_fingerprint(job.specs or ())


# --- Stores, done counts and phase-1 answers -------------------------------------


class Done(NamedTuple):
  """runs: distinct finished experiments of the family's sweep in its stores;
  foreign: rows in stores of another sweep (a run would refuse that sub-workdir)."""

  runs: int
  foreign: int


def _stores(family_dir: Path) -> list[Path]:
  return sorted(Path(family_dir).glob("results*.sqlite")) if Path(family_dir).is_dir() else []


def done(job: Job, family_dir) -> Done:
  """Finished experiments of the job in `family_dir`, read without changing anything."""
  if job.waiting or (job.search is None and job.specs is None):
    return Done(0, 0)
  wanted = fingerprint(job)
  ids, foreign = set(), 0
  for path in _stores(family_dir):
    with store_ops.StoreReader(path, missing_ok=True) as store:
      if store.empty:
        continue
      if store.sweep_fingerprint == wanted:
        ids |= store.done_ids()
      else:
        foreign += store.count()
  if job.specs is not None:
    ids &= {s.exp_id() for s in job.specs}
  return Done(len(ids), foreign)


def finished_rows(job: Job, family_dir) -> list[dict] | None:
  """Every row of a finished job (all shards merged), or None if it is not finished."""
  total = count(job)
  if total is None or done(job, family_dir).runs < total:
    return None
  wanted = fingerprint(job)
  paths = []
  for path in _stores(family_dir):
    with store_ops.StoreReader(path, missing_ok=True) as store:
      if not store.empty and store.sweep_fingerprint == wanted:
        paths.append(path)
  return store_ops.merge_stores(paths)


def phase1_answer(config: phases.SearchConfig, rows, target: float):
  """The phase-1 widths for `target` from a finished phase-1 grid's rows, by the
  search's rule (§D.2): the smallest dense parameter count with a triple whose
  best accuracy over its settings reaches the target; among those the highest
  best accuracy, then the smallest triple (Search.phase1's tie-break). None if
  no triple reaches it."""
  candidates = combinatorial.best_by_candidate(
    [r for r in rows if r["family"] == phases.PHASE1], lambda r: (r["d1"], r["d2"], r["d3"])
  )
  for _, triples in phases.phase1_levels(config):
    reached = [t for t in triples if t in candidates and candidates[t].best_accuracy >= target]
    if reached:
      return min(reached, key=lambda t: (-candidates[t].best_accuracy, t))
  return None


def _record_answers(config, family, job, rows, answers: Answers) -> None:
  """Fill `answers` from a finished phase-1 family's rows (adaptive plans only)."""
  if config.reference:
    return
  if family.start == RANDOM:
    for arm, target in enumerate(config.targets):
      answers[(RANDOM, arm)] = phase1_answer(job.search, rows, target)
  else:
    found = phase1_answer(job.search, rows, config.targets[family.arm])
    # Nothing below the budget: the random-init widths (the budget's triple) stand in.
    answers[(FIXED, family.arm)] = found or answers.get((RANDOM, family.arm))


def read_answers(config: StudyConfig, workdir) -> Answers:
  """The phase-1 answers the plan can know now: a reference config's, or those of
  the phase-1 families already finished in `workdir` (read-only)."""
  answers = reference_answers(config)
  if config.reference:
    return answers
  for family in execution_order([f for f in all_families(config) if f.kind == PHASE1]):
    job = resolve(config, family, answers)
    if job.waiting:
      continue
    rows = finished_rows(job, Path(workdir) / family.name)
    if rows is not None:
      _record_answers(config, family, job, rows, answers)
  return answers


class StoreTarget(NamedTuple):
  """The store file one shard of a family writes, and the sweep it must belong to."""

  family: str
  path: Path
  sweep_name: str
  fingerprint: str


def store_targets(config: StudyConfig, workdir, shard_index: int = 0, num_shards: int = 1):
  """The store files this shard would write for the families it can resolve now (the
  families waiting for a phase 1 are checked by the engine when they start)."""
  answers = read_answers(config, workdir)
  out = []
  for family in selected_families(config):
    job = resolve(config, family, answers)
    if job.waiting or not count(job):
      continue
    # Search names its sweep after its target (combinatorial.Search.name).
    name = f"search-{job.search.target:g}" if job.search is not None else family.name
    path = store_ops.store_path(Path(workdir) / family.name, shard_index, num_shards)
    out.append(StoreTarget(family.name, path, name, fingerprint(job)))
  return out


# --- Projection ----------------------------------------------------------------------


class Rates(NamedTuple):
  """Measured throughput of one machine (`make bench`), as the projections use it.

  label: where it was measured (e.g. "this machine"); source: the files and
  the machine they describe, for the reader. search: runs/s of
  fixed-mask training per padded width (bench.json's search_projection).
  plain: seconds per run of plain training per width, and overhead: a method's
  cost over plain training's at the widths it was timed (bench_pruning.json).
  search_epochs, pruning_epochs: the run length the rates are for.
  """

  label: str
  source: str
  search: dict[int, float]
  plain: dict[int, float]
  overhead: dict[tuple[str, int], float]
  search_epochs: int = 50
  pruning_epochs: int = 50


def rates_from_bench(
  label: str, bench: dict | None, bench_pruning: dict | None, files: str = ""
) -> Rates:
  """Rates from the parsed JSON of `make bench` (bench.json, bench_pruning.json; either
  may be None); `files` names them for the source line.

  Search rates: bench.json's search_projection.rates_runs_per_s (what its
  projection used). Pruning: plain training's seconds per run at each width and
  each method's measured overhead over it in the layout the engine picks, as
  experiments.bench_pruning.project_overparam reads them.
  """
  bench = bench or {}
  rates = (bench.get("search_projection") or {}).get("rates_runs_per_s") or {}
  search = {int(w): float(r) for w, r in rates.items() if r and float(r) > 0}
  plain, overhead = {}, {}
  if bench_pruning:
    plain = {int(r["width"]): float(r["seconds_per_run"]) for r in bench_pruning.get("plain", [])}
    overhead = {
      (r["method"], int(r["width"])): float(r["seconds_per_run"]) / plain[int(r["width"])]
      for r in bench_pruning.get("methods", [])
      if int(r["width"]) in plain and r.get("engine_layout", True)
    }
  machine = (bench or bench_pruning or {}).get("machine") or {}
  cores = machine.get("cpu_count") or machine.get("cpus")
  source = files
  if machine:
    source += f", measured on {machine.get('backend', '?')}" + (f", {cores} cores" if cores else "")
  return Rates(
    label,
    source,
    search,
    plain,
    overhead,
    int((bench.get("settings") or {}).get("epochs", 50)),
    int((bench_pruning or {}).get("epochs", 50)),
  )


def _search_seconds_per_run(width: int, rates: Rates) -> float | None:
  """1 / runs/s at `width`, or at the next measured width above it (pessimistic),
  as experiments.projection.rate_at."""
  if not rates.search:
    return None
  measured = sorted(rates.search)
  above = [w for w in measured if w >= width]
  return 1 / rates.search[above[0] if above else measured[-1]]


def _pruning_seconds_per_run(method: str, width: int, rates: Rates) -> float | None:
  """Plain training's cost at `width` (or the nearest timed width) times the method's
  overhead at the nearest width it was timed at (log scale), as project_overparam."""
  if not rates.overhead or not rates.plain:
    return None
  measured = sorted({w for _, w in rates.overhead})
  nearest = min(measured, key=lambda w: abs(np.log(w) - np.log(width)))
  if (method, nearest) not in rates.overhead:
    return None
  base = rates.plain.get(width) or rates.plain[min(rates.plain, key=lambda w: abs(w - width))]
  return base * rates.overhead[(method, nearest)]


def project_seconds(load: Counter, rates: Rates, epochs: int) -> float | None:
  """Projected seconds of a workload on the rates' machine (None if a rate is missing).

  Runs of `epochs` epochs cost the measured runs' time scaled linearly (compile
  time and fixed costs are not in the rates)."""
  total = 0.0
  for (method, width), runs in load.items():
    if method == PLAIN:
      per_run = _search_seconds_per_run(width, rates)
      scale = epochs / rates.search_epochs
    else:
      per_run = _pruning_seconds_per_run(method, width, rates)
      scale = epochs / rates.pruning_epochs
    if per_run is None:
      return None
    total += runs * per_run * scale
  return total


# --- The plan -----------------------------------------------------------------------


class FamilyPlan(NamedTuple):
  """One family of the plan: its job, experiments (None: depends on a phase 1),
  finished ones in the workdir, and the projected seconds of the rest per Rates."""

  family: Family
  job: Job
  experiments: int | None
  done: Done
  seconds: tuple[float | None, ...]


def plan(config: StudyConfig, workdir, rates: tuple[Rates, ...] = ()) -> list[FamilyPlan]:
  """The study's families with their counts, done counts and projections, reading
  the workdir's stores only (nothing is created or changed)."""
  config.validate()
  answers = read_answers(config, workdir)
  out = []
  for family in selected_families(config):
    job = resolve(config, family, answers)
    total = count(job)
    finished = done(job, Path(workdir) / family.name)
    remaining = 0 if total is None else max(total - finished.runs, 0)
    load = workload(job)
    seconds = []
    for machine in rates:
      full = project_seconds(load, machine, config.epochs)
      if total is None or full is None:
        seconds.append(None)
      else:
        seconds.append(full * remaining / total if total else 0.0)
    out.append(FamilyPlan(family, job, total, finished, tuple(seconds)))
  return out


def _duration(seconds: float | None) -> str:
  if seconds is None:
    return "?"
  if seconds < 3600:
    return f"{seconds / 60:.0f} min"
  if seconds < 10 * 86400:
    return f"{seconds / 3600:.1f} h"
  return f"{seconds / 86400:.1f} d"


def _known_sum(items, k: int) -> str:
  """A column's subtotal: the families whose count is known ("?" if one lacks a
  rate, "+" if some family still waits for its phase 1)."""
  known = [i.seconds[k] for i in items if i.experiments is not None]
  text = "?" if any(s is None for s in known) else _duration(sum(known))
  return text + ("+" if any(i.experiments is None for i in items) else "")


def format_plan(config: StudyConfig, workdir, plans: list[FamilyPlan], rates=()) -> str:
  """The dry run's text: per family and launcher, experiments, done and the
  projected time of the rest per machine; the last line is the total."""
  workdir = Path(workdir)
  kind = "reference" if config.reference else "adaptive"
  where = "" if workdir.exists() else " (does not exist yet)"
  lines = [f"study {config.name} ({kind} plan), workdir {workdir}{where}"]
  lines.append(
    f"{'family':<22} {'experiments':>12} {'done':>9}"
    + "".join(f" {machine.label:>14}" for machine in rates)
  )

  def row(name, experiments, finished, times, note=""):
    line = f"{name:<22} {experiments:>12} {finished:>9}" + "".join(f" {t:>14}" for t in times)
    return line + (f"  {note}" if note else "")

  by_launcher = {}
  for item in plans:
    by_launcher.setdefault(item.family.launcher, []).append(item)
  for launcher, items in by_launcher.items():
    for item in items:
      if item.experiments is None:
        lines.append(row(item.family.name, "-", "-", ["-"] * len(rates), item.job.waiting))
        continue
      times = [_duration(s) for s in item.seconds]
      lines.append(
        row(item.family.name, f"{item.experiments:,}", f"{item.done.runs:,}", times, item.job.note)
      )
    known = sum(i.experiments or 0 for i in items)
    more = "+" if any(i.experiments is None for i in items) else ""
    times = [_known_sum(items, k) for k in range(len(rates))]
    lines.append(
      row(f"  {launcher}", f"{known:,}{more}", f"{sum(i.done.runs for i in items):,}", times)
    )
  for item in plans:
    if item.done.foreign:
      lines.append(
        f"note: {workdir / item.family.name} holds {item.done.foreign:,} run(s) of another "
        "sweep; a run would refuse it (use another --workdir)"
      )
  total = sum(i.experiments or 0 for i in plans)
  finished = sum(i.done.runs for i in plans)
  for k, machine in enumerate(rates):
    lines.append(
      f"{machine.label} ({machine.source}): the {total - finished:,} remaining experiments "
      f"take {_known_sum(plans, k)}"
    )
  if not rates:
    lines.append("no measured rates (bench.json, bench_pruning.json): run `make bench`")
  lines.append(f"done: {finished:,} of {total:,}")
  waiting = [i.family.name for i in plans if i.experiments is None]
  if waiting:
    lines.append(f"total: {total:,} experiments so far; {len(waiting)} families wait for a phase 1")
  else:
    lines.append(f"total: {total:,} experiments")
  return "\n".join(lines)


# --- Running it --------------------------------------------------------------------


def run(
  config: StudyConfig,
  workdir,
  shard_index: int = 0,
  num_shards: int = 1,
  plan: engine.ChunkPlan = engine.ChunkPlan(),
  progress_stream=None,
  log=print,
  poll_seconds: float = 5.0,
) -> list[dict]:
  """Train every selected family into DIR/<family>, phase 1s first; resumable and shardable.

  Each shard trains its stable share of every family (by exp_id) into its own
  store file; the searches wait for the other shards at their level
  boundaries, so every shard reads the same phase-1 answers. Returns one
  summary per family (name, experiments, widths, answer); shard 0 also writes
  DIR/study.json.
  """
  config.validate()
  if not 0 <= shard_index < num_shards:
    raise ValueError(f"shard_index={shard_index} must be in 0..{num_shards - 1}")
  workdir = Path(workdir)
  answers = read_answers(config, workdir)
  summaries = []
  for family in execution_order(selected_families(config)):
    job = resolve(config, family, answers)
    if job.waiting:
      raise ValueError(
        f"family {family.name} {job.waiting}, which is not finished in {workdir}: "
        "run it first (or select it too)"
      )
    family_dir = workdir / family.name
    total = count(job)
    summary = {"family": family.name, "launcher": family.launcher, "experiments": total}
    if job.widths is not None:
      summary["widths"] = list(job.widths)
    if total == 0:
      # A fixed-init phase 1 whose budget admits no triple still has an answer:
      # none found, so the random-init widths stand in (_record_answers).
      note = job.note or "no triple below the budget: the random-init widths stand in"
      log(f"study: {family.name}: nothing to train ({note})")
      if family.kind == PHASE1:
        _record_answers(config, family, job, [], answers)
        summary["answers"] = _answers_summary(config, family, job, [])
      summaries.append({**summary, "note": note})
      continue
    log(f"study: {family.name}: {total:,} experiments into {family_dir}")
    if job.search is not None:
      result = combinatorial.Search(
        job.search,
        family_dir,
        shard_index=shard_index,
        num_shards=num_shards,
        plan=plan,
        progress_stream=progress_stream,
        log=log,
        poll_seconds=poll_seconds,
      ).run()
      if family.kind == PHASE1:
        rows = finished_rows(job, family_dir)
        if rows is None:
          raise RuntimeError(f"{family.name}: phase 1 is not complete in {family_dir}")
        _record_answers(config, family, job, rows, answers)
        summary["answers"] = _answers_summary(config, family, job, rows)
      else:
        phase2 = result.get("phase2", {})
        summary["answer"] = {
          k: phase2.get(k) for k in ("mask_config", "accuracy", "weight_nnz", "model_nnz")
        }
    else:
      with engine.run(
        list(job.specs),
        family_dir,
        sweep_name=family.name,
        fingerprint=fingerprint(job),
        plan=plan,
        shard_index=shard_index,
        num_shards=num_shards,
        progress_stream=progress_stream,
        methods=registry.get,
      ) as results:
        summary["shard_runs"] = results.count()
    summaries.append(summary)
  if shard_index == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    record = {"config": dataclasses.asdict(config), "families": summaries}
    (workdir / "study.json").write_text(json.dumps(record, indent=2, default=_jsonable))
  return summaries


def _answers_summary(config, family, job, rows) -> dict:
  """{target percent: widths phase 1 found (None: no triple reaches it)}."""
  targets = config.targets if family.start == RANDOM else [config.targets[family.arm]]
  return {
    f"{100 * t:g}": None if (w := phase1_answer(job.search, rows, t)) is None else list(w)
    for t in targets
  }


def _jsonable(value):
  if isinstance(value, np.integer):
    return int(value)
  if isinstance(value, np.floating):
    return float(value)
  raise TypeError(f"cannot serialise {type(value)}")


def format_results(summaries: list[dict]) -> str:
  """One line per family: experiments and, for the searches, what they found."""
  lines = []
  for s in summaries:
    parts = [f"{s['family']:<22} {s['experiments']:>9,} experiments"]
    if "answers" in s:
      found = ", ".join(f"{t}%: {tuple(w) if w else 'none'}" for t, w in s["answers"].items())
      parts.append(f"phase-1 widths {found}")
    elif "answer" in s:
      answer, widths = s["answer"], tuple(s["widths"])
      if answer.get("mask_config"):
        parts.append(
          f"widths {widths}: sparsest {answer['mask_config']} "
          f"(weight nnz {answer['weight_nnz']}, accuracy {answer['accuracy']:.4f})"
        )
      else:
        parts.append(f"widths {widths}: no mask reaches the target")
    elif "widths" in s:
      parts.append(f"fixed-init widths {tuple(s['widths'])}")
    if s.get("note"):
      parts.append(s["note"])
    lines.append("; ".join(parts))
  return "\n".join(lines)
