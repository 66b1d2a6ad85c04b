r"""Where a training step's time goes, and how close it is to the machine's fp32 peak.

  python -m experiments.profile_step --out=profile_step.json

For the two headline programs (dense width 16 in the "dot" layout, chunk 128;
the (3,3,3) network in the "unit" layout, chunk 512), on one device:
- the useful arithmetic of the network: forward 2 flops per weight per point,
  backward 4 (XLA's cost analysis does not count inside a scan's loop);
- warm seconds of one epoch (390 steps) of the whole step, and of its parts
  compiled alone on the same shapes: the data order (the epoch's Feistel
  indices and the gather), the forward pass and loss, forward and backward, and
  the final evaluation on all points (once per run, so 1/50 of it in a real run),
  and the rest (the SGD update and the loop);
- the fraction of the machine's fp32 peak the step reaches, the peak measured
  here with large float32 matmuls (`jnp.dot` of 1024 x 1024 blocks).
"""

from __future__ import annotations

import json
import logging
import platform
import statistics
import time

import jax
import jax.numpy as jnp
import numpy as np
from absl import app, flags

from cubist import chunks, data, layouts, mlp, order, train
from cubist.specs import ExperimentSpec

_OUT = flags.DEFINE_string("out", "profile_step.json", "Where to write the JSON results.")
_REPEATS = flags.DEFINE_integer("repeats", 5, "Timed warm calls (median).")

CASES = (("dense_w16", 16, (16, 16, 16), "dot", 128), ("structured_333", 3, (3, 3, 3), "unit", 512))


def _timed(fn, *args, repeats: int) -> float:
  jax.block_until_ready(fn(*args))
  samples = []
  for _ in range(repeats):
    began = time.perf_counter()
    jax.block_until_ready(fn(*args))
    samples.append(time.perf_counter() - began)
  return statistics.median(samples)


def peak_gflops(repeats: int) -> float:
  """fp32 GFLOP/s of large matmuls on one device (a practical peak)."""
  a = jnp.asarray(np.random.default_rng(0).standard_normal((1024, 1024)), jnp.float32)
  matmul = jax.jit(lambda a: jax.lax.fori_loop(0, 16, lambda i, x: x @ a * 1e-3, a))
  return 16 * 2 * 1024**3 / _timed(matmul, a, repeats=repeats) / 1e9


def profile(name, width, widths, formulation, chunk, repeats) -> dict:
  specs = [ExperimentSpec(seed=s, lr=0.1, width=16, widths=widths, epochs=1) for s in range(chunk)]
  inputs = chunks.chunk_inputs(specs, width)
  x, y = (jnp.asarray(a) for a in data.cubist_spiral())
  static = train.TrainStatic(width=width, epochs=1, formulation=formulation)
  whole = train.make_train(static)
  epoch_s = _timed(whole, x, y, inputs, repeats=repeats)

  params = layouts.to_layout(mlp.apply_masks(inputs.params, inputs.masks), formulation)
  x_steps = x.T if formulation == "unit" else x
  states = jax.vmap(
    lambda key: order.epoch_state(
      order.epoch_key(key, 0), data.NUM_POINTS, data.BATCH_SIZE, "feistel"
    )
  )(inputs.key)
  batches = order.batches_from_states(states, data.NUM_POINTS, data.BATCH_SIZE, "feistel")
  if formulation == "unit":
    batches = jnp.transpose(batches, (1, 2, 0))
  else:
    batches = jnp.swapaxes(batches, 0, 1)

  def data_order(key):
    s = jax.vmap(
      lambda k: order.epoch_state(
        order.epoch_key(k, 0), data.NUM_POINTS, data.BATCH_SIZE, "feistel"
      )
    )(key)
    b = order.batches_from_states(s, data.NUM_POINTS, data.BATCH_SIZE, "feistel")
    return jax.lax.map(
      lambda idx: layouts.gather(x_steps, y, idx.T if formulation == "unit" else idx, formulation)[
        0
      ].sum(),
      b.swapaxes(0, 1),
    )

  def forward(p):
    return jax.lax.map(
      lambda idx: layouts.losses(
        p, *layouts.gather(x_steps, y, idx, formulation), formulation
      ).sum(),
      batches,
    )

  def backward(p):
    loss = lambda p, idx: layouts.losses(
      p, *layouts.gather(x_steps, y, idx, formulation), formulation
    ).sum()
    return jax.lax.map(lambda idx: jax.tree.leaves(jax.grad(loss)(p, idx))[0].sum(), batches)

  parts = {
    "data_order_and_gather": _timed(jax.jit(data_order), inputs.key, repeats=repeats),
    "forward_and_loss": _timed(jax.jit(forward), params, repeats=repeats),
    "forward_backward": _timed(jax.jit(backward), params, repeats=repeats),
  }
  evaluate = jax.jit(lambda p: layouts.evaluate(p, x, y, formulation, static.eval_block))
  parts["final_evaluation"] = _timed(evaluate, params, repeats=repeats)
  parts["sgd_update_and_loop"] = max(
    epoch_s
    - parts["forward_backward"]
    - parts["final_evaluation"]
    - parts["data_order_and_gather"],
    0.0,
  )
  weights = 2 * widths[0] + widths[0] * widths[1] + widths[1] * widths[2] + widths[2]
  useful = 6 * weights * data.BATCH_SIZE * static.batches_per_epoch  # forward 2, backward 4
  return dict(
    name=name,
    width=width,
    widths=widths,
    formulation=formulation,
    chunk=chunk,
    epoch_seconds=epoch_s,
    parts_seconds=parts,
    useful_flops_per_run_epoch=useful,
    useful_gflops_per_s=useful * chunk / epoch_s / 1e9,
    runs_per_s_one_device=chunk
    / (50 * (epoch_s - parts["final_evaluation"]) + parts["final_evaluation"]),
  )


def main(argv):
  del argv
  logging.getLogger("jax._src.xla_bridge").setLevel(logging.WARNING)  # no libtpu line
  peak = peak_gflops(_REPEATS.value)
  result = dict(
    machine=dict(
      platform=platform.platform(), processor=platform.processor(), devices=jax.device_count()
    ),
    peak_gflops_one_device=peak,
    cases=[],
  )
  for case in CASES:
    record = profile(*case, repeats=_REPEATS.value)
    record["fraction_of_peak"] = record["useful_gflops_per_s"] / peak
    result["cases"].append(record)
    parts = ", ".join(f"{k} {v * 1000:.0f} ms" for k, v in record["parts_seconds"].items())
    print(
      f"{record['name']}: one epoch {record['epoch_seconds'] * 1000:.0f} ms for "
      f"{record['chunk']} runs ({parts}); useful {record['useful_gflops_per_s']:.1f} GFLOP/s "
      f"= {100 * record['fraction_of_peak']:.0f}% of the {peak:.0f} GFLOP/s matmul peak",
      flush=True,
    )
  with open(_OUT.value, "w") as handle:
    json.dump(result, handle, indent=2)


if __name__ == "__main__":
  app.run(main)
