"""What the study costs: the dry run's table of experiments, done counts and projected time.

`rates_from_bench` reads the rates `make bench` measured (bench.json,
bench_pruning.json; the GPU files when they exist); `project_seconds` turns a
family's workload (search.study.workload: runs by method and width) into
time, as experiments/projection.py and experiments/bench_pruning.py do;
`plan` and `format_plan` make the dry run's table.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import NamedTuple

import numpy as np

from search.study import (
  PLAIN,
  Family,
  Job,
  StudyConfig,
  count,
  resolve,
  selected_families,
  workload,
)
from search.study_stores import (
  Done,
  done,
  read_answers,
)

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


def pruning_seconds_per_run(method: str, width: int, rates: Rates) -> float | None:
  """Plain training's cost at `width` (or the nearest timed width) times the method's
  overhead at the nearest width (log scale) *that method* was timed at; None if the
  method was never timed. experiments.bench_pruning.project_overparam uses it too."""
  measured = sorted(w for m, w in rates.overhead if m == method)
  if not measured or not rates.plain:
    return None
  nearest = min(measured, key=lambda w: abs(np.log(w) - np.log(width)))
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
      per_run = pruning_seconds_per_run(method, width, rates)
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
