"""Tests of the PyTorch parity oracle itself (third_party/torch_reference.py), METHODS B-C."""

import math
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
tr = pytest.importorskip("third_party.torch_reference")

E = 50
BENCH95 = Path(__file__).resolve().parents[2] / "shared" / "data" / "bench95_init.npz"


# --------------------------------------------------------------------------- helpers


def _init(rng, width):
  shapes = [(width, 2), (width, width), (width, width), (1, width)]
  p = {}
  for i, (o, n) in enumerate(shapes, start=1):
    b = 1.0 / math.sqrt(n)
    p[f"layer{i}_weight"] = rng.uniform(-b, b, (o, n)).astype(np.float32)
    p[f"layer{i}_bias"] = rng.uniform(-b, b, (o,)).astype(np.float32)
  return p


def _masks(rng, params, density=0.6):
  w = [
    (rng.random(params[f"layer{i}_weight"].shape) < density).astype(np.float32) for i in range(1, 5)
  ]
  b = [
    (rng.random(params[f"layer{i}_bias"].shape) < density).astype(np.float32) for i in range(1, 4)
  ]
  b.append(np.ones(1, np.float32))
  return w, b


def _data(rng, n):
  x = rng.standard_normal((n, 2)).astype(np.float32)
  y = (x[:, 0] * x[:, 1] > 0).astype(np.float32)
  return x, y


def _np_forward_backward(p, x, y):
  """Float64 hand-written forward + backward of mean BCE-with-logits. p: list [W1,b1,...,W4,b4]."""
  W = [p[2 * k] for k in range(4)]
  B = [p[2 * k + 1] for k in range(4)]
  acts, pre = [x], []
  h = x
  for k in range(4):
    z = h @ W[k].T + B[k]
    pre.append(z)
    h = np.maximum(z, 0.0) if k < 3 else z
    acts.append(h)
  z = acts[-1][:, 0]
  loss = np.mean(np.maximum(z, 0) - z * y + np.log1p(np.exp(-np.abs(z))))
  dz = ((1.0 / (1.0 + np.exp(-z))) - y)[:, None] / len(y)
  grads = [None] * 8
  for k in range(3, -1, -1):
    grads[2 * k] = dz.T @ acts[k]
    grads[2 * k + 1] = dz.sum(0)
    if k > 0:
      dz = (dz @ W[k]) * (pre[k - 1] > 0)
  return loss, grads


def _flat(params):
  return [
    params[f"layer{i}_{k}"].astype(np.float64) for i in range(1, 5) for k in ("weight", "bias")
  ]


def _flat_masks(wm, bm):
  return [m.astype(np.float64) for pair in zip(wm, bm) for m in pair]


# --------------------------------------------------------------------------- schedules


def test_step_schedule_closed_form():
  lrs = tr.lr_schedule(0.1, "step", E)
  e = np.arange(1, E + 1)
  expected = 0.1 * np.where(e <= 15, 1.0, np.where(e <= 30, 0.1, 0.01))
  np.testing.assert_allclose(lrs, expected, rtol=1e-12, atol=1e-15)


def test_cosine_schedule_closed_form():
  lr = 0.05
  lrs = tr.lr_schedule(lr, "cosine", E)
  e = np.arange(1, E + 1)
  np.testing.assert_allclose(lrs, lr * (1 + np.cos(np.pi * (e - 1) / E)) / 2, rtol=0, atol=1e-6)
  assert lrs[0] == lr
  assert lrs[-1] / lr == pytest.approx(0.00099, abs=5e-6)


def test_constant_schedule():
  np.testing.assert_array_equal(tr.lr_schedule(0.2, "constant", E), np.full(E, 0.2))


def test_unknown_schedule_raises():
  with pytest.raises(ValueError, match="unknown schedule"):
    tr.lr_schedule(0.1, "linear", 3)


@pytest.mark.parametrize("schedule", ["constant", "step", "cosine"])
def test_train_reference_uses_the_schedule(schedule):
  rng = np.random.default_rng(1)
  x, y = _data(rng, 64)
  p0 = _init(rng, 3)
  wm, bm = _masks(rng, p0, density=1.0)
  order = np.tile(np.arange(8)[None, None, :], (E, 1, 1))  # one batch of 8 per epoch
  out = tr.train_reference(p0, wm, bm, x, y, order, 0.1, schedule, E)
  np.testing.assert_allclose(out["lrs"], tr.lr_schedule(0.1, schedule, E), rtol=0, atol=0)
  assert out["losses"].shape == (E,)


# --------------------------------------------------------------------------- masks and outputs


def test_masked_entries_stay_zero_and_outputs():
  rng = np.random.default_rng(2)
  x, y = _data(rng, 512)
  p0 = _init(rng, 16)
  wm, bm = _masks(rng, p0, density=0.5)
  order = tr.make_batch_order(rng, 512, 2, 128)
  assert order.shape == (2, 4, 128)
  out = tr.train_reference(p0, wm, bm, x, y, order, 0.1, "step", 2)

  fp = out["final_params"]
  assert set(fp) == set(p0)
  for i in range(1, 5):
    w, b = fp[f"layer{i}_weight"], fp[f"layer{i}_bias"]
    assert w.dtype == np.float32 and w.shape == p0[f"layer{i}_weight"].shape
    assert np.all(w[wm[i - 1] == 0] == 0.0)
    assert np.all(b[bm[i - 1] == 0] == 0.0)
    # active entries did move
    assert np.any(w[wm[i - 1] == 1] != p0[f"layer{i}_weight"][wm[i - 1] == 1])

  assert out["losses"].dtype == np.float64 and out["losses"].shape == (8,)
  assert np.all(np.isfinite(out["losses"]))
  assert 0.0 <= out["accuracy"] <= 1.0

  # accuracy and loss agree with an independent evaluation of the final params
  loss, _ = _np_forward_backward(_flat(fp), x.astype(np.float64), y.astype(np.float64))
  assert out["loss"] == pytest.approx(loss, rel=1e-5)
  z = x.astype(np.float64)
  Wb = _flat(fp)
  for k in range(4):
    z = z @ Wb[2 * k].T + Wb[2 * k + 1]
    if k < 3:
      z = np.maximum(z, 0)
  assert out["accuracy"] == pytest.approx(np.mean((z[:, 0] > 0) == (y == 1)), abs=2.0 / 512)

  # deterministic given the inputs
  again = tr.train_reference(p0, wm, bm, x, y, order, 0.1, "step", 2)
  np.testing.assert_array_equal(again["losses"], out["losses"])
  for k in fp:
    np.testing.assert_array_equal(again["final_params"][k], fp[k])

  # epoch-granularity recording gives the per-epoch mean of the step losses
  coarse = tr.train_reference(p0, wm, bm, x, y, order, 0.1, "step", 2, record_every_step=False)
  assert coarse["loss_granularity"] == "epoch"
  np.testing.assert_allclose(coarse["losses"], out["losses"].reshape(2, 4).mean(1), rtol=1e-6)


def test_train_reference_does_not_touch_global_rng():
  rng = np.random.default_rng(3)
  x, y = _data(rng, 256)
  p0 = _init(rng, 4)
  wm, bm = _masks(rng, p0)
  order = tr.make_batch_order(rng, 256, 1, 128)
  state = torch.random.get_rng_state().clone()
  tr.train_reference(p0, wm, bm, x, y, order, 0.05, "cosine", 1)
  assert torch.equal(torch.random.get_rng_state(), state)


# --------------------------------------------------------------------------- SGD arithmetic


@pytest.mark.parametrize("wd", [5e-4, 0.05])  # 0.05 makes the decay term visible at rtol 1e-5
def test_two_sgd_steps_match_hand_computation(wd):
  """Step 1: g = grad + wd*theta; buf = g; theta -= lr*buf; mask.  Step 2: buf = mu*buf + g."""
  rng = np.random.default_rng(4)
  width, bs, lr, mu = 3, 16, 0.1, 0.9
  x, y = _data(rng, 2 * bs)
  p0 = _init(rng, width)
  wm, bm = _masks(rng, p0, density=0.7)
  bm[0][0] = 0.0  # at least one masked bias
  wm[1][0, 0] = 0.0  # and one masked hidden weight
  order = np.arange(2 * bs).reshape(1, 2, bs)

  masks = _flat_masks(wm, bm)
  theta = [p * m for p, m in zip(_flat(p0), masks)]  # masks applied at installation
  xs, ys = x.astype(np.float64), y.astype(np.float64)
  buf, losses, snapshots = None, [], []
  for b in range(2):
    sl = slice(b * bs, (b + 1) * bs)
    loss, grads = _np_forward_backward(theta, xs[sl], ys[sl])  # gradients NOT masked
    losses.append(loss)
    g = [gr + wd * t for gr, t in zip(grads, theta)]
    buf = g if buf is None else [mu * bu + gi for bu, gi in zip(buf, g)]
    theta = [(t - lr * bu) * m for t, bu, m in zip(theta, buf, masks)]
    snapshots.append(theta)

  one = tr.train_reference(p0, wm, bm, x, y, order[:, :1], lr, "constant", 1, weight_decay=wd)
  two = tr.train_reference(p0, wm, bm, x, y, order, lr, "constant", 1, weight_decay=wd)
  np.testing.assert_allclose(two["losses"], losses, rtol=1e-5)
  for out, expect in ((one, snapshots[0]), (two, snapshots[1])):
    got = _flat(out["final_params"])
    for gp, ep in zip(got, expect):
      np.testing.assert_allclose(gp, ep, rtol=1e-5, atol=1e-6)

  # the second step really used momentum: without it the result differs
  loss1, grads1 = _np_forward_backward(snapshots[0], xs[bs:], ys[bs:])
  no_momentum = [(t - lr * (gr + wd * t)) * m for t, gr, m in zip(snapshots[0], grads1, masks)]
  diff = max(np.abs(a - b).max() for a, b in zip(no_momentum, _flat(two["final_params"])))
  assert diff > 1e-4


# --------------------------------------------------------------------------- model and params


def test_load_params_roundtrip_and_forward():
  rng = np.random.default_rng(5)
  p = _init(rng, 5)
  model = tr.load_params(tr.FourLayerMLP(5, init=False), p)
  back = tr.get_params(model)
  for k in p:
    np.testing.assert_array_equal(back[k], p[k])
  x = rng.standard_normal((7, 2)).astype(np.float32)
  with torch.no_grad():
    out = model(torch.from_numpy(x)).numpy()
  assert out.shape == (7, 1)
  z = x.astype(np.float64)
  for k, (i) in enumerate(range(1, 5)):
    z = z @ p[f"layer{i}_weight"].T.astype(np.float64) + p[f"layer{i}_bias"]
    if k < 3:
      z = np.maximum(z, 0)
  np.testing.assert_allclose(out, z, rtol=1e-5, atol=1e-6)
  with pytest.raises(ValueError, match="shape"):
    tr.load_params(tr.FourLayerMLP(4, init=False), p)


@pytest.mark.skipif(not BENCH95.exists(), reason="shared reference data not present")
def test_loads_bench95_checkpoint():
  data = dict(np.load(BENCH95))
  model = tr.load_params(tr.FourLayerMLP(16, init=False), data)
  w1 = model.first_layer.weight.detach().double()
  assert float(w1.sum()) == pytest.approx(-0.915693, abs=1e-5)  # METHODS B.2 checksum
  assert float(model.clf.bias.detach().double().sum()) == pytest.approx(-0.078221, abs=1e-5)


def test_seconds_per_run_smoke():
  # tiny data, so this is fast; the benchmark calls it on N = 49,982 points.
  rng = np.random.default_rng(6)
  x, y = _data(rng, 390 * 128)
  res = tr.seconds_per_run(width=4, epochs=1, x=x, y=y, warmup_steps=2, repeats=1)
  assert res["steps_measured"] == 390 and res["num_threads"] == 1
  assert res["projected_seconds_per_run"] == pytest.approx(50 * res["seconds_per_epoch"])
