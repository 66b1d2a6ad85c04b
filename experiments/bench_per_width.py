"""The benchmark's per-width table: the fastest formulation and chunk size per padded width.

`measure_recommendations` sweeps all-ones networks of a few widths (with
`bench_timing.sweep`'s rules) and fills every width bucket up to 16 from the
smallest measured width above it; `chunk_plan` turns the buckets into the
fields of the engine's `ChunkPlan`. Reads no flags.
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from cubist import train
from experiments.bench_timing import DENSE_WIDTH, best_of, brief, sweep

DEFAULT_PER_WIDTH_WIDTHS = (1, 2, 3, 4, 6, 8, 12, 16)


# --------------------------------------------------------------------------- per width


def default_chunks(width: int) -> tuple[int, ...]:
  """Chunk sizes tried for the recommendation table: wider nets, smaller chunks."""
  if width <= 2:
    return (512, 2048)
  if width <= 4:
    return (256, 1024)
  if width <= 8:
    return (128, 512)
  return (64, 256)


def chunk_plan(buckets: dict[str, Any]) -> dict[str, Any] | None:
  """`engine.ChunkPlan` fields from per-width buckets: unit up to a width, chunk per range."""
  widths = sorted(int(w) for w, b in buckets.items() if b is not None)
  if not widths:
    return None
  unit_max = 0
  for w in widths:
    if buckets[str(w)]["formulation"] != "unit":
      break
    unit_max = w
  sizes: list[list[int]] = []
  for w in widths:
    chunk = buckets[str(w)]["chunk"]
    if sizes and sizes[-1][1] == chunk:
      sizes[-1][0] = w
    else:
      sizes.append([w, chunk])
  return {
    "unit_max_width": unit_max,
    "chunk_sizes": sizes,
    "note": "widths above unit_max_width use dot; chunk_sizes are (max_width, chunk)",
  }


def measure_recommendations(
  x,
  y,
  *,
  widths: Sequence[int] = DEFAULT_PER_WIDTH_WIDTHS,
  chunks_for_width: Callable[[int], Sequence[int]] = default_chunks,
  formulations: Sequence[str] = train.FORMULATIONS,
  epochs: int = 2,
  run_epochs: int = 50,
  repeats: int = 3,
  shared_order: bool = False,
  order_method: str = "feistel",
  call_limit_s: float = 40.0,
  compile_limit_s: float = 120.0,
  prune_ratio: float = 0.33,
  reuse: dict | None = None,
  max_width: int = DENSE_WIDTH,
  log: Callable[[str], None] = print,
) -> dict[str, Any]:
  """Fastest formulation and chunk size per width bucket (extrapolated from short calls).

  Each width in `widths` is timed with all-ones masks for every formulation
  and `chunks_for_width(width)` chunk, with `sweep`'s rules (1- and
  `epochs`-epoch programs, fitted and extrapolated to `run_epochs`). `reuse`
  maps (width, formulation, chunk) to existing records of the same settings.

  Returns {"epochs_timed", "run_epochs", "basis", "shared_order", "order",
  "widths": {str(w): {"best", "measurements"}}, "buckets": {str(w) for w in
  1..max_width: {"formulation", "chunk", "runs_per_s", "measured_width",
  "basis"} or None}, "chunk_plan"}. A width that was not measured takes the
  recommendation of the smallest measured width above it (the engine pads a
  network up to its bucket's width, which is exact).
  """
  measured: dict[str, Any] = {}
  for width in sorted({int(w) for w in widths}):
    records = sweep(
      x,
      y,
      label=f"per-width w{width}",
      mask_widths=None,
      width=width,
      formulations=formulations,
      chunks=chunks_for_width(width),
      epochs=epochs,
      run_epochs=run_epochs,
      repeats=repeats,
      shared_order=shared_order,
      order_method=order_method,
      call_limit_s=call_limit_s,
      compile_limit_s=compile_limit_s,
      prune_ratio=prune_ratio,
      log=log,
      reuse=reuse,
    )
    measured[str(width)] = {"best": brief(best_of(records)), "measurements": records}
  buckets: dict[str, Any] = {}
  measured_widths = sorted(int(w) for w, v in measured.items() if v["best"] is not None)
  for width in range(1, max_width + 1):
    above = [w for w in measured_widths if w >= width]
    if not above:
      buckets[str(width)] = None
      continue
    best = measured[str(above[0])]["best"]
    buckets[str(width)] = {
      "formulation": best["formulation"],
      "chunk": best["chunk"],
      "runs_per_s": best["runs_per_s"],
      "measured_width": above[0],
      "basis": best["basis"],
    }
  return {
    "epochs_timed": epochs,
    "run_epochs": run_epochs,
    "basis": "extrapolated" if epochs != run_epochs else "measured",
    "shared_order": shared_order,
    "order": order_method,
    "widths": measured,
    "buckets": buckets,
    "chunk_plan": chunk_plan(buckets),
  }
