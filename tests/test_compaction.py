"""Train only the live units (cubist/compaction.py, the engine's "compact" ways).

- which units are live and which masked-in entries are dropped, on a hand-built mask;
- gather and scatter are exact inverses on the live entries;
- on that mask with dyadic values, the compact network's outputs are the full
  network's bit for bit, in both layouts;
- trained through the engine, compaction keeps accuracy, NNZ counts, connectivity
  and masks, and every weight within float rounding (the dropped, disconnected
  entries by the weight-decay recurrence);
- on random masks the per-step losses agree to 1e-6 over the first 100 steps;
- a method that fixes its mask at initialisation runs in two stages with the
  same result as its dense run, and so does LTH (its last round compacted).
"""

from __future__ import annotations

import io

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cubist import compaction, data, engine, layouts, mlp, store, train
from cubist import masks as mask_ops
from cubist.method import Method, MethodRegistry
from cubist.specs import ExperimentSpec
from search.pruning import registry
from tests.toy_methods import first_weights_masks

WIDTH = 16


def _hand_masks() -> mlp.Params:
  """Live path 2 -> {1,5,9} -> {2,7} -> {3,4} -> 1, plus dangling units 12, 13, 10, 14."""
  weights = [np.zeros(shape[0], bool) for shape in mlp.layer_shapes(WIDTH)]
  for unit in (1, 5, 9, 12, 13):  # 12 and 13: a dangling path, or incoming weights only
    weights[0][unit, :] = True
  for out, inp in ((2, 1), (2, 5), (7, 9), (7, 1), (10, 12)):
    weights[1][out, inp] = True
  for out, inp in ((3, 2), (4, 7), (4, 2), (14, 10)):
    weights[2][out, inp] = True
  weights[3][0, 3] = weights[3][0, 4] = True
  return tuple(
    mlp.Layer(np.asarray(l.weight), np.asarray(l.bias))
    for l in mask_ops.with_bias_rule([jnp.asarray(w) for w in weights])
  )


def test_live_units_dropped_entries_and_bucket_width():
  plan = compaction.plan(_hand_masks())
  assert [u.tolist() for u in plan.units] == [[1, 5, 9], [2, 7], [3, 4]]
  assert plan.width == 3 and plan.full_width == WIDTH
  dropped = {
    (l, kind, tuple(int(i) for i in index))
    for l, layer in enumerate(plan.dropped)
    for kind, mask in (("w", layer.weight), ("b", layer.bias))
    for index in np.argwhere(mask)
  }
  assert dropped == {
    (0, "w", (12, 0)),
    (0, "w", (12, 1)),
    (0, "w", (13, 0)),
    (0, "w", (13, 1)),
    (0, "b", (12,)),
    (1, "w", (10, 12)),
    (1, "b", (10,)),
    (2, "w", (14, 10)),
  }
  widths = (1, 4, 5, 8, 9, 13, 100, 300)
  assert [compaction.bucket_width(k) for k in widths] == [1, 4, 8, 8, 16, 16, 128, 300]


def test_gather_then_scatter_restores_the_live_entries():
  masks = _hand_masks()
  plan = compaction.plan(masks)
  rng = np.random.default_rng(0)
  params = tuple(
    mlp.Layer(
      rng.normal(size=m.weight.shape).astype(np.float32) * m.weight,
      rng.normal(size=m.bias.shape).astype(np.float32) * m.bias,
    )
    for m in masks
  )
  small = compaction.gather(params, plan)
  assert small[1].weight.shape == (3, 3)
  zeroed = compaction.with_dropped(params, np.zeros(8, np.float32), plan)
  back = compaction.scatter(small, jax.tree.map(np.zeros_like, params), plan)
  for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(zeroed)):
    np.testing.assert_array_equal(a, b)
  np.testing.assert_array_equal(
    compaction.dropped_values(params, plan),
    np.concatenate(
      [
        np.asarray(a)[m]
        for layer, d in zip(params, plan.dropped)
        for a, m in ((layer.weight, d.weight), (layer.bias, d.bias))
      ]
    ),
  )


def _dyadic_init(tmp_path) -> str:
  """A width-16 init whose values are multiples of 1/16 (exact in every product)."""
  rng = np.random.default_rng(7)
  path = tmp_path / "dyadic.npz"
  layers = [
    mlp.Layer(
      (rng.integers(-8, 9, w) / 16).astype(np.float32),
      (rng.integers(-8, 9, b) / 16).astype(np.float32),
    )
    for w, b in mlp.layer_shapes(WIDTH)
  ]
  np.savez(path, **mlp.to_numpy_dict(tuple(layers)))
  return str(path)


def _trained(spec, tmp_path, name, **plan):
  with engine.run(
    [spec], tmp_path / name, plan=engine.ChunkPlan(**plan), progress_stream=io.StringIO()
  ) as reader:
    (row,) = reader.rows()
  return row, store.row_params(row)


@pytest.mark.parametrize("formulation", ("dot", "unit"))
def test_dropping_the_dead_units_changes_no_output_bit(tmp_path, formulation):
  """With dyadic values (exact products and sums) the compact network's logits, accuracy
  and loss on all points are the full network's, bit for bit."""
  masks = _hand_masks()
  plan = compaction.plan(masks)
  params = mlp.apply_masks(mlp.load_init(_dyadic_init(tmp_path)), masks)
  x = jnp.asarray(np.random.default_rng(1).integers(-16, 17, (4096, 2)) / 8, jnp.float32)
  y = (x[:, 0] > x[:, 1]).astype(jnp.float32)
  stack = lambda tree: jax.tree.map(lambda a: jnp.asarray(a)[None], tree)
  full = layouts.evaluate(layouts.to_layout(stack(params), formulation), x, y, formulation, 1024)
  small = layouts.evaluate(
    layouts.to_layout(stack(compaction.gather(params, plan)), formulation), x, y, formulation, 1024
  )
  assert 0 < float(full[0][0]) < 1
  for a, b in zip(full, small):
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


@pytest.mark.parametrize("unit_max_width", (0, 64), ids=("dot", "unit"))
def test_compacted_training_matches_full_width_training(tmp_path, unit_max_width):
  """Through the engine, 2 epochs: the same accuracy, NNZ, connectivity and mask; the live
  weights within float rounding of full-width training (the inert units add exact zeros,
  but XLA may contract a*b + c into one FMA in one program and not in the other: without
  FMA, `XLA_FLAGS=--xla_cpu_max_isa=AVX`, the two are equal bit for bit), the dropped
  ones by the decay recurrence."""
  spec = ExperimentSpec(
    seed=5, lr=0.125, width=WIDTH, mask=_hand_masks(), epochs=2, init=_dyadic_init(tmp_path)
  )
  full, full_params = _trained(spec, tmp_path, "full", unit_max_width=unit_max_width, compact=False)
  small, small_params = _trained(spec, tmp_path, "compact", unit_max_width=unit_max_width)
  assert (full["trained_width"], small["trained_width"]) == (15, 3)
  assert small["accuracy"] == full["accuracy"]
  assert small["loss"] == pytest.approx(full["loss"], rel=1e-6)
  for column in ("weight_nnz", "model_nnz", "effective_weight_nnz", "dead_units", "mask"):
    assert small[column] == full[column], column
  for a, b in zip(jax.tree.leaves(small_params), jax.tree.leaves(full_params)):
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("formulation", ("dot", "unit"))
def test_random_masks_agree_over_the_first_100_steps(formulation):
  x, y = (jnp.asarray(a) for a in data.cubist_spiral())
  rng = np.random.default_rng(3)
  width, count = 12, 4
  losses = {}
  for compact in (False, True):
    rows = []
    for index in range(count):
      weights = [rng.random(shape[0]) < 0.05 for shape in mlp.layer_shapes(width)]
      weights[0][:6] = True
      weights[3][0, :4] = True
      rows.append(
        tuple(
          mlp.Layer(np.asarray(l.weight), np.asarray(l.bias))
          for l in mask_ops.with_bias_rule([jnp.asarray(w) for w in weights])
        )
      )
    rng = np.random.default_rng(3)  # the same masks for both passes
    params = [mlp.init(jax.random.PRNGKey(i), width) for i in range(count)]
    plans = [compaction.plan(m) for m in rows]
    run_width = max(p.width for p in plans) if compact else width
    gather = (lambda t, p: compaction.gather(t, p, run_width)) if compact else (lambda t, p: t)
    stack = lambda trees: jax.tree.map(lambda *a: jnp.stack([jnp.asarray(v) for v in a]), *trees)
    inputs = train.TrainInputs(
      jnp.stack([jax.random.fold_in(jax.random.PRNGKey(i), 1) for i in range(count)]),
      jnp.full((count,), 0.1, jnp.float32),
      jnp.zeros((count,), jnp.int32),
      stack(
        [
          gather(mlp.apply_masks(jax.device_get(p), m), plan)
          for p, m, plan in zip(params, rows, plans)
        ]
      ),
      stack([gather(m, plan) for m, plan in zip(rows, plans)]),
    )
    static = train.TrainStatic(
      width=run_width, epochs=1, formulation=formulation, record_step_losses=True
    )
    losses[compact] = np.asarray(train.make_train(static)(x, y, inputs).step_loss)[:, :100]
    assert compact or run_width == width
  assert max(p.width for p in plans) < width  # something was dropped
  np.testing.assert_allclose(losses[True], losses[False], rtol=1e-6)


def _keep_first(key, params, masks, x, y, hyper, static):
  """Toy at-init method: keep the first f weights of the flat (W1..W4) order."""
  new_masks = first_weights_masks(params, hyper.counts[0])
  return mlp.apply_masks(params, new_masks), new_masks


def test_a_method_that_fixes_its_mask_at_init_runs_in_two_stages(tmp_path):
  method = Method("keep_first", at_init=_keep_first, host_counts=lambda f, n, static: np.array([f]))
  assert method.fixes_mask_at_init
  methods = MethodRegistry().register(method)
  spec = ExperimentSpec(seed=2, lr=0.1, width=8, epochs=1, method="keep_first", target_nnz=30)
  rows = {}
  for compact in (False, True):
    with engine.run(
      [spec],
      tmp_path / str(compact),
      methods=methods.get,
      plan=engine.ChunkPlan(unit_max_width=64, compact=compact),
      progress_stream=io.StringIO(),
    ) as reader:
      (rows[compact],) = reader.rows()
  assert rows[True]["trained_width"] < rows[False]["trained_width"] == 8
  for column in ("accuracy", "loss", "mask", "weight_nnz", "effective_weight_nnz", "status"):
    assert rows[True][column] == rows[False][column], column


def test_lth_trains_its_last_round_at_the_compact_width(tmp_path):
  """LTH (5 rounds, each from the init): rounds 1-4 at the full width, the final ticket's
  round on its live units; same masks, counts and accuracy as the dense run, the weights
  within float rounding."""
  lth = registry.get("lth")
  assert lth.trains_last_round_fixed and not lth.fixes_mask_at_init
  specs = [
    ExperimentSpec(seed=seed, lr=0.1, width=16, epochs=2, method="lth", target_nnz=20)
    for seed in range(3)
  ]
  rows = {}
  for compact in (False, True):
    with engine.run(
      specs,
      tmp_path / str(compact),
      methods=registry.get,
      plan=engine.ChunkPlan(compact=compact),
      progress_stream=io.StringIO(),
    ) as reader:
      rows[compact] = sorted(reader.rows(), key=lambda row: row["exp_id"])
  for dense, compact in zip(rows[False], rows[True]):
    assert dense["trained_width"] == 16 and compact["trained_width"] < 16
    for column in ("accuracy", "mask", "weight_nnz", "effective_weight_nnz", "status"):
      assert compact[column] == dense[column], column
    assert compact["loss"] == pytest.approx(dense["loss"], abs=1e-5)
    np.testing.assert_allclose(
      np.concatenate([a.ravel() for a in jax.tree.leaves(store.row_params(compact))]),
      np.concatenate([a.ravel() for a in jax.tree.leaves(store.row_params(dense))]),
      atol=1e-5,
    )
