"""Tests of the mask algebra (cubist/masks.py), METHODS §B.3, §B.4, §D.2, §D.5, §G.1."""

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cubist import masks as M
from cubist import mlp
from cubist.mlp import Layer

CONNECTIVITY_KEYS = ("effective_weight_nnz", "disconnected_weight_nnz", "dead_units")


# --------------------------------------------------------------------------- helpers


def _one_line(excinfo):
  message = str(excinfo.value)
  assert message and "\n" not in message, message
  return message


def _nonzero_params(seed, width, batch=()):
  """Random params with every entry nonzero (uniform on +-[0.1, 1])."""
  rng = np.random.default_rng(seed)

  def draw(shape):
    return (rng.uniform(0.1, 1.0, shape) * rng.choice([-1.0, 1.0], shape)).astype(np.float32)

  return tuple(Layer(draw(batch + ws), draw(batch + bs)) for ws, bs in mlp.layer_shapes(width))


def _empty_weight_masks(width):
  return [np.zeros(ws, bool) for ws, _ in mlp.layer_shapes(width)]


def _masked(weight_masks, seed=0, bias_rule=True):
  """Apply weight masks (and the §B.3 bias rule) to nonzero random params."""
  width = weight_masks[0].shape[-2]
  batch = weight_masks[0].shape[:-2]
  params = _nonzero_params(seed, width, batch)
  if bias_rule:
    masks = M.with_bias_rule(tuple(jnp.asarray(w) for w in weight_masks))
  else:
    masks = tuple(
      Layer(jnp.asarray(w), jnp.ones(p.bias.shape, bool)) for w, p in zip(weight_masks, params)
    )
  return jax.tree.map(np.asarray, mlp.apply_masks(params, masks))


def _conn(params):
  return {k: int(v) for k, v in M.connectivity(params).items()}


def _stack(trees):
  return jax.tree.map(lambda *xs: np.stack(xs), *trees)


def _random_comb_layer(rng, rows, cols):
  """A random 0/1 (rows, cols) block without empty rows or columns (§D.3 eligibility)."""
  block = rng.random((rows, cols)) < rng.uniform(0.05, 0.9)
  for r in range(rows):
    if not block[r].any():
      block[r, rng.integers(cols)] = True
  for c in range(cols):
    if not block[:, c].any():
      block[rng.integers(rows), c] = True
  return block


def _random_comb_masks(rng, full_width=16, max_width=16):
  """Weight masks of a random valid comb-search network (§D.5)."""
  d1, d2, d3 = (int(v) for v in rng.integers(1, max_width + 1, 3))
  weights = _empty_weight_masks(full_width)
  weights[0][:d1, :2] = _random_comb_layer(rng, d1, 2)
  weights[1][:d2, :d1] = _random_comb_layer(rng, d2, d1)
  weights[2][:d3, :d2] = _random_comb_layer(rng, d3, d2)
  weights[3][0, :d3] = True  # dense classifier over d3
  return weights, (d1, d2, d3)


def _brute_force_connectivity(params):
  """Enumerate every input->output path of the layered graph by DFS (§G.1)."""
  edges = [np.asarray(layer.weight) != 0 for layer in params]
  biases = [np.asarray(layer.bias) != 0 for layer in params]
  on_path_edges = set()
  on_path_units = set()

  def dfs(layer, unit, path):
    # `unit` is an index in layer `layer` (0 = inputs, 4 = output)
    if layer == 4:
      for l, (j, i) in enumerate(path):
        on_path_edges.add((l, j, i))
      for l, (j, _) in enumerate(path[:3]):
        on_path_units.add((l + 1, j))
      return
    for j in np.flatnonzero(edges[layer][:, unit]):
      dfs(layer + 1, int(j), path + [(int(j), unit)])

  for i in range(edges[0].shape[1]):
    dfs(0, i, [])
  nnz = sum(int(e.sum()) for e in edges)
  dead = 0
  for l in range(1, 4):
    for j in range(edges[l - 1].shape[0]):
      present = edges[l - 1][j].any() or edges[l][:, j].any() or biases[l - 1][j]
      if present and (l, j) not in on_path_units:
        dead += 1
  return {
    "effective_weight_nnz": len(on_path_edges),
    "disconnected_weight_nnz": nnz - len(on_path_edges),
    "dead_units": dead,
  }


@functools.lru_cache(maxsize=None)
def _jit_vmapped(name):
  return jax.jit(jax.vmap(getattr(M, name)))


# --------------------------------------------------------------------------- structured masks


@pytest.mark.parametrize("widths", [(1, 1, 1), (3, 3, 3), (5, 2, 7), (16, 16, 16), (16, 1, 9)])
def test_structured_masks_blocks_and_counts(widths):
  d1, d2, d3 = widths
  masks = M.structured_masks(widths, 16)
  M.validate_masks(masks, 16)
  expected_blocks = [(d1, 2), (d2, d1), (d3, d2), (1, d3)]
  expected_biases = [d1, d2, d3, 1]
  for layer, (ws, bs), (rows, cols), nb in zip(
    masks, mlp.layer_shapes(16), expected_blocks, expected_biases
  ):
    weight = np.asarray(layer.weight)
    bias = np.asarray(layer.bias)
    assert weight.dtype == np.bool_ and bias.dtype == np.bool_
    expected_w = np.zeros(ws, bool)
    expected_w[:rows, :cols] = True
    expected_b = np.zeros(bs, bool)
    expected_b[:nb] = True
    np.testing.assert_array_equal(weight, expected_w)
    np.testing.assert_array_equal(bias, expected_b)
  # §B.3: the comb-search bias masks agree with the reference bias rule
  rule = M.bias_masks_from_weights(tuple(jnp.asarray(l.weight) for l in masks))
  for layer, bias in zip(masks, rule):
    np.testing.assert_array_equal(np.asarray(bias), np.asarray(layer.bias))
  # §B.4 counts on nonzero params
  params = mlp.apply_masks(_nonzero_params(1, 16), masks)
  weight_count = 2 * d1 + d1 * d2 + d2 * d3 + d3
  assert int(M.weight_nnz(params)) == weight_count
  assert int(M.model_nnz(params)) == weight_count + d1 + d2 + d3 + 1
  assert M.dense_parameter_count(widths) == weight_count + d1 + d2 + d3 + 1


def test_structured_masks_other_full_width():
  masks = M.structured_masks((3, 2, 3), 4)
  M.validate_masks(masks, 4)
  assert np.asarray(masks[1].weight).tolist() == [[1, 1, 1, 0], [1, 1, 1, 0], [0] * 4, [0] * 4]
  assert np.asarray(masks[3].weight).tolist() == [[1, 1, 1, 0]]
  assert np.asarray(masks[2].bias).tolist() == [1, 1, 1, 0]


def test_dense_parameter_count_equals_model_nnz_for_all_triples():
  triples = list(itertools.product(range(1, 17), repeat=3))
  stacked = _stack([M.structured_masks(t, 16) for t in triples])
  params = _nonzero_params(2, 16)
  batched = jax.tree.map(lambda p, m: p[None] * m, params, stacked)
  counts = np.asarray(M.model_nnz(batched))
  weights = np.asarray(M.weight_nnz(batched))
  expected = np.array([M.dense_parameter_count(t) for t in triples])
  np.testing.assert_array_equal(counts, expected)
  d = np.array(triples)
  np.testing.assert_array_equal(
    weights, 2 * d[:, 0] + d[:, 0] * d[:, 1] + d[:, 1] * d[:, 2] + d[:, 2]
  )
  assert M.dense_parameter_count((1, 1, 1)) == 9
  assert M.dense_parameter_count((16, 16, 16)) == 2 * 16 * 16 + 6 * 16 + 1  # §0.1


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
  "widths", [(0, 3, 3), (3, 17, 3), (3, 3, -1), (3, 3), (3, 3, 3, 3), (2.5, 3, 3)]
)
def test_validate_widths_errors(widths):
  with pytest.raises(ValueError) as excinfo:
    M.validate_widths(widths, 16)
  _one_line(excinfo)
  with pytest.raises(ValueError) as excinfo:
    M.structured_masks(widths, 16)
  _one_line(excinfo)


def test_validate_widths_accepts_valid():
  for widths in [(1, 1, 1), (16, 16, 16), (3, 7, 2), (np.int64(4), 4, 4)]:
    M.validate_widths(widths, 16)
  M.validate_widths((8, 8, 8), 8)
  with pytest.raises(ValueError):
    M.validate_widths((9, 8, 8), 8)


def test_validate_masks_errors():
  good = M.structured_masks((3, 3, 3), 16)
  M.validate_masks(good, 16)
  M.validate_masks(M.with_bias_rule(tuple(l.weight for l in good)), 16)  # jax bool arrays

  def replace(layer_index, kind, array):
    layers = list(good)
    layers[layer_index] = layers[layer_index]._replace(**{kind: array})
    return tuple(layers)

  bad_cases = {
    "wrong weight shape": replace(1, "weight", np.zeros((16, 15), bool)),
    "wrong bias shape": replace(2, "bias", np.zeros((15,), bool)),
    "classifier shape": replace(3, "weight", np.zeros((16, 1), bool)),
    "width mismatch": M.structured_masks((3, 3, 3), 8),
    "uint8 weight": replace(0, "weight", np.asarray(good[0].weight, np.uint8)),
    "float weight": replace(1, "weight", np.asarray(good[1].weight, np.float32)),
    "float bias": replace(3, "bias", np.ones((1,), np.float32)),
    "three layers": good[:3],
    "five layers": good + (good[0],),
  }
  for name, masks in bad_cases.items():
    with pytest.raises(ValueError) as excinfo:
      M.validate_masks(masks, 16)
    _one_line(excinfo)


# --------------------------------------------------------------------------- bias rule


def _bias_rule_case():
  """Width 4, hand-built: layer-1 unit 2 has outgoing but no incoming weights;
  layer-2 unit 1 has incoming but no outgoing weights; W4 is empty."""
  w = _empty_weight_masks(4)
  w[0][0, :] = True  # layer-1 unit 0 <- inputs
  w[1][0, 0] = True  # layer-2 unit 0 <- layer-1 unit 0
  w[1][0, 2] = True  # layer-2 unit 0 <- layer-1 unit 2 (no incoming)
  w[1][1, 0] = True  # layer-2 unit 1 <- layer-1 unit 0 (no outgoing)
  w[2][3, 0] = True  # layer-3 unit 3 <- layer-2 unit 0
  expected = (
    [True, False, True, False],  # units 0 and 2 have outgoing edges
    [True, False, False, False],  # unit 1 has incoming only: bias dropped
    [False, False, False, False],  # W4 empty: no layer-3 unit has an outgoing edge
    [True],
  )  # classifier bias always kept
  return w, expected


def test_bias_rule_hand_built():
  w, expected = _bias_rule_case()
  biases = M.bias_masks_from_weights(tuple(jnp.asarray(m) for m in w))
  for got, want in zip(biases, expected):
    assert np.asarray(got).dtype == np.bool_
    assert np.asarray(got).tolist() == want
  w[3][0, 3] = True
  biases = M.bias_masks_from_weights(tuple(jnp.asarray(m) for m in w))
  assert np.asarray(biases[2]).tolist() == [False, False, False, True]
  full = M.with_bias_rule(w)
  M.validate_masks(full, 4)
  for layer, weight, bias in zip(full, w, biases):
    np.testing.assert_array_equal(np.asarray(layer.weight), weight)
    np.testing.assert_array_equal(np.asarray(layer.bias), np.asarray(bias))
  # a unit without inputs keeps its bias and acts as the constant relu(b)
  params = mlp.apply_masks(_nonzero_params(0, 4), full)
  assert float(params[0].bias[2]) != 0.0 and not np.any(np.asarray(params[0].weight[2]))
  assert float(params[1].bias[1]) == 0.0 and np.any(np.asarray(params[1].weight[1]))


def test_bias_rule_classifier_kept_when_everything_empty():
  biases = M.bias_masks_from_weights(tuple(jnp.asarray(m) for m in _empty_weight_masks(5)))
  assert [np.asarray(b).tolist() for b in biases] == [[False] * 5] * 3 + [[True]]


def test_bias_rule_vmapped_over_leading_axis():
  rng = np.random.default_rng(0)
  cases = [_bias_rule_case()[0]]
  for _ in range(7):
    cases.append([rng.random(ws) < 0.3 for ws, _ in mlp.layer_shapes(4)])
  stacked = tuple(np.stack([c[l] for c in cases]) for l in range(4))
  vmapped = jax.vmap(M.bias_masks_from_weights)(stacked)
  broadcast = M.bias_masks_from_weights(stacked)  # leading axes work directly as well
  for e, case in enumerate(cases):
    single = M.bias_masks_from_weights(tuple(jnp.asarray(m) for m in case))
    for l in range(4):
      np.testing.assert_array_equal(np.asarray(vmapped[l][e]), np.asarray(single[l]))
      np.testing.assert_array_equal(np.asarray(broadcast[l][e]), np.asarray(single[l]))
      if l < 3:
        np.testing.assert_array_equal(np.asarray(single[l]), case[l + 1].any(axis=0))
    assert np.asarray(single[3]).tolist() == [True]
  assert vmapped[3].shape == (8, 1) and broadcast[3].shape == (8, 1)


# --------------------------------------------------------------------------- nnz counts values


def test_nnz_counts_values_not_mask_bits():
  masks = M.structured_masks((3, 3, 3), 16)
  params = jax.tree.map(np.array, mlp.apply_masks(_nonzero_params(3, 16), masks))
  weight_count, model_count = 6 + 9 + 9 + 3, 6 + 9 + 9 + 3 + 3 + 3 + 3 + 1
  assert int(M.weight_nnz(params)) == weight_count
  assert int(M.model_nnz(params)) == model_count
  # an active weight (mask bit 1) whose value is exactly 0.0 is not counted
  params[1].weight[1, 2] = 0.0
  params[3].weight[0, 0] = -0.0
  assert int(M.weight_nnz(params)) == weight_count - 2
  assert int(M.model_nnz(params)) == model_count - 2
  params[0].bias[0] = 0.0
  params[3].bias[0] = 0.0  # even the classifier bias counts as a value
  assert int(M.weight_nnz(params)) == weight_count - 2
  assert int(M.model_nnz(params)) == model_count - 4
  # leading axis
  batched = _stack(
    [params, jax.tree.map(np.asarray, mlp.apply_masks(_nonzero_params(3, 16), masks))]
  )
  assert np.asarray(M.weight_nnz(batched)).tolist() == [weight_count - 2, weight_count]
  assert np.asarray(M.model_nnz(batched)).tolist() == [model_count - 4, model_count]


# --------------------------------------------------------------------------- connectivity


def _case_structured():
  masks = M.structured_masks((3, 2, 3), 5)
  return jax.tree.map(np.asarray, mlp.apply_masks(_nonzero_params(4, 5), masks))


def _case_no_incoming():
  """(2,2,2) at width 5; layer-1 unit 1 loses its incoming weights but keeps outgoing."""
  w = [np.asarray(l.weight).copy() for l in M.structured_masks((2, 2, 2), 5)]
  w[0][1, :] = False
  return _masked(w)


def _case_no_outgoing():
  """(2,2,2) at width 5; layer-2 unit 1 keeps its incoming weights but loses outgoing."""
  w = [np.asarray(l.weight).copy() for l in M.structured_masks((2, 2, 2), 5)]
  w[2][:, 1] = False
  return _masked(w)


def _chain_masks():
  """Two disjoint chains x0->1:0->2:0->3:0->out and x1->1:1->2:1->3:1->out."""
  w = _empty_weight_masks(5)
  for l in range(3):
    w[l][0, 0] = w[l][1, 1] = True
  w[3][0, 0] = w[3][0, 1] = True
  return w


def _case_chain():
  return _masked(_chain_masks())


def _case_chain_cut():
  w = _chain_masks()
  w[1][1, 1] = False  # cut the middle of the second chain
  return _masked(w)


HAND_CASES = {
  # (a) fully connected: 2*3 + 3*2 + 2*3 + 3 = 21 weights, all effective
  "structured": (
    _case_structured,
    dict(effective_weight_nnz=21, disconnected_weight_nnz=0, dead_units=0),
  ),
  # (b) 12 weights; the 2 outgoing weights of the input-less unit are disconnected (strict)
  "no_incoming": (
    _case_no_incoming,
    dict(effective_weight_nnz=10, disconnected_weight_nnz=2, dead_units=1),
  ),
  # (c) 12 weights; the 2 incoming weights of the output-less unit are disconnected
  "no_outgoing": (
    _case_no_outgoing,
    dict(effective_weight_nnz=10, disconnected_weight_nnz=2, dead_units=1),
  ),
  # (d) two chains of 4 weights, all effective
  "chain": (_case_chain, dict(effective_weight_nnz=8, disconnected_weight_nnz=0, dead_units=0)),
  # (d) removing one weight disconnects the other 3 weights of its path; its 3 units die
  "chain_cut": (
    _case_chain_cut,
    dict(effective_weight_nnz=4, disconnected_weight_nnz=3, dead_units=3),
  ),
}


@pytest.mark.parametrize("name", list(HAND_CASES))
def test_connectivity_hand_cases(name):
  build, expected = HAND_CASES[name]
  params = build()
  got = _conn(params)
  assert got == expected
  assert got["effective_weight_nnz"] + got["disconnected_weight_nnz"] == int(M.weight_nnz(params))
  assert _brute_force_connectivity(params) == expected


def test_connectivity_no_incoming_keeps_bias_but_is_disconnected():
  params = _case_no_incoming()
  # the bias rule keeps the bias of the input-less unit (it has outgoing edges) ...
  assert params[0].bias[1] != 0 and not params[0].weight[1].any()
  assert params[1].weight[:2, 1].all()
  # ... but under the strict path definition it is dead and its outgoing weights disconnected
  assert _conn(params)["dead_units"] == 1
  # the output-less unit of case (c) loses its bias but its incoming weights still count
  params = _case_no_outgoing()
  assert params[1].bias[1] == 0 and params[1].weight[1, :2].all()
  assert int(M.weight_nnz(params)) == 12


def test_connectivity_padded_units_are_not_dead():
  # units beyond the structured widths have no weights and no bias: not counted as dead
  params = jax.tree.map(
    np.asarray, mlp.apply_masks(_nonzero_params(0, 16), M.structured_masks((1, 1, 1), 16))
  )
  assert _conn(params) == dict(effective_weight_nnz=5, disconnected_weight_nnz=0, dead_units=0)
  # an empty network: nothing effective, nothing present
  empty = jax.tree.map(np.zeros_like, params)
  assert _conn(empty) == dict(effective_weight_nnz=0, disconnected_weight_nnz=0, dead_units=0)


def test_connectivity_random_comb_search_masks_fully_connected():
  """§D.5: no empty row/column in W1..W3 blocks + dense classifier => 0 disconnected."""
  rng = np.random.default_rng(5)
  cases = [_random_comb_masks(rng) for _ in range(300)]
  cases += [_random_comb_masks(rng, max_width=4) for _ in range(100)]  # many small nets
  stacked = tuple(np.stack([w[l] for w, _ in cases]) for l in range(4))
  params = _masked(stacked, seed=6)
  result = {k: np.asarray(v) for k, v in _jit_vmapped("connectivity")(params).items()}
  nnz = np.asarray(M.weight_nnz(params))
  expected_nnz = np.array([sum(int(m.sum()) for m in w) for w, _ in cases])
  np.testing.assert_array_equal(nnz, expected_nnz)
  np.testing.assert_array_equal(result["disconnected_weight_nnz"], 0)
  np.testing.assert_array_equal(result["effective_weight_nnz"], nnz)
  np.testing.assert_array_equal(result["dead_units"], 0)
  # the bias rule gives exactly the comb-search biases (first d_l units, classifier)
  for e, (_, (d1, d2, d3)) in enumerate(cases[:50]):
    for l, d in enumerate((d1, d2, d3)):
      assert np.flatnonzero(params[l].bias[e]).tolist() == list(range(d))
    assert params[3].bias[e, 0] != 0


def test_connectivity_vmapped_equals_per_network():
  builders = [build for build, _ in HAND_CASES.values()]
  singles = [build() for build in builders]
  stacked = _stack(singles)
  vmapped = {k: np.asarray(v).tolist() for k, v in _jit_vmapped("connectivity")(stacked).items()}
  direct = {k: np.asarray(v).tolist() for k, v in jax.jit(M.connectivity)(stacked).items()}
  expected = [spec for _, spec in HAND_CASES.values()]
  for key in CONNECTIVITY_KEYS:
    assert vmapped[key] == [spec[key] for spec in expected]
    assert direct[key] == vmapped[key]  # leading axes also work without vmap


@pytest.mark.parametrize("width", [4, 5])
def test_connectivity_matches_brute_force_paths(width):
  rng = np.random.default_rng(width)
  count = 150
  densities = rng.uniform(0.1, 0.7, count)
  weight_masks = tuple(
    rng.random((count,) + ws) < densities.reshape((-1,) + (1,) * len(ws))
    for ws, _ in mlp.layer_shapes(width)
  )
  # the first networks are valid comb-search networks (zero disconnected weights)
  for e in range(30):
    comb, _ = _random_comb_masks(rng, full_width=width, max_width=width)
    for l in range(4):
      weight_masks[l][e] = comb[l]
  params = _nonzero_params(width, width, (count,))
  # random bias masks (not only the bias rule) exercise bias-only "present" units
  bias_masks = tuple(rng.random((count,) + bs) < 0.5 for _, bs in mlp.layer_shapes(width))
  params = jax.tree.map(
    np.asarray,
    mlp.apply_masks(params, tuple(Layer(w, b) for w, b in zip(weight_masks, bias_masks))),
  )
  result = {k: np.asarray(v) for k, v in _jit_vmapped("connectivity")(params).items()}
  nonzero_disconnected = 0
  for e in range(count):
    one = jax.tree.map(lambda a: a[e], params)
    expected = _brute_force_connectivity(one)
    got = {k: int(result[k][e]) for k in CONNECTIVITY_KEYS}
    assert got == expected, (e, got, expected)
    nonzero_disconnected += expected["disconnected_weight_nnz"] > 0
  assert 0 < nonzero_disconnected < count  # the sample covers both regimes


# --------------------------------------------------------------------------- packing


@pytest.mark.parametrize("width", [3, 5, 16])
def test_pack_unpack_round_trip(width):
  rng = np.random.default_rng(width)
  for density in (0.0, 0.3, 1.0):
    masks = tuple(
      Layer(rng.random(ws) < density, rng.random(bs) < density)
      for ws, bs in mlp.layer_shapes(width)
    )
    blob, shapes = M.pack_masks(masks)
    assert isinstance(blob, bytes) and isinstance(shapes, str)
    total = sum(int(np.prod(ws)) + int(np.prod(bs)) for ws, bs in mlp.layer_shapes(width))
    assert len(blob) == (total + 7) // 8
    back = M.unpack_masks(blob, shapes)
    assert len(back) == 4
    M.validate_masks(back, width)
    for a, b in zip(masks, back):
      assert isinstance(b, Layer)
      np.testing.assert_array_equal(b.weight, a.weight)
      np.testing.assert_array_equal(b.bias, a.bias)
  # jax arrays and structured masks pack the same way
  structured = M.structured_masks((2, 3, 1), width if width >= 3 else 3)
  as_jax = jax.tree.map(jnp.asarray, structured)
  assert M.pack_masks(as_jax) == M.pack_masks(structured)
  back = M.unpack_masks(*M.pack_masks(as_jax))
  for a, b in zip(structured, back):
    np.testing.assert_array_equal(b.weight, a.weight)
    np.testing.assert_array_equal(b.bias, a.bias)


# --------------------------------------------------------------------------- occupied width


def _unit5_masks():
  """A single path through unit 5 of layer 2 (everything else at unit 0)."""
  w = _empty_weight_masks(16)
  w[0][0, :] = True
  w[1][5, 0] = True
  w[2][0, 5] = True
  w[3][0, 0] = True
  return M.with_bias_rule(w)


def test_occupied_width_cases():
  assert M.occupied_width(M.structured_masks((3, 3, 3), 16)) == 3
  assert M.occupied_width(M.structured_masks((16, 16, 16), 16)) == 16
  assert M.occupied_width(M.structured_masks((2, 9, 4), 16)) == 9
  assert M.occupied_width(_unit5_masks()) == 6
  # a unit occupied only by a bias bit counts too
  only_bias = list(M.structured_masks((1, 1, 1), 16))
  bias = np.zeros(16, bool)
  bias[7] = True
  only_bias[2] = Layer(only_bias[2].weight, bias)
  assert M.occupied_width(tuple(only_bias)) == 8
  # a unit occupied only by an outgoing weight (no incoming, no bias bit)
  out_only = [np.asarray(l.weight).copy() for l in M.structured_masks((1, 1, 1), 16)]
  out_only[1][0, 10] = True
  assert M.occupied_width(tuple(Layer(w, np.zeros(w.shape[0], bool)) for w in out_only)) == 11
  # empty masks: width 1
  empty = tuple(Layer(w, np.zeros(w.shape[0], bool)) for w in _empty_weight_masks(16))
  assert M.occupied_width(empty) == 1
  # leading axis: the widest network decides
  stacked = _stack([M.structured_masks((3, 3, 3), 16), jax.tree.map(np.asarray, _unit5_masks())])
  assert M.occupied_width(stacked) == 6


def _slicing_cases(rng):
  cases = [M.structured_masks((3, 3, 3), 16), _unit5_masks(), M.structured_masks((5, 2, 7), 16)]
  for _ in range(4):
    weights, _ = _random_comb_masks(rng, max_width=9)
    cases.append(M.with_bias_rule(weights))
  # a random sparse mask with an input-less, bias-only unit near the edge
  sparse = [np.asarray(l.weight).copy() for l in M.structured_masks((6, 6, 6), 16)]
  sparse = [w & (rng.random(w.shape) < 0.6) for w in sparse]
  sparse[0][5, :] = False
  sparse[1][0, 5] = True
  cases.append(M.with_bias_rule(sparse))
  return cases


@functools.partial(jax.jit, static_argnums=3)
def _full_and_sliced(params, masks, x, width):
  full = mlp.apply_masks(params, masks)
  sliced = mlp.slice_params(full, width)
  # masks sliced the same way give the same masked model
  again = mlp.apply_masks(mlp.slice_params(params, width), mlp.slice_params(masks, width))
  return (
    mlp.apply(full, x),
    mlp.apply(sliced, x),
    mlp.apply(again, x),
    M.model_nnz(full),
    M.model_nnz(sliced),
  )


def _check_slicing(params, masks, x, exact):
  width = M.occupied_width(masks)
  assert width < 16
  sliced = mlp.slice_params(jax.tree.map(np.asarray, params), width)
  for layer, (ws, bs) in zip(sliced, mlp.layer_shapes(width)):
    assert layer.weight.shape == ws and layer.bias.shape == bs
  reference, *logits, nnz_full, nnz_sliced = _full_and_sliced(params, masks, x, width)
  # nothing live was cut off
  assert int(nnz_sliced) == int(nnz_full)
  for values in logits:
    if exact:
      np.testing.assert_array_equal(np.asarray(values), np.asarray(reference))
    else:
      np.testing.assert_allclose(np.asarray(values), np.asarray(reference), rtol=1e-5, atol=1e-7)


def test_slicing_to_occupied_width_is_exact():
  """Bucket slicing removes only inert units, so the logits are identical.

  With dyadic parameters and inputs (k/8, m/4) every float32 sum in the forward
  pass is exact, so the logits must agree bit for bit whatever order XLA sums
  in. With generic float values the full-width matmul adds the zero products in
  a different association than the narrow one, so there only rounding-level
  differences (~1 ulp) are allowed.
  """
  rng = np.random.default_rng(8)
  cases = _slicing_cases(rng)
  x_dyadic = jnp.asarray(rng.integers(-4, 5, (333, 2)).astype(np.float32) / 4)
  dyadic = tuple(
    Layer(*(jnp.asarray(rng.integers(-4, 5, s).astype(np.float32) / 8) for s in shapes))
    for shapes in mlp.layer_shapes(16)
  )
  for masks in cases:
    _check_slicing(dyadic, masks, x_dyadic, exact=True)
  x = jnp.asarray(rng.standard_normal((333, 2)).astype(np.float32))
  params = _nonzero_params(9, 16)  # generic float32 values
  for masks in cases:
    _check_slicing(params, masks, x, exact=False)
