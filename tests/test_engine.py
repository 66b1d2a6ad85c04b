"""The engine: store rows, resume, interruption, sweep identity, exact slicing, errors."""

import dataclasses
import io

import chex
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cubist import chunks, data, engine, mlp, train
from cubist import masks as mask_ops
from cubist import specs as spec_ops
from cubist.specs import ExperimentSpec
from cubist.store import SweepMismatchError

# One epoch of the real data keeps each test to seconds on a 2-core CPU.
BASE = ExperimentSpec(seed=0, lr=0.1, schedule="constant", width=16, widths=(3, 3, 3), epochs=1)
SMALL_PLAN = engine.ChunkPlan(chunk_sizes=((10_000, 4),))


def grid(seeds=(0, 1, 2), widths=((3, 3, 3), (2, 3, 2))):
  return [
    dataclasses.replace(BASE, seed=s, widths=w, schedule=sch)
    for s in seeds
    for w in widths
    for sch in ("constant", "cosine")
  ]


def run(specs, workdir, **kwargs):
  kwargs.setdefault("plan", SMALL_PLAN)
  kwargs.setdefault("progress_stream", io.StringIO())
  return engine.run(specs, workdir, sweep_name="test", **kwargs)


def by_id(store):
  return {row["exp_id"]: row for row in store.rows()}


def test_rows_metrics_and_progress(tmp_path):
  stream = io.StringIO()
  specs = grid()
  store = run(specs, tmp_path, progress_stream=stream)
  rows = by_id(store)
  assert len(rows) == len(specs)
  for spec in specs:
    row = rows[spec.exp_id()]
    d1, d2, d3 = spec.widths
    assert row["status"] == "ok"
    assert (row["d1"], row["d2"], row["d3"]) == spec.widths
    assert row["weight_nnz"] == 2 * d1 + d1 * d2 + d2 * d3 + d3
    assert row["model_nnz"] == mask_ops.dense_parameter_count(spec.widths)
    assert row["effective_weight_nnz"] == row["weight_nnz"]  # §D.5: structured masks are connected
    assert 0.0 <= row["accuracy"] <= 1.0 and np.isfinite(row["loss"])
    assert mask_ops.unpack_masks(row["mask"], row["mask_shape"])[1].weight.shape == (16, 16)
  assert f"{len(specs)}/{len(specs)} experiments" in stream.getvalue()
  assert "runs/s" in stream.getvalue() and "ETA" in stream.getvalue()


def test_restart_skips_finished_and_interruption_loses_at_most_a_chunk(tmp_path):
  specs = grid()
  chunks = []

  def interrupt(chunk, outcomes):
    chunks.append(len(chunk))
    raise KeyboardInterrupt  # killed right after the first chunk's commit

  with pytest.raises(KeyboardInterrupt):
    run(specs, tmp_path, on_chunk=interrupt)
  first = by_id(run([], tmp_path, fingerprint=spec_ops.sweep_fingerprint(specs)))
  assert len(first) == chunks[0] == 4

  trained = []
  store = run(specs, tmp_path, on_chunk=lambda chunk, *_: trained.extend(chunk))
  assert len(trained) == len(specs) - 4
  assert {s.exp_id() for s in trained}.isdisjoint(first)
  assert len(store.rows()) == len(specs)

  trained.clear()
  run(specs, tmp_path, on_chunk=lambda chunk, *_: trained.extend(chunk))
  assert not trained  # everything was already done


def test_workdir_of_another_sweep_is_refused(tmp_path):
  run(grid(seeds=(0,)), tmp_path)
  with pytest.raises(SweepMismatchError) as error:
    run(grid(seeds=(5,)), tmp_path)
  assert "\n" not in str(error.value) and "--workdir" in str(error.value)


def test_result_does_not_depend_on_chunk_or_bucket_company(tmp_path):
  target = dataclasses.replace(BASE, seed=3, lr=0.05, schedule="step")
  alone = by_id(run([target], tmp_path / "alone"))[target.exp_id()]
  company = grid() + [target, dataclasses.replace(BASE, seed=9, widths=(3, 3, 1))]
  together = by_id(run(company, tmp_path / "together"))[target.exp_id()]
  assert together["accuracy"] == alone["accuracy"]
  assert together["loss"] == alone["loss"]


def _trained_at(spec, width, formulation):
  x, y = (jnp.asarray(a) for a in data.cubist_spiral())
  inputs = chunks.chunk_inputs([spec], width)
  static = train.TrainStatic(width=width, epochs=1, formulation=formulation)
  result = jax.device_get(train.make_train(static)(x, y, inputs))
  return result.accuracy[0], result.loss[0], mlp.slice_params(result.params, 3)


def test_slicing_to_the_occupied_width_is_exact_in_the_unit_layout():
  """A (3,3,3) network trained at width 3 and at width 6: the same bits.

  In the per-unit layout each unit's input sum runs over its inputs in index
  order, so the inert units' terms (exact zeros) come after the live ones and
  change no partial sum; everything else is independent of the width.
  """
  spec = dataclasses.replace(BASE, seed=4)
  narrow, wide = _trained_at(spec, 3, "unit"), _trained_at(spec, 6, "unit")
  assert narrow[0] == wide[0] and narrow[1] == wide[1]
  for a, b in zip(jax.tree.leaves(narrow[2]), jax.tree.leaves(wide[2])):
    np.testing.assert_array_equal(a, b)


def test_slicing_agrees_up_to_matmul_rounding_in_the_dot_layout():
  """Width 3 and width 16 in the batched-matmul layout agree to float rounding, not bits:
  XLA's dot kernels block an inner product by its length, so adding exact zeros changes
  how the live terms are associated. (The engine trains each network at one width, so
  its results do not depend on this.)"""
  spec = dataclasses.replace(BASE, seed=4)
  reference = _trained_at(spec, 16, "dot")
  for width, formulation in ((3, "dot"), (3, "unit")):
    accuracy, loss, params = _trained_at(spec, width, formulation)
    assert accuracy == pytest.approx(reference[0], abs=2e-4)
    assert loss == pytest.approx(reference[1], rel=1e-4)
    for a, b in zip(jax.tree.leaves(params), jax.tree.leaves(reference[2])):
      np.testing.assert_allclose(a, b, atol=2e-4)


def test_diverged_runs_are_recorded_not_raised(tmp_path):
  wild = dataclasses.replace(BASE, lr=1e9, widths=(16, 16, 16))
  row = by_id(run([wild, dataclasses.replace(wild, lr=0.05)], tmp_path))[wild.exp_id()]
  assert row["status"] == "diverged"


def test_explicit_unstructured_mask(tmp_path):
  masks = list(mask_ops.structured_masks((3, 3, 2), 16))
  weight = masks[1].weight.copy()
  weight[0, 2] = False  # W2 without one edge
  masks[1] = mlp.Layer(weight, masks[1].bias)
  spec = dataclasses.replace(BASE, widths=None, mask=tuple(masks), mask_config="test")
  row = by_id(run([spec], tmp_path))[spec.exp_id()]
  assert row["weight_nnz"] == 6 + 8 + 6 + 2
  assert (row["d1"], row["d2"], row["d3"]) == (3, 3, 2)
  assert (
    spec.exp_id()
    != dataclasses.replace(spec, mask=mask_ops.structured_masks((3, 3, 2), 16)).exp_id()
  )


@pytest.mark.parametrize(
  "change, field",
  [
    (dict(schedule="linear"), "schedule"),
    (dict(lr=0.0), "lr"),
    (dict(lr=-1.0), "lr"),
    (dict(widths=(0, 3, 3)), "d1"),
    (dict(widths=(3, 17, 3)), "d2"),
    (dict(epochs=0), "epochs"),
    (dict(width=0, widths=None), "width"),
    (dict(data_order="random"), "data_order"),
    (dict(init="/nonexistent/init.npz"), "init file"),
  ],
)
def test_bad_specs_fail_in_one_line_before_compiling(tmp_path, change, field):
  trained = []
  with pytest.raises(ValueError) as error:
    run(
      [BASE, dataclasses.replace(BASE, **change)], tmp_path, on_chunk=lambda *a: trained.append(a)
    )
  message = str(error.value)
  assert field in message and "\n" not in message and message.startswith("spec 1:")
  assert not trained and not (tmp_path / "results.sqlite").exists()


def test_bad_masks_and_init_files_fail_in_one_line(tmp_path):
  masks = mask_ops.structured_masks((3, 3, 3), 16)
  wrong_shape = (mlp.Layer(masks[0].weight[:8], masks[0].bias[:8]),) + masks[1:]
  wrong_dtype = (mlp.Layer(masks[0].weight.astype(np.uint8), masks[0].bias),) + masks[1:]
  for mask, field in ((wrong_shape, "layer1_weight"), (wrong_dtype, "dtype")):
    with pytest.raises(ValueError, match=field):
      spec_ops.validate_all([dataclasses.replace(BASE, widths=None, mask=mask)])
  arrays = mlp.to_numpy_dict(mlp.init(jax.random.PRNGKey(0), 16))
  del arrays["layer3_bias"]
  np.savez(tmp_path / "broken.npz", **arrays)
  with pytest.raises(ValueError, match="layer3_bias"):
    spec_ops.validate_all([dataclasses.replace(BASE, init=str(tmp_path / "broken.npz"))])


def test_fixed_init_is_shared_by_seeds(tmp_path):
  path = tmp_path / "init.npz"
  np.savez(path, **mlp.to_numpy_dict(mlp.init(jax.random.PRNGKey(42), 16)))
  specs = [dataclasses.replace(BASE, seed=s, init=str(path)) for s in (0, 1)]
  inputs = chunks.chunk_inputs(specs, 3)
  for a in jax.tree.leaves(inputs.params):
    np.testing.assert_array_equal(a[0], a[1])
  assert not np.array_equal(inputs.key[0], inputs.key[1])
  rows = run(specs, tmp_path / "work").rows()
  assert {row["init"] for row in rows} == {"init.npz"}


def _guard_each_program(train_fn):
  """chex counts traces per definition site: start each new program's count at zero."""
  chex.clear_trace_counter()
  return chex.assert_max_traces(train_fn, n=1)


def test_each_bucket_compiles_once(tmp_path):
  specs = grid(seeds=(0, 1, 2, 3))  # 8 specs per width bucket: 2 chunks of 4 each
  run(specs, tmp_path, trace_guard=_guard_each_program)


def test_stop_request_ends_after_a_committed_chunk_and_resumes(tmp_path):
  specs = grid()
  with pytest.raises(engine.Interrupted) as stopped:
    run(specs, tmp_path, stop=lambda: True)
  assert (stopped.value.committed, stopped.value.remaining) == (4, len(specs) - 4)
  with run(specs, tmp_path) as store:
    assert store.count() == len(specs)
