"""Plain-text summaries of store rows, and sweep fingerprints for configs."""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict

import numpy as np

from cubist.semantics import SEMANTICS_VERSION
from cubist.specs import init_id


def config_fingerprint(config) -> str:
  """A stable hash of a config under this code's training semantics: a workdir belongs to one."""
  fields = config.to_dict()
  if isinstance(fields.get("init"), str):
    fields["init"] = init_id(fields["init"])  # a file by its contents, not its path
  payload = {"config": fields, "semantics": SEMANTICS_VERSION}
  return hashlib.sha1(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()


def table(rows: list[dict], group_by: tuple[str, ...]) -> str:
  """One line per group: runs, diverged (and failed) runs, accuracy mean/median/max, NNZ counts.

  Accuracies and NNZ counts are those of the group's `ok` runs only: a
  diverged run's accuracy is that of NaN weights, which would drag the mean
  down without saying why, so it is counted in its own column instead. A
  group without an ok run shows "-" (never "nan%", and no numpy warning).
  """
  groups = defaultdict(list)
  for row in rows:
    groups[tuple(row[k] for k in group_by)].append(row)
  failed = any(row["status"] == "failed" for row in rows)
  header = list(group_by) + ["runs", "diverged"] + (["failed"] if failed else [])
  header += ["acc_mean", "acc_median", "acc_max", "weight_nnz", "model_nnz"]
  lines = [header]
  for key in sorted(groups, key=lambda k: tuple((v is None, v) for v in k)):
    members = groups[key]
    ok = [r for r in members if r["status"] == "ok"]
    accuracy = np.array([r["accuracy"] for r in ok if r["accuracy"] is not None], float)
    accuracy = accuracy[np.isfinite(accuracy)]
    counts = [str(len(members)), str(sum(r["status"] == "diverged" for r in members))]
    if failed:
      counts.append(str(sum(r["status"] == "failed" for r in members)))
    lines.append(
      [
        *(str(v) for v in key),
        *counts,
        *(
          f"{100 * f(accuracy):.2f}%" if accuracy.size else "-"
          for f in (np.mean, np.median, np.max)
        ),
        _span(sorted({r["weight_nnz"] for r in ok if r["weight_nnz"] is not None})),
        _span(sorted({r["model_nnz"] for r in ok if r["model_nnz"] is not None})),
      ]
    )
  widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
  return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths)) for line in lines)


def _span(values) -> str:
  values = [v for v in values if v is not None]
  if not values:
    return "-"
  return str(values[0]) if len(values) == 1 else f"{values[0]}-{values[-1]}"
