"""Tests of the 4-layer MLP (cubist/mlp.py), METHODS §0.1, §B.1, §B.2."""

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cubist import mlp
from cubist.mlp import Layer

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
BENCH95 = DATA / "bench95_init.npz"
BENCH995 = DATA / "bench995_init.npz"

# METHODS §B.2 checksums: per-tensor float64 sums and W1[0].
CHECKSUMS = {
  BENCH95: dict(
    sums=dict(
      layer1_weight=-0.915693,
      layer1_bias=-0.850412,
      layer2_weight=1.684061,
      layer2_bias=0.342770,
      layer3_weight=-0.990500,
      layer3_bias=0.615297,
      layer4_weight=0.846620,
      layer4_bias=-0.078221,
    ),
    w1_row0=(-0.6251, 0.3561),
  ),
  BENCH995: dict(
    sums=dict(
      layer1_weight=0.420717,
      layer1_bias=-0.355288,
      layer2_weight=-2.027183,
      layer2_bias=0.747342,
      layer3_weight=0.216800,
      layer3_bias=0.055462,
      layer4_weight=0.226808,
      layer4_bias=0.138933,
    ),
    w1_row0=(-0.1328, 0.7023),
  ),
}

# METHODS §0.1: N(w) = 2w^2 + 3w.
N_OF_W = {
  3: 27,
  4: 44,
  5: 65,
  6: 90,
  7: 119,
  8: 152,
  16: 560,
  32: 2144,
  64: 8384,
  128: 33152,
  256: 131840,
}


@functools.lru_cache(maxsize=None)
def _init(seed, width):
  """mlp.init for one key (cached: JAX compiles each new shape, which is slow on CPU)."""
  return mlp.init(jax.random.PRNGKey(seed), width)


@functools.lru_cache(maxsize=None)
def _init_batch(seed, count, width):
  """`count` independent draws of mlp.init, with a leading axis."""
  keys = jax.random.split(jax.random.PRNGKey(seed), count)
  return jax.jit(jax.vmap(lambda k: mlp.init(k, width)))(keys)


def _fan_in_bounds(width):
  """Expected U(-b, b) bound per layer: fan_in = 2 for layer 1, w for layers 2-4."""
  return [1.0 / math.sqrt(2)] + [1.0 / math.sqrt(width)] * 3


def _assert_one_line_value_error(excinfo):
  message = str(excinfo.value)
  assert message and "\n" not in message, message


def _numpy_forward(params, x):
  """Float64 reference forward pass (§B.1)."""
  hidden = np.asarray(x, np.float64)
  for layer in params[:-1]:
    w = np.asarray(layer.weight, np.float64)
    b = np.asarray(layer.bias, np.float64)
    hidden = np.maximum(hidden @ w.T + b, 0.0)
  w = np.asarray(params[-1].weight, np.float64)
  b = np.asarray(params[-1].bias, np.float64)
  return (hidden @ w.T + b)[:, 0]


def _params_equal(a, b):
  assert len(a) == len(b) == 4
  for la, lb in zip(a, b):
    np.testing.assert_array_equal(np.asarray(la.weight), np.asarray(lb.weight))
    np.testing.assert_array_equal(np.asarray(la.bias), np.asarray(lb.bias))


def _random_params(seed, width, batch=()):
  rng = np.random.default_rng(seed)
  return tuple(
    Layer(
      rng.uniform(-1, 1, batch + ws).astype(np.float32),
      rng.uniform(-1, 1, batch + bs).astype(np.float32),
    )
    for ws, bs in mlp.layer_shapes(width)
  )


# --------------------------------------------------------------------------- shapes, N(w)


@pytest.mark.parametrize("width", [1, 3, 16, 64])
def test_layer_shapes(width):
  assert mlp.layer_shapes(width) == (
    ((width, 2), (width,)),
    ((width, width), (width,)),
    ((width, width), (width,)),
    ((1, width), (1,)),
  )


def test_num_weights_matches_methods_list():
  for width, n in N_OF_W.items():
    assert mlp.num_weights(width) == n
    # and equals the sum of the weight shapes
    assert sum(math.prod(ws) for ws, _ in mlp.layer_shapes(width)) == n


# --------------------------------------------------------------------------- init


@pytest.mark.parametrize("width", [3, 16, 128])
def test_init_shapes_dtype_and_bounds(width):
  params = _init(0, width)
  assert len(params) == 4
  for layer, (ws, bs), bound in zip(params, mlp.layer_shapes(width), _fan_in_bounds(width)):
    assert isinstance(layer, Layer)
    assert layer.weight.shape == ws and layer.bias.shape == bs
    assert layer.weight.dtype == jnp.float32 and layer.bias.dtype == jnp.float32
    assert float(jnp.max(jnp.abs(layer.weight))) <= bound
    assert float(jnp.max(jnp.abs(layer.bias))) <= bound


def test_init_bounds_at_width_16_are_pytorch_fan_in():
  bounds = _fan_in_bounds(16)
  assert bounds[0] == pytest.approx(0.7071, abs=1e-4)
  assert bounds[1:] == [0.25, 0.25, 0.25]


def test_init_distribution_spans_the_bound():
  # 200 draws of the width-16 model: every tensor has >= 200 values.
  params = _init_batch(3, 200, 16)
  for index, (layer, bound) in enumerate(zip(params, _fan_in_bounds(16)), start=1):
    for name, values in (("weight", layer.weight), ("bias", layer.bias)):
      values = np.asarray(values, np.float64)
      assert np.abs(values).max() <= bound, (index, name)
      # both tails reach the bound (not a narrower distribution)
      assert values.max() > 0.9 * bound, (index, name, values.max())
      assert values.min() < -0.9 * bound, (index, name, values.min())
  # On a big layer, uniform moments: mean 0, std = bound / sqrt(3), max |W| -> bound.
  big = _init(0, 128)
  w2 = np.asarray(big[1].weight, np.float64)
  bound = 1.0 / math.sqrt(128)
  assert np.abs(w2).max() == pytest.approx(bound, rel=1e-3)
  assert w2.std() == pytest.approx(bound / math.sqrt(3), rel=0.02)
  assert abs(w2.mean()) < 0.01 * bound
  w1 = np.asarray(big[0].weight, np.float64)
  assert np.abs(w1).max() == pytest.approx(1 / math.sqrt(2), rel=0.03)


def test_init_deterministic_per_key_and_keys_differ():
  a = mlp.init(jax.random.PRNGKey(7), 16)
  b = mlp.init(jax.random.PRNGKey(7), 16)
  c = mlp.init(jax.random.PRNGKey(8), 16)
  # the batched (jit + vmap) draw agrees with the eager per-key draw
  keys = jax.random.split(jax.random.PRNGKey(3), 200)
  _params_equal(jax.tree.map(lambda v: v[5], _init_batch(3, 200, 16)), mlp.init(keys[5], 16))
  _params_equal(a, b)
  for la, lc in zip(a, c):
    assert not np.array_equal(np.asarray(la.weight), np.asarray(lc.weight))
    assert not np.array_equal(np.asarray(la.bias), np.asarray(lc.bias))
  # weights and biases of one draw use different streams
  assert not np.allclose(np.asarray(a[1].weight)[0], np.asarray(a[1].bias))


def test_init_matches_pytorch_default_distribution():
  torch = pytest.importorskip("torch")
  torch.manual_seed(0)
  bound = 0.25
  layers = [torch.nn.Linear(16, 16) for _ in range(200)]
  tw = np.concatenate([l.weight.detach().numpy().ravel() for l in layers]).astype(np.float64)
  tb = np.concatenate([l.bias.detach().numpy().ravel() for l in layers]).astype(np.float64)
  # every single nn.Linear(16, 16) lies within the same bound as ours
  assert np.abs(tw).max() <= bound and np.abs(tb).max() <= bound
  ours = _init_batch(3, 200, 16)
  jw = np.asarray(ours[1].weight, np.float64).ravel()
  jb = np.asarray(ours[1].bias, np.float64).ravel()
  assert tw.size == jw.size and tb.size == jb.size
  for t, j, rel in ((tw, jw, 0.02), (tb, jb, 0.05)):
    assert np.abs(t).max() == pytest.approx(bound, rel=0.01)
    assert np.abs(j).max() == pytest.approx(bound, rel=0.01)
    assert t.std() == pytest.approx(bound / math.sqrt(3), rel=rel)
    assert j.std() == pytest.approx(bound / math.sqrt(3), rel=rel)
    assert j.std() == pytest.approx(t.std(), rel=2 * rel)
  # same distribution shape: deciles of the pooled weights agree
  qs = np.linspace(0.1, 0.9, 9)
  np.testing.assert_allclose(np.quantile(jw, qs), np.quantile(tw, qs), atol=0.01)
  # first layer (fan_in 2) and classifier (fan_in 16) bounds match torch's too
  torch_first = torch.nn.Linear(2, 16)
  assert np.abs(torch_first.weight.detach().numpy()).max() <= 1 / math.sqrt(2)
  torch_clf = torch.nn.Linear(16, 1)
  assert np.abs(torch_clf.weight.detach().numpy()).max() <= 0.25


# --------------------------------------------------------------------------- apply


@pytest.mark.parametrize("width", [3, 16])
def test_apply_matches_numpy_float64(width):
  params = _init(0, width)
  x = np.random.default_rng(width).standard_normal((257, 2)).astype(np.float32)
  logits = mlp.apply(params, jnp.asarray(x))
  assert logits.shape == (257,)
  np.testing.assert_allclose(
    np.asarray(logits, np.float64), _numpy_forward(params, x), atol=1e-5, rtol=1e-5
  )


def test_apply_with_masks_matches_numpy_and_vmaps():
  params = _random_params(0, 8, batch=(5,))
  rng = np.random.default_rng(1)
  masks = tuple(
    Layer(rng.random(l.weight.shape) < 0.5, rng.random(l.bias.shape) < 0.5) for l in params
  )
  masked = mlp.apply_masks(params, masks)
  for layer, mask in zip(masked, masks):
    assert np.all(np.asarray(layer.weight)[~mask.weight] == 0)
    assert np.all(np.asarray(layer.bias)[~mask.bias] == 0)
  x = rng.standard_normal((64, 2)).astype(np.float32)
  batched = jax.vmap(mlp.apply, in_axes=(0, None))(masked, jnp.asarray(x))
  assert batched.shape == (5, 64)
  for e in range(5):
    one = jax.tree.map(lambda a: np.asarray(a)[e], masked)
    np.testing.assert_allclose(
      np.asarray(batched[e], np.float64), _numpy_forward(one, x), atol=1e-5, rtol=1e-5
    )


# --------------------------------------------------------------------------- load_init


def _require(path):
  if not path.exists():
    pytest.skip(f"{path} not present")


@pytest.mark.parametrize("path", [BENCH95, BENCH995], ids=["bench95", "bench995"])
def test_load_init_checksums(path):
  _require(path)
  params = mlp.load_init(path)
  arrays = mlp.to_numpy_dict(params)
  expected = CHECKSUMS[path]
  for key, value in expected["sums"].items():
    assert float(np.sum(arrays[key], dtype=np.float64)) == pytest.approx(value, abs=1e-5), key
  np.testing.assert_allclose(np.asarray(params[0].weight)[0], expected["w1_row0"], atol=6e-5)
  for layer, (ws, bs) in zip(params, mlp.layer_shapes(16)):
    assert layer.weight.shape == ws and layer.bias.shape == bs
    assert layer.weight.dtype == np.float32
  # consistent with an untrained PyTorch default init (§B.2)
  assert np.abs(np.asarray(params[0].weight)).max() <= 1 / math.sqrt(2)
  for layer in params[1:]:
    assert np.abs(np.asarray(layer.weight)).max() <= 0.25
  # the raw file and the loaded params agree exactly
  with np.load(path) as raw:
    for key in mlp.npz_keys():
      np.testing.assert_array_equal(arrays[key], raw[key])


@pytest.mark.parametrize("path", [BENCH95, BENCH995], ids=["bench95", "bench995"])
def test_load_init_slices_top_left_block(path):
  _require(path)
  full = mlp.load_init(path)
  _params_equal(mlp.load_init(path, 16), full)
  f1, f2, f3, f4 = [(np.asarray(l.weight), np.asarray(l.bias)) for l in full]
  for width in range(1, 17):
    sliced = mlp.load_init(path, width)
    for layer, (ws, bs) in zip(sliced, mlp.layer_shapes(width)):
      assert layer.weight.shape == ws and layer.bias.shape == bs
    np.testing.assert_array_equal(sliced[0].weight, f1[0][:width])
    np.testing.assert_array_equal(sliced[0].bias, f1[1][:width])
    np.testing.assert_array_equal(sliced[1].weight, f2[0][:width, :width])
    np.testing.assert_array_equal(sliced[1].bias, f2[1][:width])
    np.testing.assert_array_equal(sliced[2].weight, f3[0][:width, :width])
    np.testing.assert_array_equal(sliced[2].bias, f3[1][:width])
    np.testing.assert_array_equal(sliced[3].weight, f4[0][:, :width])
    np.testing.assert_array_equal(sliced[3].bias, f4[1])  # b4 whole
    _params_equal(sliced, mlp.slice_params(full, width))


def _write_npz(path, arrays):
  np.savez(path, **arrays)
  return path


def _good_arrays():
  return mlp.to_numpy_dict(_random_params(0, 16))


def test_load_init_errors(tmp_path):
  with pytest.raises(ValueError) as excinfo:
    mlp.load_init(tmp_path / "nope.npz")
  _assert_one_line_value_error(excinfo)
  assert "nope.npz" in str(excinfo.value)

  arrays = _good_arrays()
  del arrays["layer3_bias"]
  with pytest.raises(ValueError) as excinfo:
    mlp.load_init(_write_npz(tmp_path / "missing.npz", arrays))
  _assert_one_line_value_error(excinfo)
  assert "layer3_bias" in str(excinfo.value)

  for key, shape in (
    ("layer2_weight", (16, 15)),
    ("layer1_weight", (16, 3)),
    ("layer4_bias", (2,)),
    ("layer3_bias", (15,)),
    ("layer4_weight", (16, 1)),
  ):
    arrays = _good_arrays()
    arrays[key] = np.zeros(shape, np.float32)
    with pytest.raises(ValueError) as excinfo:
      mlp.load_init(_write_npz(tmp_path / f"shape_{key}.npz", arrays))
    _assert_one_line_value_error(excinfo)
    assert key.split("_")[0] in str(excinfo.value)

  good = _write_npz(tmp_path / "good.npz", _good_arrays())
  _params_equal(mlp.load_init(good), _random_params(0, 16))
  for width in (0, 17, -1):
    with pytest.raises(ValueError) as excinfo:
      mlp.load_init(good, width)
    _assert_one_line_value_error(excinfo)


@pytest.mark.parametrize("width", [0, 17])
def test_load_init_bench_width_errors(width):
  _require(BENCH95)
  with pytest.raises(ValueError) as excinfo:
    mlp.load_init(BENCH95, width)
  _assert_one_line_value_error(excinfo)


# --------------------------------------------------------------------------- slicing, padding, dicts


@pytest.mark.parametrize("as_jax", [False, True])
def test_slice_pad_round_trip(as_jax):
  params = _random_params(3, 16)
  if as_jax:
    params = jax.tree.map(jnp.asarray, params)
  for width in (1, 3, 7, 16):
    sliced = mlp.slice_params(params, width)
    padded = mlp.pad_params(sliced, 16)
    for layer, (ws, bs) in zip(padded, mlp.layer_shapes(16)):
      assert layer.weight.shape == ws and layer.bias.shape == bs
    # pad(slice(p)) is p with everything outside the top-left block zeroed
    for index, (orig, back) in enumerate(zip(params, padded)):
      expected_w = np.zeros_like(np.asarray(orig.weight))
      expected_b = np.zeros_like(np.asarray(orig.bias))
      rows = 1 if index == 3 else width
      cols = 2 if index == 0 else width
      expected_w[:rows, :cols] = np.asarray(orig.weight)[:rows, :cols]
      if index == 3:
        expected_b[:] = np.asarray(orig.bias)
      else:
        expected_b[:width] = np.asarray(orig.bias)[:width]
      np.testing.assert_array_equal(np.asarray(back.weight), expected_w)
      np.testing.assert_array_equal(np.asarray(back.bias), expected_b)
    # slice(pad(q)) == q exactly
    _params_equal(mlp.slice_params(padded, width), sliced)


def test_slice_pad_with_leading_axis():
  params = _random_params(4, 5, batch=(3,))
  padded = mlp.pad_params(params, 9)
  for layer, (ws, bs) in zip(padded, mlp.layer_shapes(9)):
    assert layer.weight.shape == (3,) + ws and layer.bias.shape == (3,) + bs
  _params_equal(mlp.slice_params(padded, 5), params)


def test_padded_model_computes_the_same_logits():
  params = _random_params(5, 6)
  x = np.random.default_rng(0).standard_normal((50, 2)).astype(np.float32)
  padded = mlp.pad_params(params, 16)
  np.testing.assert_allclose(
    np.asarray(mlp.apply(padded, x)), np.asarray(mlp.apply(params, x)), rtol=1e-6, atol=1e-6
  )


def test_numpy_dict_round_trip():
  params = _init(0, 16)
  arrays = mlp.to_numpy_dict(params)
  assert sorted(arrays) == sorted(mlp.npz_keys())
  assert mlp.npz_keys() == [
    "layer1_weight",
    "layer1_bias",
    "layer2_weight",
    "layer2_bias",
    "layer3_weight",
    "layer3_bias",
    "layer4_weight",
    "layer4_bias",
  ]
  for value in arrays.values():
    assert isinstance(value, np.ndarray) and value.dtype == np.float32
  assert arrays["layer1_weight"].shape == (16, 2)
  assert arrays["layer4_weight"].shape == (1, 16)
  back = mlp.from_numpy_dict(arrays)
  _params_equal(back, params)
  assert mlp.to_numpy_dict(back).keys() == arrays.keys()


def test_from_numpy_dict_missing_key():
  arrays = mlp.to_numpy_dict(_random_params(0, 4))
  del arrays["layer2_weight"]
  with pytest.raises(ValueError) as excinfo:
    mlp.from_numpy_dict(arrays, source="thing")
  _assert_one_line_value_error(excinfo)
  assert "layer2_weight" in str(excinfo.value) and "thing" in str(excinfo.value)


def test_npz_file_round_trip(tmp_path):
  params = _random_params(9, 16)
  path = _write_npz(tmp_path / "p.npz", mlp.to_numpy_dict(params))
  _params_equal(mlp.load_init(path), params)
  _params_equal(mlp.load_init(str(path), 5), mlp.slice_params(params, 5))


# --------------------------------------------------------------------------- xavier


def test_xavier_normal_weights():
  params = _init(0, 128)
  xavier = mlp.xavier_normal_weights(jax.random.PRNGKey(1), params)
  for layer, new in zip(params, xavier):
    assert new.weight.shape == layer.weight.shape and new.weight.dtype == jnp.float32
    # biases unchanged (PyTorch default)
    np.testing.assert_array_equal(np.asarray(new.bias), np.asarray(layer.bias))
  for index, rel in ((1, 0.02), (2, 0.02), (0, 0.15), (3, 0.2)):
    fan_out, fan_in = params[index].weight.shape
    std = math.sqrt(2.0 / (fan_in + fan_out))
    values = np.asarray(xavier[index].weight, np.float64)
    assert values.std() == pytest.approx(std, rel=rel), index
    assert abs(values.mean()) < 4 * std / math.sqrt(values.size) + 1e-12, index
  # normal, not uniform: a 16384-sample N(0, s) exceeds 3.5 s somewhere
  w2 = np.asarray(xavier[1].weight, np.float64)
  assert np.abs(w2).max() > 3.5 * math.sqrt(2.0 / 256)
  # the weights really were redrawn, deterministically per key
  assert not np.array_equal(np.asarray(xavier[1].weight), np.asarray(params[1].weight))
  again = mlp.xavier_normal_weights(jax.random.PRNGKey(1), params)
  _params_equal(again, xavier)
  # at width 16: W2 std = sqrt(2/32) = 0.25
  small = mlp.xavier_normal_weights(jax.random.PRNGKey(2), _init_batch(3, 200, 16))
  assert np.asarray(small[1].weight).std() == pytest.approx(0.25, rel=0.02)
