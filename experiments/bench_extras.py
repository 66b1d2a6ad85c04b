"""The benchmark's measurements besides the single-device sweeps, and the machine it ran on.

`machine_info`; the best configurations sharded over N host devices
(`run_sharded` starts `python -m experiments.bench --sharded_child=...`, whose
`main` calls `run_sharded_child`: the device count must be set before jax is
imported); the PyTorch oracle's seconds per run and the speed-ups against it;
the cost of the data orders. Reads no flags.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import jaxlib
import numpy as np

from cubist import data, order, train
from experiments.bench_timing import (
  DENSE_WIDTH,
  best_of,
  brief,
  measure,
  order_label,
  spiral,
  table_row,
)

# --------------------------------------------------------------------------- machine


def machine_info() -> dict[str, Any]:

  return {
    "platform": platform.platform(),
    "processor": platform.processor(),
    "uname": platform.uname()._asdict(),
    "cpu_count": os.cpu_count(),
    "python": sys.version.split()[0],
    "jax": jax.__version__,
    "jaxlib": getattr(jaxlib, "__version__", None),
    "numpy": np.__version__,
    "backend": jax.default_backend(),
    "devices": [str(d) for d in jax.devices()],
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }


# --------------------------------------------------------------------------- sharded child


def run_sharded_child(spec: dict[str, Any], out_path: str) -> None:
  """In a process started with N host devices: measure the spec's configurations sharded."""
  x, y = spiral()
  mesh = train.experiment_mesh()
  result: dict[str, Any] = {
    "device_count": mesh.size,
    "devices": [str(d) for d in mesh.devices.flat],
    "xla_flags": os.environ.get("XLA_FLAGS", ""),
  }
  common = dict(
    run_epochs=spec["run_epochs"],
    repeats=spec["repeats"],
    shared_order=spec["shared_order"],
    order_method=spec["order"],
    compile_limit_s=spec["compile_limit_s"],
    mesh=mesh,
  )
  for name, config in spec["configs"].items():
    records = []
    for chunk in config["chunks"]:
      records.append(
        measure(
          x,
          y,
          label=f"{name} sharded",
          mask_widths=config["mask_widths"],
          width=config["width"],
          formulation=config["formulation"],
          chunk=chunk,
          epochs=spec["sweep_epochs"],
          call_limit_s=spec["call_limit_s"],
          **common,
        )
      )
      print(table_row(records[-1]), flush=True)
    entry: dict[str, Any] = {"sweep": records, "best": None}
    top = best_of(records)
    if top is not None and spec["headline"]:
      entry["best"] = measure(
        x,
        y,
        label=f"{name} sharded best",
        mask_widths=config["mask_widths"],
        width=config["width"],
        formulation=config["formulation"],
        chunk=top["chunk"],
        epochs=spec["run_epochs"],
        call_limit_s=float("inf"),
        warmup=spec["headline_warmup"],
        **common,
      )
      print(table_row(entry["best"]), flush=True)
    else:
      entry["best"] = top
    result[name] = entry
  with open(out_path, "w") as f:
    json.dump(result, f, indent=1)


def run_sharded(
  spec: dict[str, Any], devices: int, timeout_s: float, log: Callable[[str], None] = print
) -> dict[str, Any]:
  """Run `run_sharded_child` in a subprocess with `devices` host devices."""
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + f" --xla_force_host_platform_device_count={devices}"
  ).strip()
  root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
  env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
  with tempfile.TemporaryDirectory() as tmp:
    out_path = os.path.join(tmp, "sharded.json")
    command = [
      sys.executable,
      "-m",
      "experiments.bench",
      f"--sharded_child={json.dumps(spec)}",
      f"--child_out={out_path}",
    ]
    start = time.perf_counter()
    try:
      proc = subprocess.run(
        command, env=env, cwd=root, capture_output=True, text=True, timeout=timeout_s, check=False
      )
    except subprocess.TimeoutExpired:
      return {"status": "failed", "reason": f"timed out after {timeout_s:.0f} s"}
    for line in proc.stdout.splitlines():
      log(line)
    if proc.returncode != 0 or not os.path.exists(out_path):
      return {
        "status": "failed",
        "reason": f"exit code {proc.returncode}",
        "stderr_tail": proc.stderr[-2000:],
      }
    with open(out_path) as f:
      result = json.load(f)
  result.update(status="ok", child_seconds=round(time.perf_counter() - start, 1))
  return result


# --------------------------------------------------------------------------- oracle


def measure_oracle(run_epochs: int, repeats: int, epochs: int = 1) -> dict[str, Any]:
  """PyTorch oracle's seconds per `run_epochs`-epoch run at width 16 (one CPU thread)."""
  try:
    from third_party import torch_reference  # pylint: disable=import-outside-toplevel
  except ImportError as error:  # torch is a test-only dependency
    return {"status": "skipped", "reason": f"cannot import the oracle: {error}"}
  raw = torch_reference.seconds_per_run(
    width=DENSE_WIDTH, epochs=epochs, run_epochs=run_epochs, repeats=repeats
  )
  return {
    "status": "ok",
    "width": DENSE_WIDTH,
    "seconds_per_run": raw["seconds_per_epoch_median"] * run_epochs,
    "seconds_per_run_min": raw["projected_seconds_per_run"],
    "statistic": (
      f"median (and min) of {raw['repeats']} calls of {epochs} epoch(s), "
      f"scaled linearly to {run_epochs} epochs"
    ),
    "basis": "extrapolated" if epochs != run_epochs else "measured",
    "threads": raw["num_threads"],
    "raw": raw,
  }


def speedup(best: dict[str, Any] | None, oracle: dict[str, Any], cores: int):
  if best is None or oracle.get("status") != "ok":
    return None
  runs = best["runs_per_s"]
  seconds = oracle["seconds_per_run"]
  return {
    "runs_per_s": runs,
    "config": brief(best),
    "oracle_seconds_per_run": seconds,
    "oracle_width": oracle["width"],
    "oracle_threads": oracle["threads"],
    "cores": cores,
    "per_machine": round(runs * seconds, 2),
    "per_core": round(runs * seconds / cores, 2),
    "note": (
      "per_machine = runs/s x oracle s/run (the oracle on one thread, dense width "
      "16, as the reference trains masked networks at full width); per_core "
      "divides by the machine's cores, i.e. against one oracle per core"
    ),
  }


# --------------------------------------------------------------------------- data order


def _order_generation_ms(keys: int = 256, repeats: int = 3) -> dict[str, float]:
  """ms per key and epoch to draw one epoch's batches alone, per order method."""
  key_array = jnp.asarray(np.random.default_rng(0).integers(0, 2**32, (keys, 2), np.uint32))
  out = {}
  for method in order.ORDER_METHODS:
    fn = jax.jit(
      jax.vmap(lambda k, m=method: order.epoch_batches(k, data.NUM_POINTS, data.BATCH_SIZE, m))
    )
    jax.block_until_ready(fn(key_array))
    samples = []
    for _ in range(max(1, repeats)):
      t0 = time.perf_counter()
      jax.block_until_ready(fn(key_array))
      samples.append(time.perf_counter() - t0)
    out[method] = round(1e3 * float(np.median(samples)) / keys, 4)
  return out


def measure_data_order(x, y, result, sections, settings, log) -> dict[str, Any]:
  """Every (shared, method) data order for the best sweep configuration of each section."""
  out: dict[str, Any] = {
    "status": "ok",
    "order_generation_ms_per_key_epoch": _order_generation_ms(settings["order_keys"]),
    "order_generation_note": (
      f"jit(vmap(order.epoch_batches)) over {settings['order_keys']} "
      "keys, all 390 batches of one epoch, warm median"
    ),
  }
  for name, section in sections.items():
    base = best_of(result[name]["sweep"])
    if base is None or name not in settings.get("data_order_sections", sections):
      continue
    variants = {order_label(base): base}
    for shared in (False, True):
      for method in order.ORDER_METHODS:
        label = f"{'shared' if shared else 'own'}/{method}"
        if label in variants or label not in settings["data_order_variants"]:
          continue
        variants[label] = measure(
          x,
          y,
          label=f"{name} order",
          mask_widths=section["mask_widths"],
          width=section["width"],
          formulation=base["formulation"],
          chunk=base["chunk"],
          epochs=settings["sweep_epochs"],
          run_epochs=settings["epochs"],
          repeats=settings["repeats"],
          shared_order=shared,
          order_method=method,
          call_limit_s=settings["call_limit_s"],
          compile_limit_s=settings["compile_limit_s"],
        )
        log(table_row(variants[label]))
    entry: dict[str, Any] = {
      "formulation": base["formulation"],
      "chunk": base["chunk"],
      "variants": {k: brief(v) if v["status"] == "ok" else v for k, v in variants.items()},
    }
    reference = variants.get("shared/feistel")
    if reference is not None and reference["status"] == "ok":
      entry["ms_per_experiment_epoch_vs_shared_feistel"] = {
        k: round(
          1e3
          * (v["seconds_per_run_epochs"] - reference["seconds_per_run_epochs"])
          / (v["chunk"] * v["run_epochs"]),
          4,
        )
        for k, v in variants.items()
        if v["status"] == "ok"
      }
    out[name] = entry
  return out
