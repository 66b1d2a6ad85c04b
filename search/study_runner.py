"""Running the study: every selected family in turn, resumable and shardable.

Phase 1s first (their answers decide the widths of what follows), each family
into DIR/<family> through the search or the engine, then DIR/study.json.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np

from cubist import engine
from search import combinatorial
from search.pruning import registry
from search.study import (
  PHASE1,
  RANDOM,
  StudyConfig,
  count,
  execution_order,
  fingerprint,
  resolve,
  selected_families,
)
from search.study_stores import (
  finished_rows,
  phase1_answer,
  read_answers,
  record_answers,
)

# --- Running it --------------------------------------------------------------------


def run(
  config: StudyConfig,
  workdir,
  shard_index: int = 0,
  num_shards: int = 1,
  plan: engine.ChunkPlan | None = None,
  progress_stream=None,
  log=print,
  poll_seconds: float = 5.0,
  stop=None,
) -> list[dict]:
  """Train every selected family into DIR/<family>, phase 1s first; resumable and shardable.

  Each shard trains its stable share of every family (by exp_id) into its own
  store file; the searches wait for the other shards at their level
  boundaries, so every shard reads the same phase-1 answers. Returns one
  summary per family (name, experiments, widths, answer); shard 0 also writes
  DIR/study.json.
  stop: polled after every committed chunk; True ends the study with
  engine.Interrupted (the same call resumes).
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
        record_answers(config, family, job, [], answers)
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
        stop=stop,
      ).run()
      if family.kind == PHASE1:
        rows = finished_rows(job, family_dir)
        if rows is None:
          raise RuntimeError(f"{family.name}: phase 1 is not complete in {family_dir}")
        record_answers(config, family, job, rows, answers)
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
        stop=stop,
      ) as results:
        summary["shard_runs"] = results.count()
    summaries.append(summary)
  if shard_index == 0:
    workdir.mkdir(parents=True, exist_ok=True)
    path = workdir / "study.json"
    record = study_record(config, summaries, _read_json(path))
    path.write_text(json.dumps(record, indent=2, default=_jsonable))
  return summaries


def study_record(config: StudyConfig, summaries: list[dict], earlier: dict | None) -> dict:
  """DIR/study.json: this run's config and, after this run's family summaries, those of
  earlier runs of the same plan that this run did not repeat.

  A study run in stages (`families=a`, then `families=b`) so lists every family it has
  run in DIR. An earlier record of another plan (its config differs in more than
  `families`) is dropped: its families belong to runs this config does not describe.
  earlier: the study.json found in DIR (None: none, or unreadable; the stores, not
  this summary, are the truth).
  """
  config_json = json.loads(json.dumps(dataclasses.asdict(config), default=_jsonable))
  kept = []
  if earlier and _without_families(earlier.get("config")) == _without_families(config_json):
    ran = {s["family"] for s in summaries}
    kept = [s for s in earlier.get("families", []) if s.get("family") not in ran]
  return {"config": config_json, "families": kept + summaries}


def _without_families(config_json) -> dict | None:
  if not isinstance(config_json, dict):
    return None
  return {k: v for k, v in config_json.items() if k != "families"}


def _read_json(path: Path) -> dict | None:
  try:
    record = json.loads(path.read_text())
  except (OSError, ValueError):
    return None
  return record if isinstance(record, dict) else None


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
