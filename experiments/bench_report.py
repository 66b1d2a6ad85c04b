"""The benchmark's summary: the extrapolation check, the first-call ratio, the printed
table and the projected 95% search, all computed from the result dict. Reads no flags.
"""

from __future__ import annotations

from typing import Any, Callable, Iterable, Sequence

import numpy as np

from experiments import projection
from experiments.bench_timing import TABLE_HEADER, table_row

SECTIONS = ("dense_w16", "structured_333")
# The phase-1 answer of our random-init 95% search (README).
SEARCH95_WIDTHS = (4, 2, 4)


def first_call_ratio(records: Iterable[dict[str, Any]]) -> dict[str, Any] | None:
  """How much slower a program's first call after `.compile()` is than its warm median."""
  ratios = []
  for r in records:
    if r.get("status") == "ok" and r.get("warm"):
      median = r.get("median_1epoch_s", r["median_s"])
      if median > 0:
        ratios.append(r["first_call_s"] / median)
  if not ratios:
    return None
  return {
    "median": round(float(np.median(ratios)), 4),
    "max": round(max(ratios), 4),
    "count": len(ratios),
    "note": "first_call_s / warm median of the same program, over the (a) and (b) sweeps",
  }


def extrapolation_check(result: dict[str, Any], settings: dict[str, Any]) -> dict[str, Any]:
  """The sweep's extrapolation of each headline configuration vs its real full-length run."""
  checks = []
  for name in SECTIONS:
    best = result.get(name, {}).get("best")
    if best is None or best.get("status") != "ok" or best["basis"] != "measured":
      continue
    swept = [
      r
      for r in result[name]["sweep"]
      if r["status"] == "ok"
      and r.get("warm")
      and r["basis"] == "extrapolated"
      and r["formulation"] == best["formulation"]
      and r["chunk"] == best["chunk"]
    ]
    if not swept:
      continue
    s = swept[0]
    error = s["seconds_per_run_epochs"] / best["median_s"] - 1.0
    check = {
      "config": name,
      "formulation": best["formulation"],
      "chunk": best["chunk"],
      "method": s.get("extrapolation"),
      "sweep_epochs": s["epochs"],
      "extrapolated_s": s["seconds_per_run_epochs"],
      "measured_s": best["median_s"],
      "relative_error": round(error, 4),
      "within_tolerance": abs(error) <= settings["tolerance"],
    }
    if "cpu_seconds_per_run_epochs" in s and best.get("median_cpu_s"):
      check["cpu_extrapolated_s"] = s["cpu_seconds_per_run_epochs"]
      check["cpu_measured_s"] = best["median_cpu_s"]
      check["cpu_relative_error"] = round(
        s["cpu_seconds_per_run_epochs"] / best["median_cpu_s"] - 1.0, 4
      )
    plain = s["median_s"] * best["run_epochs"] / s["epochs"]
    check["plain_scaling_s"] = round(plain, 4)
    check["plain_scaling_relative_error"] = round(plain / best["median_s"] - 1.0, 4)
    if "fit" in s:
      check["fit"] = s["fit"]
    checks.append(check)
  return {
    "tolerance": settings["tolerance"],
    "checks": checks,
    "valid": bool(checks) and all(c["within_tolerance"] for c in checks),
    "note": (
      "cpu_* repeat the check in process CPU time, which other processes on a "
      "shared machine disturb far less than wall time. "
      "extrapolated = fixed + run_epochs x per_epoch from the sweep's 1- and "
      "sweep_epochs-epoch calls; plain_scaling = sweep call x run_epochs / "
      "sweep_epochs (counts the fixed cost, mostly the final evaluation, "
      "run_epochs / sweep_epochs times)"
    ),
  }


def print_summary(result: dict[str, Any], log: Callable[[str], None] = print) -> None:
  log("")
  log("=" * 110)
  log(
    f"summary ({'quick' if result['quick'] else 'full'}; load average start "
    f"{[round(v, 2) for v in result['loadavg']['start'] or []]}, end "
    f"{[round(v, 2) for v in result['loadavg']['end'] or []]}; {result['total_seconds']} s)"
  )
  log(TABLE_HEADER)
  sharded = result.get("sharded", {})
  for name in SECTIONS:
    for r in result[name]["sweep"]:
      log(table_row(r))
    if result[name]["best"] is not None and result[name]["best"] not in result[name]["sweep"]:
      log(table_row(result[name]["best"]))
    if sharded.get("status") == "ok" and sharded.get(name, {}).get("best") is not None:
      log(table_row(sharded[name]["best"]))
  if sharded.get("status") not in ("ok", "skipped"):
    log(f"sharded: {sharded.get('status')}: {sharded.get('reason')}")
  orders = result.get("data_order", {})
  if orders.get("status") == "ok":
    log(f"order generation alone, ms per key-epoch: {orders['order_generation_ms_per_key_epoch']}")
    for name in SECTIONS:
      costs = orders.get(name, {}).get("ms_per_experiment_epoch_vs_shared_feistel")
      if costs:
        log(f"  {name}: extra ms per experiment-epoch vs shared/feistel: {costs}")
  for check in result["extrapolation_check"]["checks"]:
    log(
      f"extrapolation check {check['config']}: {check['extrapolated_s']:.2f} s extrapolated "
      f"({check['method']}) vs {check['measured_s']:.2f} s measured "
      f"({100 * check['relative_error']:+.1f}%, "
      f"{'ok' if check['within_tolerance'] else 'OUTSIDE'} "
      f"{100 * result['extrapolation_check']['tolerance']:.0f}%; plain scaling "
      f"{100 * check['plain_scaling_relative_error']:+.1f}%; in CPU time "
      f"{100 * check.get('cpu_relative_error', float('nan')):+.1f}%)"
    )
  oracle = result["oracle"]
  if oracle.get("status") == "ok":
    log(
      f"oracle: {oracle['seconds_per_run']:.2f} s per {result['settings']['epochs']}-epoch "
      f"run (median; min {oracle['seconds_per_run_min']:.2f} s), width 16, one thread"
    )
  for name, target in result["targets"].items():
    speed = result["speedup"].get(name)
    extra = ""
    if speed:
      extra = f"; speed-up {speed['per_machine']}x per machine, {speed['per_core']}x per core"
    log(
      f"target {name}: >= {target['target_runs_per_s']} runs/s, achieved "
      f"{target['achieved_runs_per_s']} -> {'MET' if target['met'] else 'not met'}{extra}"
    )
  if result.get("recommendations"):
    log("recommendations (width: formulation chunk runs/s [measured width]):")
    for width, rec in result["recommendations"].items():
      if rec:
        log(
          f"  w{width:>2}: {rec['formulation']:<4} {rec['chunk']:>5} "
          f"{rec['runs_per_s']:>8.2f} [w{rec['measured_width']}, {rec['basis']}]"
        )
    log(f"chunk_plan: {result['chunk_plan']}")


def search_projection(
  result: dict[str, Any],
  log: Callable[[str], None] = print,
  phase2_widths: Sequence[int] = SEARCH95_WIDTHS,
) -> dict[str, Any]:
  """Projected wall time of the full 95% search (issue: under 3 hours on this CPU).

  Rates per padded width come from the per-width table and the two measured
  headlines (width 3 and width 16); phase 2 is every mask triple inside
  `phase2_widths` (our random-init phase-1 answer) x 6 settings.
  """
  rates = {
    int(w): b["runs_per_s"]
    for w, b in result.get("per_width", {}).get("buckets", {}).items()
    if b and b.get("runs_per_s")
  }
  for name, width in (("structured_333", 3), ("dense_w16", 16)):
    achieved = result.get("targets", {}).get(name, {}).get("achieved_runs_per_s")
    if achieved:
      rates[width] = achieved
  if not rates:
    return {"status": "skipped: no rates"}
  out = projection.project(rates, tuple(phase2_widths))
  out["rates_runs_per_s"] = rates
  log(
    f"phase 2 at the 95% widths {tuple(phase2_widths)}: {out['phase2_runs_per_second']:.2f} runs/s; "
    f"projected full 95% search (phase 1 {out['phase1_runs']} runs + phase 2 "
    f"{out['phase2_runs']} runs): {out['total_hours']:.2f} h on this machine"
  )
  return out
