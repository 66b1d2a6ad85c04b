"""The combinatorial search's candidates: its configuration, levels and specs (METHODS §D).

Phase 1 (structured): every hidden-width triple (d1, d2, d3) in 1..w, grouped
in levels by dense parameter count P(d) (§D.2). Phase 2 (unstructured): every
per-layer mask triple inside the phase-1 widths (W1 (d1, 2), W2 (d2, d1),
W3 (d3, d2); classifier dense over d3), in the reference enumeration order
(search.enumeration), grouped in levels by hidden nnz n1 + n2 + n3. Each
candidate is trained with every learning rate x schedule (its settings).

Rules (how a candidate is judged): `rule="reference"` (the paper's) trains
each candidate once per setting and repeat and asks whether its best accuracy
reaches the target. `rule="robust"` asks whether its best setting reaches the
target with probability >= q, at the lower bound of an exact interval; seeds
are allocated in rounds (search/stats.py: initial_seeds per setting, then
seed_step more to undecided settings that could still clear q, up to
max_seeds), and under a random
init only one mask per relabelling class is trained (§D.4), so the seeds go to
distinct experiments.

Seeds: each run's seed is a hash of what it is (phase, widths or mask
configuration, lr, schedule, repeat, the init's contents), so a restarted or
sharded search trains identical runs and the store recognises them. The
driver that walks the levels is search/combinatorial.py.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections import Counter, defaultdict

import numpy as np

from cubist import masks as mask_ops
from cubist import mlp
from cubist import specs as spec_ops
from cubist.mlp import Layer
from cubist.semantics import SEMANTICS_VERSION
from cubist.specs import ExperimentSpec
from search import enumeration as enum
from search import grids, stats, symmetry

PHASE1, PHASE2 = "phase1", "phase2"
REFERENCE, ROBUST = "reference", "robust"
RULES = (REFERENCE, ROBUST)
# Fields that only a robust search uses: they enter only its fingerprint, so a
# reference search's fingerprint (and the stores made with it) is unchanged.
ROBUST_FIELDS = ("q", "confidence", "initial_seeds", "seed_step", "max_seeds")


@dataclasses.dataclass(frozen=True)
class SearchConfig:
  """Everything that defines one search (the store's fingerprint hashes it).

  target: accuracy to reach, in (0, 1]. width: the model all masks live in (16).
  max_width: phase-1 widths range over 1..max_width (16 in the paper).
  lrs, schedules, repeats: the settings each candidate is trained with.
  init: "random" or an npz path (fixed-initialisation search).
  phase1_budget: fixed-init mode (§D.2): only triples with P(d) below this.
  exhaustive_phase1: train every triple instead of stopping at the answer level.
  all_levels: phase 2 trains every nnz level instead of stopping at the answer.
  reference_caps: reproduce the released 99.5% restrictions (§D.3): only mask
    triples with n1 + n2 + n3 < cap_sum and the first cap_w2 W2 masks per n2.
  canonical: train one representative per hidden-unit relabelling class (§D.4;
    exact only under a random init).
  rule: "reference" (best accuracy over the settings reaches the target) or
    "robust" (the best setting's success probability is >= q at the lower
    bound of its `confidence` Clopper-Pearson interval; search/stats.py).
  q, confidence, initial_seeds, seed_step, max_seeds: the robust rule's
    required probability and its sequential seed allocation (per setting:
    initial_seeds first, seed_step more per round while undecided, at most
    max_seeds). `repeats` belongs to the reference rule and stays 1 under it.
  """

  target: float
  width: int = 16
  max_width: int = 16
  lrs: tuple[float, ...] = grids.SEARCH_LRS
  schedules: tuple[str, ...] = grids.SCHEDULES
  repeats: int = 1
  epochs: int = 50
  init: str = spec_ops.RANDOM_INIT
  phase1_budget: int | None = None
  exhaustive_phase1: bool = False
  all_levels: bool = False
  reference_caps: bool = False
  cap_sum: int = grids.CAP_SUM["random"]
  cap_w2: int = grids.CAP_W2["random"]
  canonical: bool = False
  shared_order: bool = False
  phase1_widths: tuple[int, int, int] | None = None  # skip phase 1 with known widths
  # Extension (not in the reference): if phase 2 finds no mask inside the
  # phase-1 widths, go on to the next triple that reached the target in phase
  # 1 (in selection order), at most max_fallbacks times. Fresh seeds make a
  # triple that reached the target once by luck fail in phase 2.
  phase1_fallback: bool = False
  max_fallbacks: int = 8
  # Stop after phase 1 (e.g. the long 99.5% search in stages); rerunning without
  # it resumes the same workdir into phase 2.
  phase1_only: bool = False
  # A budget (not in the reference): phase 2 stops before the first level with more
  # than this many mask triples (per-layer orbits, before relabelling classes). Its
  # levels grow combinatorially inside wide networks (inside (5, 6, 3): 1,800 triples
  # at 20 weights, 1,000,920 at 22), so an exhaustive walk can be out of reach; the
  # search then says where it stopped, and the dense phase-1 network stays the
  # sparsest model known to reach the target. Defines no run: raise it and resume.
  phase2_max_masks: int | None = None
  # Phase 2's learning rates where they differ from phase 1's (§C.3: the released
  # 99.5% phase 2 trains at lr 0.05 only, phase 1 at {0.05, 0.1}); None: `lrs`.
  phase2_lrs: tuple[float, ...] | None = None
  rule: str = REFERENCE
  q: float = stats.DEFAULT_Q
  confidence: float = stats.DEFAULT_CONFIDENCE
  initial_seeds: int = 3
  seed_step: int = 3
  max_seeds: int = 12

  def lrs_of(self, phase: str) -> tuple[float, ...]:
    """The learning rates `phase` (PHASE1 or PHASE2) trains with."""
    if phase == PHASE2 and self.phase2_lrs is not None:
      return tuple(self.phase2_lrs)
    return tuple(self.lrs)

  @property
  def robust(self) -> bool:
    return self.rule == ROBUST

  @property
  def trains_representatives(self) -> bool:
    """Phase 2 trains one mask per relabelling class: asked for (`canonical`), or
    implied by the robust rule under a random init (relabellings are then the
    same experiment in distribution, §D.4, so their seeds pool on one mask)."""
    return self.canonical or (self.robust and self.init == spec_ops.RANDOM_INIT)

  def allocation(self) -> stats.Allocation:
    """The robust rule's seed allocation (search/stats.py)."""
    return stats.Allocation(
      self.initial_seeds, self.seed_step, self.max_seeds, self.q, self.confidence
    )

  def validate(self) -> None:
    if self.rule not in RULES:
      raise ValueError(f"rule={self.rule!r} is unknown; known: {list(RULES)}")
    if self.robust:
      if self.repeats != 1:
        raise ValueError(
          f"repeats={self.repeats}: rule=robust allocates seeds itself "
          "(initial_seeds, seed_step, max_seeds); leave repeats at 1"
        )
      stats.validate_allocation(self.allocation())
    if not self.lrs:
      raise ValueError("lrs must not be empty")
    if self.phase2_lrs is not None and not self.phase2_lrs:
      raise ValueError("phase2_lrs must not be empty (None: phase 2 uses lrs)")
    every_lr = tuple(self.lrs) + tuple(self.phase2_lrs or ())
    if not self.schedules:
      raise ValueError("schedules must not be empty")
    if isinstance(self.max_width, bool) or int(self.max_width) != self.max_width:
      raise ValueError(f"max_width={self.max_width} must be an integer")
    if not 0 < self.target <= 1:
      raise ValueError(f"target={self.target:g} ({100 * self.target:g}%) must be in (0, 1]")
    if not 1 <= self.max_width <= self.width:
      raise ValueError(f"max_width={self.max_width} is outside 1..{self.width}")
    if self.phase1_widths is not None:
      mask_ops.validate_widths(self.phase1_widths, self.width)
    for lr in every_lr:
      if not (math.isfinite(lr) and lr > 0):
        raise ValueError(f"lr={lr} must be > 0 and finite")
    if self.repeats < 1:
      raise ValueError(f"repeats={self.repeats} must be >= 1")
    if self.phase2_max_masks is not None and not (
      isinstance(self.phase2_max_masks, int) and self.phase2_max_masks >= 1
    ):
      raise ValueError(f"phase2_max_masks={self.phase2_max_masks} must be an integer >= 1")
    probe = ExperimentSpec(seed=0, lr=0.1, epochs=self.epochs, width=self.width, init=self.init)
    for lr, schedule in itertools.product(every_lr, self.schedules):
      spec_ops.validate(dataclasses.replace(probe, lr=lr, schedule=schedule))
    if self.phase1_widths is None and not phase1_levels(self):
      raise ValueError(
        f"phase1_budget={self.phase1_budget} leaves no width triple for phase 1 (the smallest "
        "network has more dense parameters), so the search has no runs; raise it"
      )

  def fingerprint(self) -> str:
    """Hash of the fields that define runs (an init by its contents) and of the
    training semantics; the fallback settings define none, and the robust
    rule's fields enter only a robust search's hash."""
    fields = dataclasses.asdict(self)
    for name in ("phase1_fallback", "max_fallbacks", "phase1_only", "phase2_max_masks"):
      fields.pop(name)
    if self.phase2_lrs is None:  # so searches from before the field keep their stores
      fields.pop("phase2_lrs")
    if not self.robust:
      for name in ("rule",) + ROBUST_FIELDS:
        fields.pop(name)
    fields["init"] = spec_ops.init_id(self.init)
    fields["semantics"] = SEMANTICS_VERSION
    return hashlib.sha1(json.dumps(fields, sort_keys=True).encode()).hexdigest()


def settings(config: SearchConfig, phase: str):
  """Every (lr, schedule, repeat) the reference rule trains each candidate of `phase` with."""
  return list(itertools.product(config.lrs_of(phase), config.schedules, range(config.repeats)))


def hyperparameters(config: SearchConfig, phase: str) -> list[tuple[float, str]]:
  """Every (lr, schedule) of `phase`: the settings the robust rule estimates a probability for."""
  return list(itertools.product(config.lrs_of(phase), config.schedules))


def _spec(config: SearchConfig, family: str, label: str, lr, schedule, repeat, **fields):
  return ExperimentSpec(
    seed=spec_ops.run_seed(family, label, lr, schedule, repeat, spec_ops.init_id(config.init)),
    lr=float(lr),
    schedule=schedule,
    width=config.width,
    epochs=config.epochs,
    init=config.init,
    shared_order=config.shared_order,
    family=family,
    repeat=repeat,
    **fields,
  )


# --- Phase 1 ----------------------------------------------------------------


def phase1_levels(config: SearchConfig) -> list[tuple[int, list[tuple[int, int, int]]]]:
  """[(P, triples with that dense parameter count)], ascending P."""
  levels = defaultdict(list)
  for triple in itertools.product(range(1, config.max_width + 1), repeat=3):
    count = mask_ops.dense_parameter_count(triple)
    if config.phase1_budget is None or count < config.phase1_budget:
      levels[count].append(triple)
  return sorted(levels.items())


def phase1_spec(config: SearchConfig, triple, lr, schedule, repeat: int) -> ExperimentSpec:
  """The run of width triple (d1, d2, d3) at one setting and repeat."""
  return _spec(
    config, PHASE1, "x".join(map(str, triple)), lr, schedule, repeat, widths=tuple(triple)
  )


def phase1_specs(config: SearchConfig, triples) -> list[ExperimentSpec]:
  return [
    phase1_spec(config, triple, lr, schedule, repeat)
    for triple in triples
    for lr, schedule, repeat in settings(config, PHASE1)
  ]


# --- Phase 2 ----------------------------------------------------------------


def layer_shapes(widths) -> tuple[tuple[int, int], ...]:
  """(rows, cols) of the searched layers W1, W2, W3 for hidden widths (d1, d2, d3)."""
  d1, d2, d3 = widths
  return ((d1, mlp.INPUT_DIM), (d2, d1), (d3, d2))


def phase2_levels(config: SearchConfig, widths) -> list[int]:
  """Hidden nnz levels n1 + n2 + n3, ascending."""
  ranges = [enum.nnz_range(*shape) for shape in layer_shapes(widths)]
  return list(range(sum(r.start for r in ranges), sum(r.stop - 1 for r in ranges) + 1))


def level_mask_triples(config: SearchConfig, widths, level: int):
  """Every (n, index) per layer with n1 + n2 + n3 == level, in reference order.

  Yields ((n1, i1), (n2, i2), (n3, i3)). With reference caps, levels at or
  above cap_sum are empty and only the first cap_w2 W2 masks per n2 are used.
  """
  if config.reference_caps and level >= config.cap_sum:
    return
  shapes = layer_shapes(widths)
  ranges = [enum.nnz_range(*shape) for shape in shapes]
  for n1 in ranges[0]:
    for n2 in ranges[1]:
      n3 = level - n1 - n2
      if n3 not in ranges[2]:
        continue
      counts = [enum.count_layer_masks(*shape, n) for shape, n in zip(shapes, (n1, n2, n3))]
      if config.reference_caps:
        counts[1] = min(counts[1], config.cap_w2)
      for i1, i2, i3 in itertools.product(*(range(c) for c in counts)):
        yield (n1, i1), (n2, i2), (n3, i3)


def level_mask_triple_counts(config: SearchConfig, widths) -> dict[int, int]:
  """{hidden nnz level: mask triples}: what `level_mask_triples` yields per level,
  counted (per-layer counts convolved) instead of enumerated. Under the reference
  caps, W2 keeps at most cap_w2 masks per n2 and levels >= cap_sum are empty."""
  shapes = layer_shapes(widths)
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


def mask_config_label(triple) -> str:
  """The reference's per-layer (nnz, mask_config) indices, as stored."""
  return ",".join(f"{n}:{i}" for n, i in triple)


def parse_mask_config(label: str) -> tuple[tuple[int, int], ...]:
  """Inverse of `mask_config_label`: "n1:i1,n2:i2,n3:i3" -> ((n1, i1), (n2, i2), (n3, i3))."""
  return tuple(tuple(int(v) for v in part.split(":")) for part in label.split(","))


def network_masks(widths, triple, full_width: int) -> mlp.Params:
  """Full bool masks at `full_width` for a phase-2 mask triple (classifier dense over d3).

  Biases follow the comb-search rule: kept on the first d_l units (every such
  unit has an outgoing edge because no column is empty) and on the classifier.
  """
  d1, d2, d3 = widths
  blocks = [
    enum.mask_from_index(*shape, n, i) for shape, (n, i) in zip(layer_shapes(widths), triple)
  ]
  structured = mask_ops.structured_masks(widths, full_width)
  layers = []
  for l, layer in enumerate(structured):
    weight = np.zeros_like(layer.weight)
    if l < 3:
      rows, cols = blocks[l].shape
      weight[:rows, :cols] = blocks[l]
    else:
      weight = layer.weight.copy()
    layers.append(Layer(weight, layer.bias.copy()))
  return tuple(layers)


def phase2_candidates(config: SearchConfig, widths, triples) -> list:
  """The mask triples a level trains: all, or with `trains_representatives` the
  first of each hidden-unit relabelling class (order kept)."""
  triples = list(triples)
  if not config.trains_representatives:
    return triples
  keys = [
    tuple(
      network_masks(widths, t, config.width)[l].weight[: widths[l], :cols]
      for l, cols in enumerate((mlp.INPUT_DIM, widths[0], widths[1]))
    )
    for t in triples
  ]
  return [triples[i] for i in symmetry.network_representatives(keys)]


def phase2_spec(config: SearchConfig, widths, triple, lr, schedule, repeat: int, masks=None):
  """The run of mask triple ((n1, i1), (n2, i2), (n3, i3)) inside `widths` at one
  setting and repeat. masks: `network_masks(widths, triple, config.width)` if
  the caller has them already."""
  label = mask_config_label(triple)
  return _spec(
    config,
    PHASE2,
    f"{widths}:{label}",
    lr,
    schedule,
    repeat,
    mask=network_masks(widths, triple, config.width) if masks is None else masks,
    mask_config=label,
    target_nnz=sum(n for n, _ in triple) + widths[2],
  )


def phase2_specs(config: SearchConfig, widths, triples) -> list[ExperimentSpec]:
  specs = []
  for triple in phase2_candidates(config, widths, triples):
    masks = network_masks(widths, triple, config.width)
    for lr, schedule, repeat in settings(config, PHASE2):
      specs.append(phase2_spec(config, widths, triple, lr, schedule, repeat, masks))
  return specs
