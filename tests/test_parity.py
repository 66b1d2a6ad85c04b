"""Parity of the JAX trainer (cubist/train.py) with the PyTorch oracle (METHODS B.3, C).

Both trainers start from the same initial weights, the same masks (with dead
units: a hidden unit with outgoing but no incoming weights, which keeps its bias
by the bias rule and acts as the constant relu(b), and units with incoming but
no outgoing weights, whose biases are masked), the same batch order and the
same schedule, and must agree on the loss of EVERY optimiser step within
relative 1e-4, on the final parameters, and on the final accuracy and loss.

To stay fast while still exercising the per-epoch schedule stepping, the runs
use a 2,560-point subset of the real spiral (20 steps per epoch) for 12 epochs
(240 steps): the step schedule then drops at epochs ceil(3.6) = 4 and
ceil(7.2) = 8 (1-based: epochs 5 and 9 run at 0.1 and 0.01), and the cosine
factor changes every epoch. lr = 0.05 keeps the chaotic growth of float
rounding differences far below the tolerance over 240 steps (measured: max
relative step-loss difference ~2.6e-7 in every case and schedule, final
parameters within ~1.2e-7 absolute; the differences stay at the level of a
float32 ulp and do not jump at epoch boundaries).

The width-4 "unit" case barely learns in 240 steps (loss ~0.698 -> ~0.693): its
weights still move by ~0.1 and must match the oracle's to ~1e-7, which is where
that case gets its teeth. Negative controls check that a wrong schedule or a
wrong batch order is caught at 100x the tolerance.

Run with `pytest -s` to print the measured differences.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tr = pytest.importorskip("third_party.torch_reference")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from cubist import data, masks, mlp, order, schedules, train  # noqa: E402

DATA_DIR = Path(__file__).resolve().parents[1].parent / "shared" / "data"
BENCH95 = DATA_DIR / "bench95_init.npz"

NUM_POINTS = 2_560  # 20 batches of 128 per epoch
EPOCHS = 12  # 240 steps
LR = 0.05
STEP_RTOL = 1e-4
SEEDS = {"constant": 11, "cosine": 12, "step": 13}  # one experiment key per schedule
# (formulation, width, order method): "dot" on the full width-16 model, "unit" on its
# top-left 4-wide block, each with the trainer's default Feistel order; and "dot" once
# more with the exactly uniform "sort" order (cubist.order).
CASES = (("dot", 16, "feistel"), ("unit", 4, "feistel"), ("dot", 16, "sort"))
CASE_IDS = [f"{f}-w{w}-{o}" for f, w, o in CASES]


# --------------------------------------------------------------------------- inputs


@pytest.fixture(scope="module")
def subset():
  """2,560 real spiral points (a fixed random subset, both arms), float32."""
  x, y = data.cubist_spiral()
  rows = np.sort(np.random.default_rng(2024).choice(x.shape[0], NUM_POINTS, replace=False))
  xs, ys = np.array(x[rows]), np.array(y[rows])
  assert 0.3 < ys.mean() < 0.7
  return xs, ys


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
  """The oracle is sequential and tiny; one thread avoids fighting over 2 shared cores."""
  previous = torch.get_num_threads()
  torch.set_num_threads(1)
  yield
  torch.set_num_threads(previous)


def _init16() -> mlp.Params:
  """The authors' BENCH-95 width-16 init if the shared data are present, else a default init."""
  if BENCH95.exists():
    return mlp.load_init(BENCH95)
  return jax.tree.map(np.asarray, mlp.init(jax.random.PRNGKey(95), 16))


def _dead_unit_masks(width: int) -> mlp.Params:
  """Weight masks with dead units, biases from the bias rule (masks.with_bias_rule).

  Unit `width - 1` of layer 1 has NO incoming weights but outgoing ones: its bias
  is kept, so it feeds relu(b1) forward as a constant. Unit `width - 1` of layer 3
  has incoming weights but NO outgoing ones: its bias is masked (its incoming
  weights still train, through weight decay only). Unit `width - 1` of layer 2 has
  incoming weights but no outgoing ones either. The rest is a fixed random pattern
  of density ~0.75 with at least one live path.
  """
  rng = np.random.default_rng(width)
  dead = width - 1
  w1, w2, w3, w4 = (rng.random(shape) < 0.75 for shape, _ in mlp.layer_shapes(width))
  w1[0, :] = w2[0, 0] = w3[0, 0] = w4[0, 0] = True  # a live input -> output path
  w1[dead, :] = False  # layer-1 unit `dead`: no incoming ...
  w2[:, dead] = False
  w2[1, dead] = True  # ... but one outgoing edge
  w2[dead, :2] = True  # layer-2 unit `dead`: incoming ...
  w3[:, dead] = False  # ... no outgoing
  w3[dead, :] = False
  w3[dead, 0] = True  # layer-3 unit `dead`: incoming ...
  w4[0, dead] = False  # ... no outgoing
  full = masks.with_bias_rule((w1, w2, w3, w4))
  return jax.tree.map(np.asarray, full)


def _check_dead_units(m: mlp.Params, width: int) -> None:
  dead = width - 1
  (w1, b1), (w2, b2), (w3, b3), (w4, b4) = m
  assert not w1[dead].any() and w2[:, dead].any() and b1[dead]  # no in, has out: bias kept
  assert w2[dead].any() and not w3[:, dead].any() and not b2[dead]  # has in, no out: bias masked
  assert w3[dead].any() and not w4[:, dead].any() and not b3[dead]
  assert b4.all()


def _stack(tree, n: int):
  return jax.tree.map(lambda a: jnp.broadcast_to(jnp.asarray(a), (n,) + np.shape(a)), tree)


def _row(tree, i: int):
  return jax.tree.map(lambda a: np.asarray(a[i]), tree)


def _static(formulation: str, width: int, order_method: str) -> train.TrainStatic:
  return train.TrainStatic(
    width=width,
    epochs=EPOCHS,
    num_points=NUM_POINTS,
    order=order_method,
    formulation=formulation,
    record_step_losses=True,
  )


def _key(schedule: str, offset: int = 0) -> jax.Array:
  return jax.random.PRNGKey(SEEDS[schedule] + offset)


def _trainer_order(key: jax.Array, order_method: str) -> np.ndarray:
  """The batches the trainer draws for experiment `key`: (epochs, batches, 128).

  The trainer calls order.epoch_state(order.epoch_key(key, e)) once per epoch and
  order.step_indices(state, b) per step; order.batch_order evaluates the same two
  functions for a whole run. (That the trainer really sees these batches is
  checked end to end: the step losses match the oracle from step 0, and a
  different order is caught, see test_parity_check_is_sensitive.)
  """
  return order.batch_order(key, EPOCHS, NUM_POINTS, data.BATCH_SIZE, method=order_method)


@pytest.fixture(scope="module")
def jax_runs(subset):
  """One compiled JAX chunk per case: the three schedules side by side."""
  xs, ys = subset
  runs = {}
  for case in CASES:
    formulation, width, order_method = case
    params = mlp.slice_params(_init16(), width)
    m = _dead_unit_masks(width)
    n = len(schedules.SCHEDULES)
    inputs = train.TrainInputs(
      key=jnp.stack([_key(s) for s in schedules.SCHEDULES]),
      lr=jnp.full((n,), LR, jnp.float32),
      schedule=jnp.asarray([schedules.schedule_id(s) for s in schedules.SCHEDULES], jnp.int32),
      params=_stack(params, n),
      masks=_stack(m, n),
    )
    trainer = train.make_train(_static(formulation, width, order_method))
    result = trainer(jnp.asarray(xs), jnp.asarray(ys), inputs)
    runs[case] = (params, m, jax.device_get(result))
  return runs


def _oracle(subset, params, m, schedule: str, order_method: str, key: jax.Array | None = None):
  xs, ys = subset
  batches = _trainer_order(_key(schedule) if key is None else key, order_method)
  return tr.train_reference(
    mlp.to_numpy_dict(params),
    [layer.weight for layer in m],
    [layer.bias for layer in m],
    xs,
    ys,
    batches,
    LR,
    schedule,
    EPOCHS,
  )


# --------------------------------------------------------------------------- tests


@pytest.mark.parametrize("width", sorted({case[1] for case in CASES}))
def test_masks_have_dead_units(width):
  _check_dead_units(_dead_unit_masks(width), width)


@pytest.mark.parametrize("order_method", order.ORDER_METHODS)
def test_batch_orders_are_fresh_drop_last_permutations(order_method):
  """Each epoch: 20 batches of 128 distinct indices in 0..N-1, a new order every epoch."""
  batches = _trainer_order(_key("cosine"), order_method)
  assert batches.shape == (EPOCHS, NUM_POINTS // 128, 128)
  for e in range(EPOCHS):
    assert len(np.unique(batches[e])) == batches[e].size
    assert batches[e].min() >= 0 and batches[e].max() < NUM_POINTS
  assert len({batches[e].tobytes() for e in range(EPOCHS)}) == EPOCHS
  if order_method == "sort":  # the exact-uniform order is order.sorted_epoch_batches per epoch
    np.testing.assert_array_equal(
      batches,
      np.stack(
        [
          np.asarray(
            order.sorted_epoch_batches(order.epoch_key(_key("cosine"), e), num_points=NUM_POINTS)
          )
          for e in range(EPOCHS)
        ]
      ),
    )


@pytest.mark.parametrize("schedule", schedules.SCHEDULES)
def test_learning_rates_match_torch_schedulers(schedule):
  for epochs in (EPOCHS, 50):
    ours = np.asarray(
      schedules.learning_rates(
        jnp.asarray([LR], jnp.float32), jnp.asarray([schedules.schedule_id(schedule)]), epochs
      )
    )[0]
    # float32 factors: (1 + cos) near the end of the cosine loses a few ulp to cancellation.
    np.testing.assert_allclose(
      ours, tr.lr_schedule(LR, schedule, epochs), rtol=1e-6, atol=1e-7 * LR
    )


@pytest.mark.parametrize("schedule", schedules.SCHEDULES)
@pytest.mark.parametrize("case", CASES, ids=CASE_IDS)
def test_step_losses_and_final_state_match_oracle(jax_runs, subset, case, schedule):
  formulation, width, order_method = case
  params, m, result = jax_runs[case]
  i = schedules.SCHEDULES.index(schedule)
  ref = _oracle(subset, params, m, schedule, order_method)
  steps_per_epoch = NUM_POINTS // 128

  # Every step's loss (the loss of the forward pass before that step's update).
  ours = np.asarray(result.step_loss[i], np.float64)
  theirs = ref["losses"]
  assert ours.shape == theirs.shape == (EPOCHS * steps_per_epoch,)
  rel = np.abs(ours - theirs) / np.abs(theirs)
  per_epoch = rel.reshape(EPOCHS, -1).max(axis=1)
  print(
    f"\n[parity] {'-'.join(map(str, case))} {schedule}: max rel step-loss diff "
    f"{rel.max():.3g} (step {int(rel.argmax())}); per epoch "
    f"{np.array2string(per_epoch, precision=2)}; loss {theirs[0]:.4f} -> {theirs[-1]:.4f}"
  )
  bad = np.flatnonzero(rel > STEP_RTOL)
  assert bad.size == 0, (
    f"{case}/{schedule}: {bad.size} steps exceed rel {STEP_RTOL}; first at step "
    f"{bad[0]} (epoch {bad[0] // steps_per_epoch}), rel {rel[bad[0]]:.3g}"
  )
  # Not vacuous: the loss went down and the weights moved well beyond the tolerance.
  assert theirs[-steps_per_epoch:].mean() < theirs[:steps_per_epoch].mean()
  np.testing.assert_allclose(
    np.asarray(result.epoch_loss[i]), theirs.reshape(EPOCHS, -1).mean(axis=1), rtol=STEP_RTOL
  )

  # Final parameters; masked entries exactly zero on both sides, active ones not.
  final = _row(result.params, i)
  ref_final = mlp.from_numpy_dict(ref["final_params"])
  worst = 0.0
  for layer, (ours_layer, ref_layer, mask_layer) in enumerate(zip(final, ref_final, m), start=1):
    for kind in ("weight", "bias"):
      a, b, keep = (np.asarray(getattr(t, kind)) for t in (ours_layer, ref_layer, mask_layer))
      worst = max(worst, float(np.max(np.abs(a - b))))
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=2e-6, err_msg=f"layer{layer}_{kind}")
      assert np.all(a[~keep] == 0) and np.all(b[~keep] == 0), f"layer{layer}_{kind}"
      assert np.all(a[keep] != 0), f"layer{layer}_{kind}: an active entry is exactly 0"
  assert int(masks.model_nnz(final)) == sum(int(np.sum(t)) for t in jax.tree.leaves(m))
  moved = max(
    float(np.max(np.abs(np.asarray(a) - np.asarray(b) * np.asarray(k))))
    for a, b, k in zip(jax.tree.leaves(final), jax.tree.leaves(params), jax.tree.leaves(m))
  )
  assert moved > 1e-2, moved

  # Final evaluation on the subset (accuracy: at most one point may flip).
  print(
    f"[parity]   final params max abs diff {worst:.3g} (moved {moved:.3g}); loss {float(result.loss[i]):.6f} vs "
    f"{ref['loss']:.6f}; accuracy {float(result.accuracy[i]):.5f} vs {ref['accuracy']:.5f}"
  )
  np.testing.assert_allclose(float(result.loss[i]), ref["loss"], rtol=1e-4)
  assert abs(float(result.accuracy[i]) - ref["accuracy"]) <= 1.0 / NUM_POINTS + 1e-7


def test_parity_check_is_sensitive(jax_runs, subset):
  """Negative controls: a wrong schedule, or a wrong batch order, is caught."""
  case = CASES[0]
  params, m, result = jax_runs[case]
  ours = np.asarray(result.step_loss[schedules.SCHEDULES.index("cosine")], np.float64)
  steps_per_epoch = NUM_POINTS // 128
  # Cosine and constant share the lr of epoch 1, so they agree until epoch 2 starts.
  constant = _oracle(subset, params, m, "constant", case[2], key=_key("cosine"))["losses"]
  rel = np.abs(ours - constant) / np.abs(constant)
  assert rel[: steps_per_epoch + 1].max() <= STEP_RTOL
  assert rel.max() > 100 * STEP_RTOL
  shuffled = _oracle(subset, params, m, "cosine", case[2], key=_key("cosine", 100))["losses"]
  assert (np.abs(ours - shuffled) / np.abs(shuffled)).max() > 100 * STEP_RTOL
