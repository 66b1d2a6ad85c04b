"""Tests of the vectorised trainer (cubist/train.py) and the schedules (cubist/schedules.py).

Fast by construction: width 4, 3 epochs of 8 steps on a 1,024-point subset of
the spiral. What they pin down:

- batching independence: an experiment's result does not depend on which other
  experiments share its chunk, nor on its position in it. Measured on CPU:
  * at any position within a chunk of the same size: BITWISE identical, both
    formulations;
  * alone (chunk of 1) vs in a chunk of 8: BITWISE identical over the whole
    trajectory and the full-data loss, both formulations. This needs the fixed
    order sums of `portable.pairwise_sum`: XLA vectorises a plain reduce over the
    batch axis (the bias gradient, the evaluation sums) differently for
    different chunk sizes, and the resulting 1-ulp differences grow chaotically
    over a 19,500-step run.
- the "dot" and "unit" formulations agree (float rounding only);
- masked entries stay exactly zero, active ones nonzero;
- shared_order: one data order for all experiments;
- no recompilation across chunks of the same shape (chex.assert_max_traces);
- sharding the experiment axis over 2 (virtual CPU) devices changes nothing;
- one-line ValueErrors for bad settings; closed forms of the schedules.
"""

from __future__ import annotations

import functools
import json
import math
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cubist import data, masks, mlp, schedules, train

ROOT = Path(__file__).resolve().parents[1]
WIDTH = 4
EPOCHS = 3  # step schedule: factor 1, 0.1, 0.01 (milestones ceil(0.9) = 1, ceil(1.8) = 2)
NUM_POINTS = 1_024  # 8 steps of 128 per epoch; 1024 = 32 * 32 for the Feistel order
CHUNK = 8
FIELDS = ("params", "accuracy", "loss", "epoch_loss", "step_loss")
TRAJECTORY = ("params", "accuracy", "epoch_loss", "step_loss")
# Bitwise on CPU where measured so (see the module docstring); other backends may
# vectorise differently, so elsewhere everything is compared at rel 1e-6.
ON_CPU = jax.default_backend() == "cpu"
# Is the trajectory bitwise independent of the chunk SIZE? (Position: always.)
BITWISE_ACROSS_SIZES = {"dot": True, "unit": True, "gemm": True}


def _static(formulation: str = "dot", **overrides) -> train.TrainStatic:
  settings = dict(
    width=WIDTH,
    epochs=EPOCHS,
    num_points=NUM_POINTS,
    formulation=formulation,
    record_step_losses=True,
  )
  settings.update(overrides)
  return train.TrainStatic(**settings)


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def subset():
  x, y = data.cubist_spiral()
  rows = np.sort(np.random.default_rng(7).choice(x.shape[0], NUM_POINTS, replace=False))
  return jnp.asarray(x[rows]), jnp.asarray(y[rows])


def _random_masks(rng: np.random.Generator, density: float) -> mlp.Params:
  weights = tuple(rng.random(shape) < density for shape, _ in mlp.layer_shapes(WIDTH))
  weights[3][0, 0] = True
  return jax.tree.map(np.asarray, masks.with_bias_rule(weights))


@functools.lru_cache(maxsize=None)
def _chunk_inputs() -> train.TrainInputs:
  """8 different experiments: seeds, lrs, schedules, inits and masks all vary.

  Experiment 1 is experiment 0 with another key only (same init, lr, schedule and
  mask): with per-experiment orders they differ, with shared_order they must not.
  Leaves are read-only numpy arrays (cheap to index, no eager-op compiles).
  """
  rng = np.random.default_rng(3)
  seeds = [100, 101, 102, 103, 104, 105, 106, 107]
  init_seeds = [0, 0, 2, 3, 4, 5, 6, 7]
  lrs = [0.1, 0.1, 0.05, 0.2, 0.1, 0.05, 0.2, 0.1]
  names = ["cosine", "cosine", "step", "constant", "step", "cosine", "constant", "step"]
  mask_list = [_random_masks(rng, 0.7) for _ in range(CHUNK)]
  mask_list[1] = mask_list[0]
  mask_list[2] = jax.tree.map(np.asarray, masks.structured_masks((3, 2, 4), WIDTH))
  mask_list[3] = jax.tree.map(lambda a: np.ones(np.shape(a), bool), mask_list[0])  # dense
  keys = jax.vmap(jax.random.PRNGKey)(jnp.asarray(init_seeds))
  params = mlp.slice_params(jax.jit(jax.vmap(lambda k: mlp.init(k, 16)))(keys), WIDTH)
  inputs = train.TrainInputs(
    key=jax.vmap(jax.random.PRNGKey)(jnp.asarray(seeds)),
    lr=np.asarray(lrs, np.float32),
    schedule=np.asarray([schedules.schedule_id(n) for n in names], np.int32),
    params=params,
    masks=jax.tree.map(lambda *a: np.stack(a), *mask_list),
  )
  inputs = jax.tree.map(lambda a: np.array(a), inputs)
  for leaf in jax.tree.leaves(inputs):
    leaf.setflags(write=False)
  return inputs


def _take(tree, rows):
  rows = np.asarray(rows)
  return jax.tree.map(lambda a: None if a is None else a[rows], tree, is_leaf=lambda a: a is None)


def _max_diff(a, b) -> float:
  la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
  assert len(la) == len(lb)
  return max(
    float(np.max(np.abs(np.asarray(u, np.float64) - np.asarray(v, np.float64))))
    for u, v in zip(la, lb)
  )


def _assert_same_result(
  got: train.TrainResult, want: train.TrainResult, what: str, exact: bool
) -> None:
  """Trajectory and full-data loss bitwise if `exact` (on CPU), else within rel 1e-6
  (abs 1e-7: parameters are O(0.1-1), so that is ~1 ulp)."""
  exact = exact and ON_CPU
  for field in TRAJECTORY:
    for u, v in zip(jax.tree.leaves(getattr(got, field)), jax.tree.leaves(getattr(want, field))):
      if exact:
        np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=f"{what}: {field}")
      else:
        np.testing.assert_allclose(u, v, rtol=1e-6, atol=1e-7, err_msg=f"{what}: {field}")
  if exact:
    np.testing.assert_array_equal(got.loss, want.loss, err_msg=f"{what}: loss")
  else:
    np.testing.assert_allclose(got.loss, want.loss, rtol=1e-6, err_msg=f"{what}: loss")


# Chunks of 4 sharded over 2 virtual CPU devices, in a subprocess (the device count
# must be set before jax is imported). It starts with the first trainer fixture so
# that it overlaps the compiles here. Results come back as JSON (float32 -> float -> JSON round-trips).
_SHARDED = textwrap.dedent("""
  import json, sys
  import numpy as np
  import jax
  assert jax.device_count() == 2, jax.devices()
  from cubist import train
  from cubist.mlp import Layer
  z = np.load(sys.argv[1])
  static = json.loads(sys.argv[2])
  mesh = train.experiment_mesh()
  assert mesh.devices.size == 2
  def tree(prefix):
    return tuple(Layer(z[f"{prefix}{i}_weight"], z[f"{prefix}{i}_bias"]) for i in range(4))
  out = {}
  for formulation, chunks in json.loads(sys.argv[3]).items():
    trainer = train.make_train(train.TrainStatic(formulation=formulation, **static), mesh=mesh)
    out[formulation] = []
    for c in chunks:
      inputs = train.TrainInputs(z[f"key{c}"], z[f"lr{c}"], z[f"schedule{c}"],
                                 tree(f"params{c}_"), tree(f"masks{c}_"))
      result = trainer(z["x"], z["y"], inputs)
      assert len(result.loss.sharding.device_set) == 2
      out[formulation].append({f: [np.asarray(a).tolist() for a in jax.tree.leaves(getattr(result, f))]
                               for f in result._fields})
  print(json.dumps({"devices": jax.device_count(), "results": out}))
""")
# Which of _four_chunks() each formulation runs sharded.
_SHARDED_CHUNKS = {"dot": [0, 1], "unit": [0]}
_CHUNK0_ROWS, _CHUNK1_ROWS = [0, 2, 3, 5], [4, 6, 7, 1]


def _four_chunks() -> list[train.TrainInputs]:
  """Three chunks of 4 with different values (seeds, lrs, masks, schedules, inits)."""
  base = _chunk_inputs()
  first, second = _take(base, _CHUNK0_ROWS), _take(base, _CHUNK1_ROWS)
  third = first._replace(
    lr=first.lr * np.float32(0.5),
    schedule=(first.schedule + 1) % 3,
    key=second.key,
    masks=second.masks,
  )
  return [first, second, third]


@pytest.fixture(scope="module")
def sharded_subprocess(tmp_path_factory, subset):
  x, y = subset
  chunks = _four_chunks()[:2]
  arrays = {"x": np.asarray(x), "y": np.asarray(y)}
  for c, inputs in enumerate(chunks):
    arrays.update({f"key{c}": inputs.key, f"lr{c}": inputs.lr, f"schedule{c}": inputs.schedule})
    for name in ("params", "masks"):
      for i, layer in enumerate(getattr(inputs, name)):
        arrays[f"{name}{c}_{i}_weight"] = np.asarray(layer.weight)
        arrays[f"{name}{c}_{i}_bias"] = np.asarray(layer.bias)
  path = tmp_path_factory.mktemp("sharded") / "inputs.npz"
  np.savez(path, **arrays)
  static = dict(width=WIDTH, epochs=EPOCHS, num_points=NUM_POINTS, record_step_losses=True)
  env = dict(os.environ)
  env["XLA_FLAGS"] = (
    env.get("XLA_FLAGS", "") + " --xla_force_host_platform_device_count=2"
  ).strip()
  env["JAX_PLATFORMS"] = "cpu"
  env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
  proc = subprocess.Popen(
    [sys.executable, "-c", _SHARDED, str(path), json.dumps(static), json.dumps(_SHARDED_CHUNKS)],
    cwd=ROOT,
    env=env,
    stdout=subprocess.PIPE,
    stderr=subprocess.PIPE,
    text=True,
  )
  yield proc
  if proc.poll() is None:
    proc.kill()
    proc.communicate()


@pytest.fixture(scope="module")
def chunk_runs(subset, sharded_subprocess):
  """Per formulation: the chunk of 8, the same chunk permuted, and every experiment alone.

  (Requests `sharded_subprocess` only to start it early, so it overlaps these compiles.)
  """
  x, y = subset
  inputs = _chunk_inputs()
  perm = np.array([5, 3, 7, 0, 6, 1, 4, 2])
  runs = {}
  for formulation in train.FORMULATIONS:
    trainer = train.make_train(_static(formulation))
    chunk = jax.device_get(trainer(x, y, inputs))
    permuted = jax.device_get(trainer(x, y, _take(inputs, perm)))
    alone = [jax.device_get(trainer(x, y, _take(inputs, [i]))) for i in range(CHUNK)]
    runs[formulation] = dict(chunk=chunk, permuted=permuted, perm=perm, alone=alone)
  return runs


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("formulation", train.FORMULATIONS)
def test_batching_independence(chunk_runs, formulation):
  """Alone, in a chunk of 8, at another position of it: the same result."""
  run = chunk_runs[formulation]
  chunk, permuted, perm = run["chunk"], run["permuted"], run["perm"]
  worst = {"trajectory": 0.0, "loss": 0.0}
  for i in range(CHUNK):
    position = int(np.flatnonzero(perm == i)[0])
    in_chunk = _take(chunk, [i])
    # Same chunk size, another position: bitwise identical, loss included.
    moved = _take(permuted, [position])
    _assert_same_result(moved, in_chunk, f"exp {i} moved to {position}", exact=True)
    if ON_CPU:
      assert _max_diff(moved, in_chunk) == 0.0
    # Alone vs in the chunk.
    alone = run["alone"][i]
    _assert_same_result(
      alone, in_chunk, f"exp {i} alone vs in chunk", exact=BITWISE_ACROSS_SIZES[formulation]
    )
    worst["trajectory"] = max(
      worst["trajectory"],
      _max_diff(
        [getattr(alone, f) for f in TRAJECTORY], [getattr(in_chunk, f) for f in TRAJECTORY]
      ),
    )
    worst["loss"] = max(
      worst["loss"], abs(float(alone.loss[0]) - float(in_chunk.loss[0])) / float(in_chunk.loss[0])
    )
  print(
    f"\n[batching] {formulation}: position in chunk: bitwise; alone vs chunk of 8: max abs "
    f"trajectory diff {worst['trajectory']:.3g}, max rel full-data loss diff "
    f"{worst['loss']:.3g}"
  )
  assert len(set(perm.tolist())) == CHUNK and np.sum(perm == np.arange(CHUNK)) <= 1
  # The experiments really differ from each other (the test is not vacuous).
  assert len({np.asarray(chunk.step_loss[i]).tobytes() for i in range(CHUNK)}) == CHUNK


@pytest.mark.parametrize("formulation", train.FORMULATIONS)
def test_independent_of_chunk_size_across_vector_blocks(subset, formulation):
  """A chunk of 40 (more than one of XLA's 32-lane vector blocks, plus a remainder)
  against the same experiments alone: XLA's remainder loop rounds differently
  from its vector loop, which `train.UNIT_BLOCK` padding must hide."""
  static = _static(formulation, epochs=1, record_step_losses=False)
  base = _chunk_inputs()
  rows = np.arange(40) % CHUNK
  big = jax.tree.map(lambda a: np.asarray(a)[rows], base)
  big = big._replace(key=np.asarray(jax.vmap(jax.random.PRNGKey)(jnp.arange(40) + 500)))
  fn = train.make_train(static)
  together = fn(*subset, big)
  for position in (0, 35, 39):
    alone = fn(*subset, _take(big, [position]))
    for u, v in zip(
      jax.tree.leaves(alone.params), jax.tree.leaves(_take(together.params, [position]))
    ):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=f"position {position}")
    np.testing.assert_array_equal(alone.loss, together.loss[position : position + 1])


def test_portable_layouts_train_to_the_same_bits(chunk_runs):
  """ "dot" and "unit" vmap one per-experiment arithmetic (cubist.layouts): the same bits,
  the whole trajectory included."""
  dot, unit = chunk_runs["dot"]["chunk"], chunk_runs["unit"]["chunk"]
  for field in FIELDS:
    for u, v in zip(jax.tree.leaves(getattr(dot, field)), jax.tree.leaves(getattr(unit, field))):
      np.testing.assert_array_equal(np.asarray(u), np.asarray(v), err_msg=field)


def test_gemm_layout_agrees_within_rounding(chunk_runs):
  """The library-matmul layout sums in other orders: the same run up to float rounding."""
  dot, gemm = chunk_runs["dot"]["chunk"], chunk_runs["gemm"]["chunk"]
  rel = np.abs(np.asarray(dot.step_loss) - np.asarray(gemm.step_loss)) / np.asarray(dot.step_loss)
  print(
    f"\n[layouts] max rel step-loss diff dot vs gemm {rel.max():.3g}; "
    f"max abs param diff {_max_diff(dot.params, gemm.params):.3g}"
  )
  assert rel.max() <= 1e-5
  for u, v in zip(jax.tree.leaves(dot.params), jax.tree.leaves(gemm.params)):
    np.testing.assert_allclose(u, v, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(dot.loss, gemm.loss, rtol=1e-5)
  np.testing.assert_allclose(dot.epoch_loss, gemm.epoch_loss, rtol=1e-5)
  np.testing.assert_allclose(dot.accuracy, gemm.accuracy, atol=1.5 / NUM_POINTS)


@pytest.mark.parametrize("formulation", train.FORMULATIONS)
def test_masked_entries_stay_zero(chunk_runs, formulation):
  inputs = _chunk_inputs()
  result = chunk_runs[formulation]["chunk"]
  for i in range(CHUNK):
    final, mask = _take(result.params, i), _take(inputs.masks, i)
    for value, keep, start in zip(
      jax.tree.leaves(final), jax.tree.leaves(mask), jax.tree.leaves(_take(inputs.params, i))
    ):
      value, keep = np.asarray(value), np.asarray(keep)
      assert np.all(np.asarray(start) != 0)  # the init is dense: masking has work to do
      assert np.all(value[~keep] == 0.0)
      assert np.all(value[keep] != 0.0)
    mask_count = sum(int(np.sum(k)) for k in jax.tree.leaves(mask))
    assert int(masks.model_nnz(final)) == mask_count
    assert int(masks.weight_nnz(final)) == sum(int(np.sum(layer.weight)) for layer in mask)
  assert any(not np.all(np.asarray(k)) for k in jax.tree.leaves(inputs.masks))


def test_shared_order(chunk_runs, subset):
  """Experiments 0 and 1 differ only in their key: identical iff the order is shared."""
  x, y = subset
  inputs = _chunk_inputs()
  own = chunk_runs["dot"]["chunk"]
  assert _max_diff(_take(own, [0]).params, _take(own, [1]).params) > 1e-4
  trainer = train.make_train(_static("dot", shared_order=True, order_seed=5))
  shared = jax.device_get(trainer(x, y, inputs))
  _assert_same_result(
    _take(shared, [1]), _take(shared, [0]), "shared order, exp 1 vs 0", exact=True
  )
  # The shared order comes from order_seed, not from the chunk: a sub-chunk agrees.
  _assert_same_result(
    jax.device_get(trainer(x, y, _take(inputs, [7, 0]))),
    _take(shared, [7, 0]),
    "shared order, sub-chunk",
    exact=BITWISE_ACROSS_SIZES["dot"],
  )
  # ... and it is not any experiment's own order.
  for i in range(CHUNK):
    assert _max_diff(_take(shared, [i]).step_loss, _take(own, [i]).step_loss) > 1e-6


@pytest.fixture(scope="module")
def guarded_runs(subset, sharded_subprocess):
  """Three chunks of 4 with different values through ONE trainer guarded by chex.assert_max_traces(n=1)."""
  x, y = subset
  chex.clear_trace_counter()
  trainer = train.make_train(
    _static("dot"), trace_guard=functools.partial(chex.assert_max_traces, n=1)
  )
  results = [jax.device_get(trainer(x, y, chunk)) for chunk in _four_chunks()]
  return trainer, results


def test_no_recompilation(guarded_runs, subset):
  trainer, results = guarded_runs  # the fixture made 3 calls without raising
  assert _max_diff(results[0].params, results[2].params) > 1e-4  # the values really differed
  if hasattr(trainer, "_cache_size"):  # private jax API: one compiled executable
    assert trainer._cache_size() == 1
  x, y = subset
  with pytest.raises(AssertionError, match="traced > 1 times"):  # the guard is live
    trainer(x, y, _take(_four_chunks()[0], [0, 1]))


def test_sharding_over_two_devices_matches_one(sharded_subprocess, guarded_runs, chunk_runs):
  """2 devices x 2 experiments == 1 device: bitwise for the trajectory where the
  formulation is chunk-size independent ("unit"), else rel 1e-6; loss rel 1e-6."""
  stdout, stderr = sharded_subprocess.communicate(timeout=300)
  assert sharded_subprocess.returncode == 0, stderr[-3000:]
  report = json.loads(stdout.strip().splitlines()[-1])
  assert report["devices"] == 2
  single = {
    "dot": guarded_runs[1][:2],  # the same chunks of 4 on one device
    "unit": [_take(chunk_runs["unit"]["chunk"], _CHUNK0_ROWS)],
  }  # within a chunk of 8
  worst = {}
  for formulation, results in report["results"].items():
    assert len(results) == len(_SHARDED_CHUNKS[formulation])
    for c, sharded in enumerate(results):
      want = single[formulation][c]
      leaves = {f: [np.asarray(a, np.float32) for a in sharded[f]] for f in FIELDS}
      got = want._replace(
        params=jax.tree.unflatten(jax.tree.structure(want.params), leaves["params"]),
        **{f: leaves[f][0] for f in FIELDS if f != "params"},
      )
      for f in FIELDS:
        for u, v in zip(jax.tree.leaves(getattr(got, f)), jax.tree.leaves(getattr(want, f))):
          assert u.shape == v.shape, (formulation, f)
      _assert_same_result(
        got, want, f"{formulation} chunk {c} sharded", exact=BITWISE_ACROSS_SIZES[formulation]
      )
      worst[formulation] = max(worst.get(formulation, 0.0), _max_diff(got, want))
  print(f"\n[sharding] max abs diff 2 devices vs 1: {worst}")


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
  "overrides,field",
  [
    (dict(epochs=0), "epochs"),
    (dict(width=0), "width"),
    (dict(formulation="conv"), "formulation"),
    (dict(order="random"), "order"),
    (dict(num_points=1009), "num_points"),  # prime: no Feistel factorisation
    (dict(batch_size=0), "batch_size"),
  ],
)
def test_validate_raises_one_line_errors(overrides, field):
  static = train.TrainStatic(**{**dict(width=WIDTH, epochs=1), **overrides})
  with pytest.raises(ValueError, match=field) as error:
    static.validate()
  assert "\n" not in str(error.value)
  with pytest.raises(ValueError, match=field):
    train.make_train(static)


def test_unknown_formulation_lists_known():
  with pytest.raises(ValueError, match="dot.*unit"):
    train.TrainStatic(width=4, formulation="conv").validate()


def test_unknown_schedule_lists_known_schedules():
  with pytest.raises(ValueError) as error:
    schedules.schedule_id("linear")
  message = str(error.value)
  assert "\n" not in message and "linear" in message
  for name in schedules.SCHEDULES:
    assert name in message
  assert [schedules.schedule_id(n) for n in schedules.SCHEDULES] == [0, 1, 2]


# --------------------------------------------------------------------------- schedules


def test_epoch_factors_closed_forms_e50():
  epochs = 50
  table = schedules.epoch_factors(epochs)
  assert table.shape == (len(schedules.SCHEDULES), epochs)
  e = np.arange(1, epochs + 1)
  np.testing.assert_array_equal(table[schedules.schedule_id("constant")], np.ones(epochs))
  assert schedules.step_milestones(epochs) == (15, 30)
  step = np.where(e <= 15, 1.0, np.where(e <= 30, 0.1, 0.01))
  np.testing.assert_allclose(table[schedules.schedule_id("step")], step, rtol=1e-6)
  cosine = (1 + np.cos(np.pi * (e - 1) / epochs)) / 2
  np.testing.assert_allclose(table[schedules.schedule_id("cosine")], cosine, rtol=1e-5, atol=1e-7)
  assert table[schedules.schedule_id("cosine")][0] == 1.0
  assert abs(table[schedules.schedule_id("cosine")][-1] - 0.00099) < 1e-5


def test_epoch_factors_short_runs_and_learning_rates():
  # 12 epochs (the parity runs): milestones ceil(3.6) = 4 and ceil(7.2) = 8.
  assert schedules.step_milestones(12) == (4, 8)
  table = schedules.epoch_factors(12)
  np.testing.assert_allclose(
    table[schedules.schedule_id("step")], [1] * 4 + [0.1] * 4 + [0.01] * 4, rtol=1e-6
  )
  assert np.all(np.diff(table[schedules.schedule_id("cosine")]) < 0)
  # EPOCHS = 3, as trained above: every epoch has its own step factor.
  np.testing.assert_allclose(
    schedules.epoch_factors(EPOCHS)[schedules.schedule_id("step")], [1, 0.1, 0.01], rtol=1e-6
  )
  lrs = np.asarray(
    schedules.learning_rates(
      jnp.asarray([0.1, 0.2], jnp.float32), jnp.asarray([2, 0], jnp.int32), 12
    )
  )
  np.testing.assert_allclose(lrs[0], 0.1 * table[2], rtol=1e-6)
  np.testing.assert_allclose(lrs[1], np.full(12, 0.2), rtol=1e-6)
  assert math.isclose(float(schedules.epoch_factors(1)[1][0]), 1.0)
