"""Tests of pruning at initialisation (search/pruning/at_init.py), METHODS §E.3-E.8, §E.10, §H.

(a) hand-computable width-1 cases per method; (b) scores and selections
against the PyTorch oracle (third_party/torch_pruning_reference.py) on the
same weights and batches; (c) the reference counts of §E.10/§H from the
formulas, measured on tie-free scores, and exact mode keeping exactly f;
(d) jit + vmap over three (zero-padded) experiments equals one unpadded
experiment at a time.

Compilation dominates the cost on a CPU, so every call goes through a few
cached jitted functions whose shapes repeat: width 1 for the hand cases,
width 5 (padded to 7 in (d)) with 640 data points, and width-8 arrays for
the count tests (smaller networks zero-padded into them, §I).
"""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cubist import masks as mask_ops
from cubist import mlp
from cubist.method import Hyper, MethodStatic
from cubist.mlp import Layer
from search import grids
from search.pruning import at_init as A
from search.pruning import counts as C
from search.pruning import select

REFERENCE = MethodStatic(count_mode="reference", random_init=False)
EXACT = MethodStatic(count_mode="exact", random_init=False)
RANDOM = MethodStatic(count_mode="reference", random_init=True)
NUM_POINTS = 640  # Feistel splits it (20 x 32); >= 4 batches of 128 for ProsPr
WIDTH, TARGET = 5, 19  # N = 65; §H: GraSP and ProsPr keep 20
N_WIDTH = mlp.num_weights(WIDTH)
METHOD_NAMES = sorted(A.METHODS)

# XLA's CPU backend compiles about twice as fast without LLVM optimisation, and
# these programs run for milliseconds: compilation is what this file spends.
_jit = functools.partial(jax.jit, compiler_options={"xla_backend_optimization_level": 0})
_snip_scores = _jit(A.snip_scores)
_grasp_scores = _jit(A.grasp_scores)
_grasp_sample_indices = _jit(A.grasp_sample_indices)
_synflow_scores = _jit(A.synflow_scores)
_prospr_scores = _jit(A.prospr_scores)
_prospr_scores_clean = _jit(functools.partial(A.prospr_scores, detach_first_buffer=False))
_iterative_masks = _jit(A.iterative_masks, static_argnames=("count_mode", "revive", "score_fn"))


@functools.lru_cache(maxsize=None)
def _at_init(name, static, batched=False):
  """jit (of vmap over experiments, if batched) of a method's at_init, x and y shared."""
  hook = A.METHODS[name].at_init
  run = lambda key, params, masks, x, y, hyper: hook(key, params, masks, x, y, hyper, static)
  return _jit(jax.vmap(run, in_axes=(0, 0, 0, None, None, 0)) if batched else run)


# --------------------------------------------------------------------------- helpers


def _data(seed=0, num_points=NUM_POINTS):
  """A small XOR-like data set: x (P, 2) float32, y (P,) float32 with both classes."""
  rng = np.random.default_rng(seed)
  x = rng.standard_normal((num_points, 2)).astype(np.float32)
  y = (x[:, 0] * x[:, 1] > 0).astype(np.float32)
  return jnp.asarray(x), jnp.asarray(y)


def _init(seed, width):
  """PyTorch-default-like params (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) drawn with numpy.

  Test inputs and bookkeeping stay in numpy: eager JAX operations compile per
  shape, which would dominate this file's runtime.
  """
  rng = np.random.default_rng(seed)
  layers = []
  for weight_shape, bias_shape in mlp.layer_shapes(width):
    bound = 1.0 / math.sqrt(weight_shape[1])
    layers.append(
      Layer(
        rng.uniform(-bound, bound, weight_shape).astype(np.float32),
        rng.uniform(-bound, bound, bias_shape).astype(np.float32),
      )
    )
  return tuple(layers)


def _dense_masks(params):
  return tuple(
    Layer(np.ones(np.shape(l.weight), bool), np.ones(np.shape(l.bias), bool)) for l in params
  )


def _dense_masks_at(width):
  return tuple(Layer(np.ones(w, bool), np.ones(b, bool)) for w, b in mlp.layer_shapes(width))


def _padded(params, masks, width):
  """Zero-pad a network and its masks to `width` (§I, numpy); padded mask entries are False."""
  return mlp.pad_params(params, width), mlp.pad_params(masks, width)


def _numpy(tree):
  return jax.tree.map(np.asarray, tree)


def _weight_nnz(params):
  return sum(np.count_nonzero(np.asarray(l.weight)) for l in params)


def _hyper(name, f, num_weights, static, lr=0.1):
  counts = A.METHODS[name].host_counts(f, num_weights, static)
  return Hyper(
    target_nnz=jnp.int32(f),
    lr=jnp.float32(lr),
    strength=jnp.float32(0),
    threshold=jnp.float32(0),
    counts=jnp.asarray(counts),
    num_weights=jnp.int32(num_weights),
  )


def _chain(a, b, w2, w3, w4, biases=(0.0, 0.0, 0.0, 0.0)):
  """A width-1 network W1 = [[a, b]], W2 = [[w2]], W3 = [[w3]], W4 = [[w4]] (N = 5), and its masks.

  Zero-padded into width-5 arrays (§I), the shapes the other tests compile for.
  """
  weights = ([[a, b]], [[w2]], [[w3]], [[w4]])
  params = tuple(
    Layer(np.asarray(w, np.float32), np.asarray([bias], np.float32))
    for w, bias in zip(weights, biases)
  )
  return _padded(params, _dense_masks(params), WIDTH)


def _rows(point, count=NUM_POINTS):
  return np.tile(np.asarray(point, np.float32), (count, 1))


def _flat(params):
  """select.flat_weights in numpy."""
  return np.concatenate([np.ravel(np.asarray(l.weight)) for l in params])


def _kept(masks):
  return _flat(masks).astype(bool)


def _live(flat, masks):
  """The entries of a flat (N_arr,) vector inside the starting mask: the chain's (a, b, w2, w3, w4)."""
  return np.asarray(flat)[_kept(masks)]


def _assert_scores_close(actual, expected):
  """Relative 1e-4, with an absolute floor of 1e-5 of the largest score (for near-zero entries)."""
  actual, expected = np.asarray(actual, np.float64), np.asarray(expected, np.float64)
  np.testing.assert_allclose(actual, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max())


# --------------------------------------------------------------------------- (a) hand cases


# Chain with biases 0, W = (1, 1, 2, 0.5, 1) and b4 = -4: on x = (1, 3) the logit is
# 4 - 4 = 0, so dL/dz = sigmoid(0) - 0 = 1/2 exactly, and |W dL/dW| is
# 1/2 * (a x1 p, b x2 p, z', z', z') with p = w2 w3 w4 = 1 and z' = 4: (0.5, 1.5, 2, 2, 2).
SNIP_CHAIN = dict(a=1.0, b=1.0, w2=2.0, w3=0.5, w4=1.0, biases=(0.0, 0.0, 0.0, -4.0))


def test_snip_hand_case_keeps_ties_in_reference_and_exactly_f_in_exact():
  params, masks = _chain(**SNIP_CHAIN)
  x, y = _rows((1.0, 3.0)), np.zeros(NUM_POINTS, np.float32)
  key = jax.random.PRNGKey(0)
  np.testing.assert_array_equal(
    _live(_snip_scores(params, x[:128], y[:128]), masks), [0.5, 1.5, 2, 2, 2]
  )

  def kept(f, static):
    return _kept(
      _at_init("snip", static)(key, params, masks, x, y, _hyper("snip", f, 5, static))[1]
    )

  # f = 4: k = 4, the 4th largest is 1.5 -> W1[0, 0] goes.
  np.testing.assert_array_equal(_live(kept(4, REFERENCE), masks), [False, True, True, True, True])
  # f = 2: the 2nd largest is 2, tied three ways: the reference keeps all three (>=).
  np.testing.assert_array_equal(_live(kept(2, REFERENCE), masks), [False, False, True, True, True])
  # exact: exactly 2, ties to the lower index.
  _, new = _at_init("snip", EXACT)(key, params, masks, x, y, _hyper("snip", 2, 5, EXACT))
  assert _kept(new).sum() == 2
  np.testing.assert_array_equal(_live(_flat(new), masks), [False, False, True, True, False])
  # Bias rule: W2, W3 kept, so b1, b2 stay; W4 pruned, so b3 goes; b4 always stays.
  assert [bool(l.bias[0]) for l in new] == [True, True, False, True]
  assert not any(np.any(l.bias[1:]) for l in new[:3])  # padded units stay off


def _grasp_chain_scores(theta, halves, temperature=200.0):
  """-theta * Hg for the width-1 chain with zero biases and positive activations, float64.

  z = w2 w3 w4 (a x1 + b x2) is a monomial, so grad z and the Hessian of z are
  closed forms; L_h = BCE(z_h / T, y_h) gives L' = (s - y) / T and
  L'' = s (1 - s) / T^2 with s = sigmoid(z_h / T).
  """
  a, b, w2, w3, w4 = theta
  terms = []
  for (x1, x2), label in halves:
    u, p = a * x1 + b * x2, w2 * w3 * w4
    grad_z = np.array([p * x1, p * x2, w3 * w4 * u, w2 * w4 * u, w2 * w3 * u])
    hess_z = np.zeros((5, 5))
    for i, xi in ((0, x1), (1, x2)):
      hess_z[i, 2:] = hess_z[2:, i] = (w3 * w4 * xi, w2 * w4 * xi, w2 * w3 * xi)
    hess_z[2, 3] = hess_z[3, 2] = w4 * u
    hess_z[2, 4] = hess_z[4, 2] = w3 * u
    hess_z[3, 4] = hess_z[4, 3] = w2 * u
    s = 1.0 / (1.0 + math.exp(-p * u / temperature))
    terms.append(((s - label) / temperature, s * (1 - s) / temperature**2, grad_z, hess_z))
  g = sum(d1 * grad_z for d1, _, grad_z, _ in terms)
  hg = sum(d2 * grad_z * (grad_z @ g) + d1 * hess_z @ g for d1, d2, grad_z, hess_z in terms)
  return -np.asarray(theta) * hg


def test_grasp_hand_case_matches_the_closed_form_and_removes_the_largest():
  theta = (1.0, 0.5, 2.0, 0.5, 1.5)
  params, masks = _chain(*theta)
  # Class 0 at (1, 2), class 1 at (2, 0.5): whatever the order, GraSP's halves are
  # 25 x (1, 2) (class 0) and 25 x (2, 0.5) (class 1).
  half = NUM_POINTS // 2
  x = np.concatenate([_rows((1.0, 2.0), half), _rows((2.0, 0.5), half)])
  y = np.concatenate([np.zeros(half, np.float32), np.ones(half, np.float32)])
  indices = _grasp_sample_indices(jax.random.PRNGKey(0), y)
  scores = _grasp_scores(params, x[indices], y[indices])
  expected = _grasp_chain_scores(theta, [((1.0, 2.0), 0.0), ((2.0, 0.5), 1.0)])
  _assert_scores_close(_live(scores, masks), expected)
  valid = jnp.asarray(_kept(masks))
  for f in (2, 3):
    removed = int(A.grasp_host_counts(f, 5, REFERENCE)[0])
    assert removed == 5 - f
    expected_keep = np.ones(5, bool)
    expected_keep[np.argsort(-expected)[:removed]] = False
    keep = A.grasp_select(scores, removed, 5, valid, "reference")
    assert np.sum(keep) == f
    np.testing.assert_array_equal(_live(keep, masks), expected_keep)


def test_synflow_hand_case_off_by_one_and_signs():
  # |theta|: a = 1, b = 0.25, w2 = w3 = w4 = 1, b1 = 0.5, b4 = 1, so with ones in,
  # h1 = 1.75, R = 2.75 and the scores are (1, 0.25, 1.75, 1.75, 1.75).
  params, masks = _chain(1.0, -0.25, 1.0, -1.0, 1.0, biases=(0.5, 0.0, 0.0, 1.0))
  key, x, y = jax.random.PRNGKey(0), _rows((0.0, 0.0)), jnp.zeros(NUM_POINTS)  # data-free
  np.testing.assert_array_equal(_live(_synflow_scores(params), masks), [1, 0.25, 1.75, 1.75, 1.75])
  # f = 4, N = 5: P_i = 0 until i = 100, P_100 = 1; the threshold is sorted[1] = 1 and
  # s > 1 keeps three (f - 1, §E.5): both input weights go.
  counts = A.synflow_host_counts(4, 5, REFERENCE)
  assert counts[:99].max() == 0 and counts[-1] == 1
  hyper = _hyper("synflow", 4, 5, REFERENCE)
  new_params, new = _at_init("synflow", REFERENCE)(key, params, masks, x, y, hyper)
  assert _kept(new).sum() == 3
  np.testing.assert_array_equal(_live(_flat(new_params), masks), [0, 0, 1, -1, 1])  # signs back
  np.testing.assert_array_equal([l.bias[0] for l in new_params], [0.5, 0, 0, 1])
  # exact: exactly 4; the smallest (b) goes once the schedule asks for 4.
  _, new = _at_init("synflow", EXACT)(key, params, masks, x, y, _hyper("synflow", 4, 5, EXACT))
  assert _kept(new).sum() == 4
  np.testing.assert_array_equal(_live(_flat(new), masks), [True, False, True, True, True])


# Chain with biases: W = (1, 1, 2, 0.5, 1), b = (0, 0.25, 0.5, -4.625).
# Batch 1, x = (1, 3): z = 0, dL/dz = 1/2, |W dL/dW| = 1/2 (1, 3, 4, 4.125, 4.625);
# K_1 = 5: keep > the 5th largest, so a goes.
# Batch 2, x = (5, 1), at the sparse point a = 0: with d = dL/dz there,
# Iter-SNIP (a pruned): (min = 0, d, d, 1.125 d, 1.625 d); K_2 = 3: keep > d;
# FORCE, |W0 dL/dW|: (5 d, d, d, 1.125 d, 1.625 d); keep > 1.125 d, so a is revived.
ITERATIVE_CHAIN = dict(a=1.0, b=1.0, w2=2.0, w3=0.5, w4=1.0, biases=(0.0, 0.25, 0.5, -4.625))


@pytest.mark.parametrize(
  "revive, expected",
  [(False, [False, False, False, True, True]), (True, [True, False, False, False, True])],
)
def test_iter_snip_and_force_hand_case(revive, expected):
  params, masks = _chain(**ITERATIVE_CHAIN)
  batches_x = np.stack([_rows((1.0, 3.0), 4), _rows((5.0, 1.0), 4)])
  keep, history = _iterative_masks(
    params,
    _kept(masks),
    batches_x,
    np.zeros((2, 4), np.float32),
    np.asarray([5, 3], np.int32),
    count_mode="reference",
    revive=revive,
  )
  np.testing.assert_allclose(_live(history[0], masks), [0.5, 1.5, 2.0, 2.0625, 2.3125], rtol=1e-6)
  step2 = _live(history[1], masks)
  first = 5.0 if revive else 0.0
  np.testing.assert_allclose(step2, np.array([first, 1.0, 1.0, 1.125, 1.625]) * step2[1], rtol=1e-5)
  assert np.sum(keep) == 2
  np.testing.assert_array_equal(_live(keep, masks), expected)


def test_prospr_hand_case_with_zero_lr_is_snip_on_the_meta_batch():
  params, masks = _chain(**ITERATIVE_CHAIN)
  # Inner batches arbitrary; with lr = 0 the fast weights never move, so
  # dL_meta/dc = W * dL/dW on the last batch: 1/2 (1, 3, 4, 4.125, 4.625).
  batches_x = np.stack(
    [_rows(point, 128) for point in ((5.0, 1.0), (2.0, 2.0), (0.5, 1.0), (1.0, 3.0))]
  )
  batches_y = np.asarray([[1.0] * 128, [0.0] * 128, [1.0] * 128, [0.0] * 128], np.float32)
  scores = _prospr_scores(params, batches_x, batches_y, jnp.float32(0.0))
  np.testing.assert_allclose(_live(scores, masks), [0.5, 1.5, 2.0, 2.0625, 2.3125], rtol=1e-6)
  moved = _prospr_scores(params, batches_x, batches_y, jnp.float32(0.1))
  assert not np.allclose(moved, scores)  # the meta-gradient sees the inner steps
  # ceil(5 (1 - (1 - 3/5))) = 3: the three largest.
  assert A.prospr_host_counts(3, 5, REFERENCE)[0] == 3
  keep = select.keep_top_k(scores, 3, jnp.asarray(_kept(masks)))
  np.testing.assert_array_equal(_live(keep, masks), [False, False, True, True, True])


def _unit_zero_without_outgoing(width):
  """Dense weight masks at `width` where hidden unit 0 of every hidden layer has no outgoing edge."""
  weight_masks = [np.ones(shape, bool) for shape, _ in mlp.layer_shapes(width)]
  for l in (1, 2, 3):
    weight_masks[l][:, 0] = False
  return weight_masks


def test_prospr_bias_index_bug_at_width_3_and_clean_mode():
  for width, buggy_third in ((3, True), (4, False)):
    masks = _dense_masks_at(width)
    weight_masks = _unit_zero_without_outgoing(width)
    for clean in (False, True):
      biases = A.prospr_bias_masks(weight_masks, masks, clean)
      assert not biases[0][0] and not biases[1][0]
      assert bool(biases[2][0]) == (buggy_third and not clean)  # §E.8: w = 3, third layer unmasked
      assert biases[3][0]
      assert all(np.all(b[1:]) for b in biases[:3])


def test_prospr_failed_when_a_weight_matrix_is_empty():
  masks = _dense_masks_at(3)
  assert not A.prospr_failed(masks, None, REFERENCE)
  emptied = (masks[0], masks[1], Layer(np.zeros_like(masks[2].weight), masks[2].bias), masks[3])
  assert A.prospr_failed(emptied, None, REFERENCE)


# --------------------------------------------------------------------------- data and initialisation


def test_grasp_samples_are_the_first_of_each_class_class_zero_first():
  key = jax.random.PRNGKey(5)
  order = np.asarray(A.shuffled_prefix(key, NUM_POINTS, NUM_POINTS))
  assert np.array_equal(np.sort(order), np.arange(NUM_POINTS))
  balanced = np.asarray(_data()[1])
  rare = (np.arange(NUM_POINTS) % 20 == 0).astype(np.float32)  # 32 of class 1: several chunks
  for labels in (balanced, rare):
    indices = np.asarray(_grasp_sample_indices(key, labels))
    for half, label in ((indices[:25], 0), (indices[25:], 1)):  # §H 6: single-class halves
      np.testing.assert_array_equal(half, order[labels[order] == label][:25])


def test_shuffled_prefix_distinct_and_falls_back_for_prime_sizes():
  for num_points in (NUM_POINTS, 257):  # 257 is prime: jax.random.permutation
    indices = np.asarray(A.shuffled_prefix(jax.random.PRNGKey(1), num_points, 200))
    assert len(np.unique(indices)) == 200 and indices.min() >= 0 and indices.max() < num_points


def test_xavier_fans_come_from_the_run_width_when_padded():
  params = _init(0, 4)
  key = jax.random.PRNGKey(1)
  padded = _jit(A.xavier_normal_from_masks)(key, *_padded(params, _dense_masks(params), 7))
  noises = _jit(
    lambda k: [
      jax.random.normal(layer_key, layer.weight.shape)
      for layer_key, layer in zip(jax.random.split(k, 4), padded)
    ]
  )(key)
  for index, (fan_in, fan_out) in enumerate(((2, 4), (4, 4), (4, 4), (4, 1))):
    weight, noise = np.asarray(padded[index].weight), np.asarray(noises[index])
    np.testing.assert_allclose(
      weight[:fan_out, :fan_in],
      math.sqrt(2 / (fan_in + fan_out)) * noise[:fan_out, :fan_in],
      rtol=1e-6,
    )
    assert np.count_nonzero(weight) == fan_in * fan_out  # padded entries stay 0


@pytest.mark.parametrize("name", ["snip", "grasp"])
def test_random_family_trains_from_xavier_weights_fixed_family_does_not(name):
  x, y = _data()
  params = _init(2, WIDTH)
  masks = _dense_masks(params)
  key = jax.random.PRNGKey(9)
  xavier = mlp.xavier_normal_weights(jax.random.fold_in(key, 0), params)
  for static, source in ((RANDOM, xavier), (REFERENCE, params)):
    new_params, new = _at_init(name, static)(
      key, params, masks, x, y, _hyper(name, TARGET, N_WIDTH, static)
    )
    expected = select.apply_weight_keep(source, new)
    for got, want in zip(new_params, expected):
      np.testing.assert_allclose(got.weight, want.weight, rtol=1e-6)
      np.testing.assert_array_equal(got.bias, want.bias)  # biases are never re-initialised


# --------------------------------------------------------------------------- (b) PyTorch oracle


@pytest.fixture(scope="module")
def oracle():
  pytest.importorskip("torch")
  from third_party import torch_pruning_reference

  return torch_pruning_reference


@pytest.fixture(scope="module")
def network():
  """Width-5 params (PyTorch-default-like), their numpy dict, the data, and a key."""
  params = _init(0, WIDTH)
  x, y = _data()
  return params, mlp.to_numpy_dict(params), x, y, jax.random.PRNGKey(3)


def test_snip_matches_oracle(oracle, network):
  params, numpy_params, x, y, key = network
  indices = A.shuffled_prefix(key, NUM_POINTS, 128)
  bx, by = np.asarray(x[indices]), np.asarray(y[indices])
  scores = _snip_scores(params, bx, by)
  expected = oracle.snip_scores(numpy_params, bx, by)
  _assert_scores_close(scores, expected)
  count = A.snip_host_counts(TARGET, N_WIDTH, REFERENCE)[0]
  keep = A.snip_select(scores, count, jnp.ones(N_WIDTH, bool), "reference")
  np.testing.assert_array_equal(keep, oracle.snip_keep(expected, TARGET, N_WIDTH))


def test_grasp_matches_oracle(oracle, network):
  params, numpy_params, x, y, key = network
  indices = _grasp_sample_indices(key, y)
  sx, sy = np.asarray(x[indices]), np.asarray(y[indices])
  scores = _grasp_scores(params, sx, sy)
  expected = oracle.grasp_scores(numpy_params, sx, sy)
  _assert_scores_close(scores, expected)
  removed = A.grasp_host_counts(TARGET, N_WIDTH, REFERENCE)[0]
  keep = A.grasp_select(scores, removed, N_WIDTH, jnp.ones(N_WIDTH, bool), "reference")
  np.testing.assert_array_equal(keep, oracle.grasp_keep(expected, TARGET, N_WIDTH))
  assert keep.sum() == 20  # §H: w = 5, f = 19 -> 20


def test_synflow_matches_oracle(oracle, network):
  params, numpy_params, x, y, key = network
  result = oracle.synflow_prune(numpy_params, TARGET)
  _assert_scores_close(_synflow_scores(params), result["scores"][0])
  _, new = _at_init("synflow", REFERENCE)(
    key, params, _dense_masks(params), x, y, _hyper("synflow", TARGET, N_WIDTH, REFERENCE)
  )
  np.testing.assert_array_equal(_kept(new), result["keep"])
  for got, want in zip(new, result["bias_masks"]):
    np.testing.assert_array_equal(got.bias, want)
  assert result["keep"].sum() == TARGET - 1  # §E.5 off-by-one


@pytest.mark.parametrize("variant", ["iter_snip", "force"])
def test_iterative_methods_match_oracle(oracle, network, variant):
  params, numpy_params, x, y, key = network
  indices = np.stack(
    [np.asarray(A.shuffled_prefix(jax.random.fold_in(key, s), NUM_POINTS, 128)) for s in range(10)]
  )
  batches_x, batches_y = np.asarray(x)[indices], np.asarray(y)[indices]
  result = oracle.iterative_prune(numpy_params, batches_x, batches_y, TARGET, variant)
  counts = jnp.asarray(A.iterative_host_counts(TARGET, N_WIDTH, REFERENCE))
  keep, history = _iterative_masks(
    params,
    jnp.ones(N_WIDTH, bool),
    batches_x,
    batches_y,
    counts,
    count_mode="reference",
    revive=variant == "force",
  )
  for step_scores, step_expected in zip(np.asarray(history), result["scores"]):
    _assert_scores_close(step_scores, step_expected)
  keep = np.asarray(keep) & (_flat(params) != 0)
  np.testing.assert_array_equal(keep, result["keep"])


def test_prospr_matches_oracle(oracle, network):
  params, numpy_params, x, y, key = network
  indices = np.asarray(A.shuffled_prefix(key, NUM_POINTS, 512)).reshape(4, 128)
  batches_x, batches_y = np.asarray(x)[indices], np.asarray(y)[indices]
  scores = _prospr_scores(params, batches_x, batches_y, jnp.float32(0.1))
  expected = oracle.prospr_scores(numpy_params, batches_x, batches_y, 0.1)
  _assert_scores_close(scores, expected)
  # The clean variant (no detached first buffer) is the full meta-gradient, and another one.
  clean = _prospr_scores_clean(params, batches_x, batches_y, jnp.float32(0.1))
  _assert_scores_close(
    clean, oracle.prospr_scores(numpy_params, batches_x, batches_y, 0.1, detach_first_buffer=False)
  )
  assert np.max(np.abs(np.asarray(clean) - np.asarray(scores))) > 1e-3 * np.max(np.abs(scores))
  keep = select.keep_top_k(scores, A.prospr_host_counts(TARGET, N_WIDTH, REFERENCE)[0])
  np.testing.assert_array_equal(keep, oracle.prospr_keep(expected, TARGET, N_WIDTH))
  for width in (3, 4):
    weight_masks = _unit_zero_without_outgoing(width)
    dense = _dense_masks_at(width)
    for got, want in zip(
      A.prospr_bias_masks(weight_masks, dense, False), oracle.prospr_bias_masks(weight_masks)
    ):
      np.testing.assert_array_equal(got, want)


# --------------------------------------------------------------------------- (c) counts


# §H "Float truncation examples" (target -> kept count before the strict-threshold
# effect): SNIP k, GraSP N - R, FORCE K_10, ProsPr ceil(...).
H_EXAMPLES = {
  (4, 15): {"snip": 14, "force": 14, "grasp": 15},
  (5, 19): {"grasp": 20, "prospr": 20},
  (6, 16): {"prospr": 17, "force": 15},
  (8, 21): {"prospr": 22},
}


def _nominal(name, f, n, static):
  """The count a method's formula asks for at the end (before any strict-threshold effect)."""
  counts = A.METHODS[name].host_counts(f, n, static)
  return {
    "snip": counts[0],
    "grasp": n - counts[0],
    "synflow": n - counts[-1],
    "iter_snip": counts[-1],
    "force": counts[-1],
    "prospr": counts[0],
  }[name]


def test_host_counts_reproduce_the_examples_of_section_h():
  for (width, f), expected in H_EXAMPLES.items():
    n = mlp.num_weights(width)
    for name, count in expected.items():
      assert _nominal(name, f, n, REFERENCE) == count, (name, width, f)
  # §E.5 and §E.6 worked schedules at N = 560, f = 20.
  assert list(A.iterative_host_counts(20, 560, REFERENCE)) == [
    401,
    287,
    206,
    147,
    105,
    75,
    54,
    38,
    27,
    20,
  ]
  kept = 560 - A.synflow_host_counts(20, 560, REFERENCE)
  assert (kept[0], kept[1], kept[49], kept[-1]) == (542, 524, 106, 20)
  for name in METHOD_NAMES:  # exact schedules end at exactly f
    assert _nominal(name, 20, 560, EXACT) == 20


COUNT_ARRAY_WIDTH = 8  # every count test network is zero-padded to width 8 (one compile)


@functools.lru_cache(maxsize=None)
def _tie_free_count(name, count_mode):
  """jit: a method's selection on given tie-free scores -> number of weights kept.

  scores (N_arr,) and step_scores (10, N_arr) are random and distinct, also
  outside the valid entries (which must never be kept). SynFlow's stand-in
  score is 0 for zeroed weights, as its real score is; Iter-SNIP's is 0 for
  pruned weights (its working copy zeroes them); FORCE scores every weight.
  """

  def count(scores, step_scores, signs, params, masks, counts, num_weights):
    valid = select.flat_weights(masks)
    if name == "snip":
      keep = A.snip_select(scores, counts[0], valid, count_mode)
    elif name == "grasp":
      keep = A.grasp_select(scores * signs, counts[0], num_weights, valid, count_mode)
    elif name == "prospr":
      keep = select.keep_top_k(scores, counts[0], valid)
    elif name == "synflow":
      score_fn = lambda p: scores * (select.flat_weights(p) != 0)
      keep = select.flat_weights(
        A.synflow_masks(params, masks, counts, num_weights, count_mode, score_fn)[1]
      )
    else:
      revive = name == "force"
      score_fn = (
        (lambda p, keep, bx, by: bx)
        if revive
        else (lambda p, keep, bx, by: jnp.where(keep, bx, 0.0))
      )
      keep, _ = A.iterative_masks(
        params, valid, step_scores, jnp.zeros((10, 1)), counts, count_mode, revive, score_fn
      )
    return jnp.sum(keep)

  return _jit(count)


def _measured_on_tie_free_scores(name, width, f, static, seed=0):
  n = mlp.num_weights(width)
  counts = A.METHODS[name].host_counts(f, n, static)
  params = _init(seed, width)
  params, masks = _padded(params, _dense_masks(params), COUNT_ARRAY_WIDTH)
  size = mlp.num_weights(COUNT_ARRAY_WIDTH)
  rng = np.random.default_rng(seed)
  scores = (rng.permutation(size) + 1.0).astype(np.float32)  # distinct, positive
  step_scores = np.stack([rng.permutation(size) + 1.0 for _ in range(10)]).astype(np.float32)
  signs = rng.choice([-1.0, 1.0], size).astype(np.float32)
  return int(
    _tie_free_count(name, static.count_mode)(
      scores, step_scores, signs, params, masks, counts, np.int32(n)
    )
  )


# The overparameterisation grid at the widths whose arrays fit COUNT_ARRAY_WIDTH.
COUNT_GRID = [
  (w, f) for w in (3, 4, 5, 6, 7, 8) for f in grids.OVERPARAM_TARGETS if f < mlp.num_weights(w)
]


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_the_published_count_table_is_what_runs(name):
  """Over the §G.2 grid: what the selection keeps on tie-free scores, with the counts the
  engine hands it, equals the §E.10 table that counts.py publishes; exact mode keeps f."""
  for width, f in COUNT_GRID:
    n = mlp.num_weights(width)
    expected = C.final_counts(f, n)[name]
    assert _measured_on_tie_free_scores(name, width, f, REFERENCE) == expected, (width, f)
    assert _measured_on_tie_free_scores(name, width, f, EXACT) == f, (width, f)


@pytest.mark.parametrize("name", ["synflow", "iter_snip", "force"])
def test_exact_mode_keeps_exactly_f_on_a_network(name):
  """Iterative methods on a real network (zero-score ties possible) still end at exactly f."""
  x, y = _data()
  params = _init(1, WIDTH)
  new_params, new = _at_init(name, EXACT)(
    jax.random.PRNGKey(2), params, _dense_masks(params), x, y, _hyper(name, TARGET, N_WIDTH, EXACT)
  )
  assert _kept(new).sum() == TARGET
  assert _weight_nnz(new_params) == TARGET
  for layer, bias in zip(new, mask_ops.bias_masks_from_weights([l.weight for l in new])):
    np.testing.assert_array_equal(layer.bias, bias)


# --------------------------------------------------------------------------- (d) jit + vmap


@pytest.mark.parametrize("name", METHOD_NAMES)
def test_jit_vmap_over_padded_experiments_equals_one_unpadded_at_a_time(name):
  """Three width-5 experiments zero-padded to width 7 (§I), different f and lr, one vmapped call."""
  x, y = _data()
  keys = jax.random.split(jax.random.PRNGKey(11), 3)
  params = [_init(12 + e, WIDTH) for e in range(3)]
  hypers = [_hyper(name, f, N_WIDTH, REFERENCE, lr) for f, lr in ((15, 0.05), (19, 0.1), (24, 0.2))]
  padded = [_padded(p, _dense_masks(p), 7) for p in params]
  stack = lambda trees: jax.tree.map(lambda *leaves: np.stack(leaves), *trees)
  batched_params, batched_masks = _numpy(
    _at_init(name, REFERENCE, batched=True)(
      keys, stack([p for p, _ in padded]), stack([m for _, m in padded]), x, y, stack(hypers)
    )
  )
  for e in range(3):
    one_params, one_masks = _numpy(
      _at_init(name, REFERENCE)(keys[e], params[e], _dense_masks(params[e]), x, y, hypers[e])
    )
    got_masks = mlp.slice_params(jax.tree.map(lambda leaf: leaf[e], batched_masks), WIDTH)
    got_params = jax.tree.map(lambda leaf: leaf[e], batched_params)
    for got, want in zip(got_masks, one_masks):
      np.testing.assert_array_equal(got.weight, want.weight)
      np.testing.assert_array_equal(got.bias, want.bias)
    for got, want in zip(
      jax.tree.leaves(mlp.slice_params(got_params, WIDTH)), jax.tree.leaves(one_params)
    ):
      np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
    assert _weight_nnz(got_params) == _weight_nnz(one_params)  # nothing outside the width-5 block
    kept, nominal = (
      _kept(one_masks).sum(),
      _nominal(name, int(hypers[e].target_nnz), N_WIDTH, REFERENCE),
    )
    assert (kept == nominal) if name == "prospr" else (0 < kept <= nominal)
