"""Pruning specs through the engine: validation, the store rows, resume, failed runs.

Uses toy methods registered for the test (the real ones have their own tests
and run end to end in tests/test_prune_binary.py), 1 epoch at width 3.
"""

from __future__ import annotations

import dataclasses

import jax.numpy as jnp
import numpy as np
import pytest

from cubist import engine
from cubist import masks as mask_ops
from cubist import specs as spec_ops
from cubist.method import Method, MethodRegistry
from cubist.specs import ExperimentSpec
from tests.toy_methods import first_weights_masks


def _keep_first_f(key, params, masks, x, y, hyper, static):
  """Toy at-init method: keep the first f weights in flat order (f from hyper.counts)."""
  return params, first_weights_masks(params, hyper.counts[0])


def _empty_w4(masks, hyper, static):
  return ~jnp.any(masks[3].weight)


TOY = MethodRegistry().register(
  Method("toy_first", at_init=_keep_first_f, host_counts=lambda f, n, static: np.array([f]))
)
TOY.register(
  Method(
    "toy_failing",
    at_init=_keep_first_f,
    failed=_empty_w4,
    host_counts=lambda f, n, static: np.array([f]),
  )
)


def _spec(method="toy_first", target=10, **overrides) -> ExperimentSpec:
  fields = dict(
    seed=1,
    lr=0.1,
    schedule="cosine",
    width=3,
    epochs=1,
    family="toy",
    method=method,
    target_nnz=target,
  )
  fields.update(overrides)
  return ExperimentSpec(**fields)


def test_unknown_method_lists_known():
  with pytest.raises(ValueError, match="unknown method 'snp'; known: plain, toy_first"):
    spec_ops.validate_all([_spec(method="snp")], TOY.get)


def test_the_world_knows_only_plain_training_unless_told():
  with pytest.raises(ValueError, match="only 'plain' is built in; pass a method lookup"):
    spec_ops.validate_all([_spec()])


@pytest.mark.parametrize(
  "overrides, field",
  [
    (dict(target=0), "target_nnz"),
    (dict(target=27), "target_nnz"),
    (dict(strength=-1.0), "strength"),
    (dict(count_mode="approx"), "count_mode"),
    (dict(method_options=(("epochs", 3),)), "method_options"),
  ],
)
def test_bad_pruning_fields_are_one_line_errors(overrides, field):
  with pytest.raises(ValueError, match=field) as error:
    spec_ops.validate_all([_spec(**overrides)], TOY.get)
  assert "\n" not in str(error.value)


def test_every_field_enters_the_exp_id():
  plain = ExperimentSpec(seed=3, lr=0.1)
  assert plain.exp_id() == dataclasses.replace(plain, count_mode="reference").exp_id()
  for change in (
    dict(count_mode="exact"),
    dict(repeat=1),
    dict(family="other"),
    dict(source_id="abc"),
    dict(method="imp"),
  ):
    assert plain.exp_id() != dataclasses.replace(plain, **change).exp_id(), change


def test_engine_stores_final_masks_and_resumes(tmp_path):
  specs = [_spec(target=10), _spec(target=20, seed=2), _spec(method="toy_failing", target=1)]
  results = engine.run(specs, tmp_path, progress_stream=open("/dev/null", "w"), methods=TOY.get)
  rows = {r["target_nnz"]: r for r in results.rows()}
  assert rows[10]["status"] == "ok" and rows[20]["status"] == "ok"
  for f in (10, 20):
    kept = mask_ops.unpack_masks(rows[f]["mask"], rows[f]["mask_shape"])
    assert sum(int(np.asarray(l.weight).sum()) for l in kept) == f
    assert rows[f]["weight_nnz"] <= f and rows[f]["count_mode"] == "reference"
  # f = 1 keeps one W1 weight and empties W4: the toy "failed" hook fires.
  assert rows[1]["status"] == "failed"
  results.close()
  again = engine.run(specs, tmp_path, progress_stream=open("/dev/null", "w"), methods=TOY.get)
  assert again.count() == 3  # nothing retrained (the store is the truth)
  again.close()
