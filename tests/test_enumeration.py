"""Tests of the per-layer mask enumeration (search/enumeration.py) and canonical forms
(search/symmetry.py), METHODS §D.3-D.4."""

import itertools
import math
import time

import numpy as np
import pytest

import search.enumeration as enumerate_module
from search.enumeration import (
  all_layer_masks,
  count_layer_masks,
  index_of_mask,
  layer_masks,
  mask_from_index,
  nnz_range,
)
from search.symmetry import canonical_layer, canonical_network, network_representatives

# METHODS §D.3, per-layer counts table: shape (rows, cols) -> {nnz: count}.
COUNTS_TABLE = {
  (3, 2): {3: 2, 4: 3, 5: 2, 6: 1},
  (3, 3): {3: 1, 4: 9, 5: 18, 6: 16, 7: 9, 8: 3, 9: 1},
  (2, 3): {3: 3, 4: 6, 5: 3, 6: 1},
  (2, 2): {2: 1, 3: 2, 4: 1},
  (6, 2): {6: 5, 7: 6, 8: 5, 9: 4, 10: 3, 11: 2, 12: 1},
  (7, 2): {7: 6, 8: 7, 9: 6, 10: 5, 11: 4, 12: 3, 13: 2, 14: 1},
}

SMALL_SHAPES = [(r, c) for r in range(1, 5) for c in range(1, 5)] + [(2, 5), (5, 2)]


# ---------------------------------------------------------------------------
# Oracle: a slow, literal transcription of the reference recursion V(C, R, n), §D.3.


def literal_budgets(rows, cap, total):
  if rows == 1:
    return [[total]]
  out = []
  for first in range(math.ceil(total / rows), min(cap, total - (rows - 1)) + 1):
    for rest in literal_budgets(rows - 1, first, total - first):
      out.append([first] + rest)
  return out


def literal_candidates(cols, budget):
  return [
    [1 if j in combo else 0 for j in range(cols)]
    for combo in itertools.combinations(range(cols), budget)
  ]


def literal_bin(row):
  return sum(v * 2 ** (len(row) - 1 - j) for j, v in enumerate(row))


def literal_V(cols, rows, nnz):
  out = []
  for budgets in literal_budgets(rows, cols, nnz):
    if rows == 1:
      out.extend([x] for x in literal_candidates(cols, budgets[0]))
      continue

    def lower(r):  # list of matrices for rows r..R-1 (0-based), built from the bottom
      if r == rows - 1:
        return [[x] for x in literal_candidates(cols, budgets[r])]
      res = []
      for below in lower(r + 1):  # outer loop
        for x in literal_candidates(cols, budgets[r]):  # inner loop
          if budgets[r] == budgets[r + 1] and literal_bin(x) < literal_bin(below[0]):
            continue
          res.append([x] + below)
      return res

    for below in lower(1):  # middle loop
      for x in literal_candidates(cols, budgets[0]):  # inner loop
        if any(x[j] == 0 and all(b[j] == 0 for b in below) for j in range(cols)):
          continue
        if budgets[0] == budgets[1] and literal_bin(x) < literal_bin(below[0]):
          continue
        out.append([x] + below)
  return np.asarray(out, bool).reshape(-1, rows, cols)


def brute_force_orbit_counts(rows, cols):
  """{nnz: number of row-permutation orbits of 0/1 matrices with no empty row or column}."""
  n_bits = rows * cols
  codes = np.arange(2**n_bits, dtype=np.int64)
  bits = ((codes[:, None] >> np.arange(n_bits)) & 1).astype(bool).reshape(-1, rows, cols)
  valid = bits.any(axis=2).all(axis=1) & bits.any(axis=1).all(axis=1)
  bits = bits[valid]
  row_codes = (bits * (1 << np.arange(cols))).sum(axis=2)
  orbit_key = np.sort(row_codes, axis=1)
  nnz = bits.sum(axis=(1, 2))
  counts = {}
  for n in np.unique(nnz):
    counts[int(n)] = len(np.unique(orbit_key[nnz == n], axis=0))
  return counts


# ---------------------------------------------------------------------------
# Counts


@pytest.mark.parametrize("shape", sorted(COUNTS_TABLE))
def test_counts_table(shape):
  expected = COUNTS_TABLE[shape]
  assert list(nnz_range(*shape)) == sorted(expected)
  assert {n: len(layer_masks(*shape, n)) for n in nnz_range(*shape)} == expected
  assert {n: count_layer_masks(*shape, n) for n in nnz_range(*shape)} == expected


@pytest.mark.parametrize("shape", SMALL_SHAPES)
def test_count_equals_brute_force_orbits(shape):
  brute = brute_force_orbit_counts(*shape)
  assert sorted(brute) == list(nnz_range(*shape))
  for n in nnz_range(*shape):
    assert count_layer_masks(*shape, n) == brute[n]
    assert len(layer_masks(*shape, n)) == brute[n]


def test_count_matches_enumeration_on_larger_shapes():
  for shape in [(3, 7), (7, 3), (4, 4), (3, 8), (8, 3), (16, 2), (4, 5), (5, 4)]:
    for n in nnz_range(*shape):
      assert len(layer_masks(*shape, n)) == count_layer_masks(*shape, n), (shape, n)
  for n in (16, 17, 28, 29, 32):  # 2x16 at the levels where the count is modest
    assert len(layer_masks(2, 16, n)) == count_layer_masks(2, 16, n)


def test_count_large_shapes_without_materialising():
  assert count_layer_masks(16, 16, 16) == 1  # 16 single-ones rows: a permutation matrix orbit
  assert count_layer_masks(16, 16, 256) == 1
  assert count_layer_masks(1, 16, 16) == 1 and count_layer_masks(16, 1, 16) == 1
  # 2xC at nnz = C: the two rows partition the columns, so 2^(C-1) - 1 orbits.
  assert count_layer_masks(2, 16, 16) == 2**15 - 1
  # n = rows*cols - 1: one zero anywhere, rows are interchangeable, so `cols` orbits.
  assert count_layer_masks(16, 16, 255) == 16
  big = count_layer_masks(16, 16, 128)
  assert isinstance(big, int) and big > 2**200


def test_counts_and_timing_3x7_7x3():
  for cached in (
    enumerate_module._layer_masks_cached,
    enumerate_module._layer_bins,
    enumerate_module._count,
    enumerate_module._multiset_table,
    enumerate_module._candidates,
    enumerate_module._supersets,
  ):
    cached.cache_clear()  # time a cold start
  start = time.perf_counter()
  counted = {s: [count_layer_masks(*s, n) for n in nnz_range(*s)] for s in [(3, 7), (7, 3)]}
  count_s = time.perf_counter() - start
  start = time.perf_counter()
  enumerated = {s: [len(layer_masks(*s, n)) for n in nnz_range(*s)] for s in [(3, 7), (7, 3)]}
  enum_s = time.perf_counter() - start
  assert counted == enumerated
  assert sum(counted[(3, 7)]) == 137257 and sum(counted[(7, 3)]) == 1611
  print(f"3x7 + 7x3: count {count_s:.3f}s, enumerate {enum_s:.3f}s")


# ---------------------------------------------------------------------------
# Order


@pytest.mark.parametrize(
  "shape", [(3, 3), (2, 3), (3, 2), (4, 3), (3, 4), (2, 2), (1, 3), (3, 1), (2, 5), (5, 2), (4, 4)]
)
def test_order_matches_literal_recursion(shape):
  rows, cols = shape
  for n in nnz_range(rows, cols):
    np.testing.assert_array_equal(
      layer_masks(rows, cols, n), literal_V(cols, rows, n), err_msg=f"{shape} nnz={n}"
    )


@pytest.mark.parametrize("shape", [(3, 3), (4, 3), (3, 4), (3, 7), (7, 3), (4, 4)])
def test_enumerated_masks_are_valid_unique_canonical(shape):
  rows, cols = shape
  weights = 1 << np.arange(cols - 1, -1, -1)
  for n in nnz_range(rows, cols):
    masks = layer_masks(rows, cols, n)
    assert masks.dtype == bool and masks.shape[1:] == shape
    assert (masks.sum(axis=(1, 2)) == n).all()
    assert masks.any(axis=2).all() and masks.any(axis=1).all()
    assert len(np.unique(masks.reshape(len(masks), -1), axis=0)) == len(masks)
    budget = masks.sum(axis=2)
    bins = (masks * weights).sum(axis=2)
    key = budget * (1 << cols) + bins  # budget first, then bin(); both descending
    assert (np.diff(key, axis=1) <= 0).all()


def test_known_first_masks():
  # 3x3 at nnz=4: budgets (2,1,1) only. Bottom row (1,0,0), middle row x >= it: (1,0,0)
  # first, then the top row must cover columns 1 and 2.
  np.testing.assert_array_equal(layer_masks(3, 3, 4)[0], [[0, 1, 1], [1, 0, 0], [1, 0, 0]])
  np.testing.assert_array_equal(
    layer_masks(2, 3, 3)[:3],
    [[[0, 1, 1], [1, 0, 0]], [[1, 0, 1], [0, 1, 0]], [[1, 1, 0], [0, 0, 1]]],
  )


def test_layer_masks_is_cached_and_read_only():
  a = layer_masks(3, 3, 5)
  assert a is layer_masks(3, 3, 5)
  with pytest.raises(ValueError):
    a[0, 0, 0] = not a[0, 0, 0]


def test_all_layer_masks():
  nnz, index, masks = all_layer_masks(3, 3)
  assert len(masks) == 57 == len(nnz) == len(index)
  for n, i, m in zip(nnz, index, masks):
    np.testing.assert_array_equal(m, layer_masks(3, 3, n)[i])


# ---------------------------------------------------------------------------
# index <-> mask


@pytest.mark.parametrize("shape", [(3, 3), (2, 3), (3, 2), (4, 4), (7, 2), (3, 7)])
def test_index_round_trip(shape):
  rng = np.random.default_rng(0)
  for n in nnz_range(*shape):
    count = count_layer_masks(*shape, n)
    for i in sorted(set(rng.integers(0, count, size=min(count, 20)).tolist()) | {0, count - 1}):
      mask = mask_from_index(*shape, n, i)
      assert mask.shape == shape and mask.flags.writeable
      assert index_of_mask(mask) == i
      assert index_of_mask(mask.astype(int)) == i


def test_canonical_layer_maps_every_valid_matrix_into_the_enumeration():
  rng = np.random.default_rng(1)
  for _ in range(200):
    rows, cols = rng.integers(1, 6, size=2)
    mask = rng.random((rows, cols)) < 0.5
    if not (mask.any(axis=1).all() and mask.any(axis=0).all()):
      continue
    canon = canonical_layer(mask)
    np.testing.assert_array_equal(canonical_layer(mask[rng.permutation(rows)]), canon)
    assert sorted(map(tuple, canon.astype(int))) == sorted(map(tuple, mask.astype(int)))
    i = index_of_mask(canon)
    np.testing.assert_array_equal(layer_masks(rows, cols, int(mask.sum()))[i], canon)


def test_bad_inputs_raise_value_error():
  with pytest.raises(ValueError, match="nnz"):
    layer_masks(3, 3, 2)
  with pytest.raises(ValueError, match="nnz"):
    count_layer_masks(3, 3, 10)
  with pytest.raises(ValueError, match="nnz"):
    mask_from_index(3, 3, 2, 0)
  with pytest.raises(ValueError, match="index"):
    mask_from_index(3, 3, 4, 9)
  with pytest.raises(ValueError, match="index"):
    mask_from_index(3, 3, 4, -1)
  with pytest.raises(ValueError, match="rows"):
    nnz_range(0, 3)
  with pytest.raises(ValueError, match="empty"):
    index_of_mask([[1, 1, 0], [1, 0, 0]])  # empty column
  with pytest.raises(ValueError, match="empty"):
    index_of_mask([[1, 1], [0, 0]])  # empty row
  with pytest.raises(ValueError, match="canonical"):
    index_of_mask([[1, 0, 0], [0, 1, 1]])  # budgets ascending
  with pytest.raises(ValueError, match="canonical"):
    index_of_mask([[0, 1], [1, 0]])  # equal budgets, bin ascending
  with pytest.raises(ValueError, match="0/1"):
    index_of_mask([[2, 1], [1, 0]])
  with pytest.raises(ValueError, match="2-D"):
    index_of_mask([1, 1])
  with pytest.raises(ValueError, match="too many"):
    layer_masks(16, 16, 128)
  with pytest.raises(ValueError, match="shapes"):
    canonical_network(np.ones((3, 2)), np.ones((3, 2)), np.ones((2, 3)))


# ---------------------------------------------------------------------------
# Network canonical form


def relabel(w1, w2, w3, p1, p2, p3):
  """Apply hidden-unit relabelling: rows of W_l and columns of W_{l+1} by pi_l."""
  return w1[p1], w2[p2][:, p1], w3[p3][:, p2]


def brute_force_keys(w1, w2, w3):
  """Minimum over all (pi1, pi2, pi3) of the network's bit encoding; batched over networks."""
  t, d1, _ = w1.shape
  d2, d3 = w2.shape[1], w3.shape[1]
  n_bits = 2 * d1 + d1 * d2 + d2 * d3
  weights = np.int64(1) << np.arange(n_bits, dtype=np.int64)
  best = np.full(t, np.iinfo(np.int64).max)
  for p1 in itertools.permutations(range(d1)):
    p1 = list(p1)
    a = w1[:, p1]
    b1 = w2[:, :, p1]
    for p2 in itertools.permutations(range(d2)):
      p2 = list(p2)
      b = b1[:, p2]
      c2 = w3[:, :, p2]
      head = np.concatenate([a.reshape(t, -1), b.reshape(t, -1)], axis=1)
      for p3 in itertools.permutations(range(d3)):
        c = c2[:, list(p3)]
        bits = np.concatenate([head, c.reshape(t, -1)], axis=1).astype(np.int64)
        best = np.minimum(best, bits @ weights)
  return best


def enumerated_triples(d1, d2, d3):
  w1 = all_layer_masks(d1, 2)[2]
  w2 = all_layer_masks(d2, d1)[2]
  w3 = all_layer_masks(d3, d2)[2]
  i, j, k = np.meshgrid(np.arange(len(w1)), np.arange(len(w2)), np.arange(len(w3)), indexing="ij")
  return w1[i.ravel()], w2[j.ravel()], w3[k.ravel()]


def same_partition(labels_a, labels_b):
  pairs = set(zip(labels_a, labels_b))
  return len(pairs) == len(set(labels_a)) == len(set(labels_b))


@pytest.mark.parametrize("widths", [(3, 3, 3), (4, 3, 2), (2, 4, 3), (5, 4, 4)])
def test_canonical_network_invariant_under_relabelling(widths):
  d1, d2, d3 = widths
  rng = np.random.default_rng(sum(widths))
  for _ in range(40):
    w1 = rng.random((d1, 2)) < 0.6
    w2 = rng.random((d2, d1)) < 0.5
    w3 = rng.random((d3, d2)) < 0.5
    key = canonical_network(w1, w2, w3)
    for _ in range(3):
      perms = rng.permutation(d1), rng.permutation(d2), rng.permutation(d3)
      assert canonical_network(*relabel(w1, w2, w3, *perms)) == key


def test_canonical_network_symmetric_cases():
  # d identical disjoint paths (worst case for the search) and a fully dense network.
  eye = np.eye(4, dtype=bool)
  w1 = np.ones((4, 2), bool)
  key = canonical_network(w1, eye, eye)
  rng = np.random.default_rng(5)
  for _ in range(5):
    perms = rng.permutation(4), rng.permutation(4), rng.permutation(4)
    assert canonical_network(*relabel(w1, eye, eye, *perms)) == key
  dense = np.ones((4, 4), bool)
  assert canonical_network(w1, dense, dense) != key
  assert canonical_network(w1, dense, dense) == canonical_network(w1, dense, dense)


def test_canonical_network_matches_brute_force_on_random_networks():
  # Arbitrary 0/1 masks (empty rows/columns allowed) at widths (4, 4, 3): the key partition
  # must equal the partition by the brute-force minimum over all 4!*4!*3! relabellings.
  rng = np.random.default_rng(7)
  base = [
    (rng.random((4, 2)) < 0.7, rng.random((4, 4)) < p, rng.random((3, 4)) < p)
    for p in (0.3, 0.5, 0.7)
    for _ in range(8)
  ]
  nets = []
  for w1, w2, w3 in base:  # each base network plus a relabelled copy
    nets.append((w1, w2, w3))
    nets.append(relabel(w1, w2, w3, rng.permutation(4), rng.permutation(4), rng.permutation(3)))
  brute = brute_force_keys(*(np.stack(x) for x in zip(*nets)))
  keys = [canonical_network(*net) for net in nets]
  assert same_partition(keys, brute.tolist())
  assert all(keys[2 * i] == keys[2 * i + 1] for i in range(len(base)))


@pytest.mark.parametrize("widths", [(2, 3, 2), (3, 2, 2), (3, 3, 2), (3, 3, 3)])
def test_network_classes_match_brute_force_on_enumerated_triples(widths):
  w1, w2, w3 = enumerated_triples(*widths)
  triples = list(zip(w1, w2, w3))
  keys = [canonical_network(*t) for t in triples]
  brute = brute_force_keys(w1, w2, w3)
  assert same_partition(keys, brute.tolist())
  reps = network_representatives(triples)
  # First occurrence of each brute-force class, in order.
  _, first = np.unique(brute, return_index=True)
  assert reps == sorted(first.tolist())
  assert 0 < len(reps) <= len(triples)
  fraction = 1 - len(reps) / len(triples)
  print(
    f"widths {widths}: {len(triples)} triples, {len(reps)} classes, "
    f"{fraction:.1%} are relabellings of an earlier triple"
  )
  if widths == (3, 3, 2):
    # §D.4: "roughly half" of the enumerated triples are redundant (measured 2996 of 5928).
    assert len(triples) == 8 * 57 * 13 and len(reps) == 2996
  if widths == (3, 3, 3):
    assert len(triples) == 8 * 57 * 57 and len(reps) == 12400


def test_network_representatives_keeps_first_occurrence():
  rng = np.random.default_rng(3)
  a = (rng.random((3, 2)) < 0.7, rng.random((3, 3)) < 0.6, rng.random((2, 3)) < 0.6)
  b = (np.ones((3, 2), bool), np.eye(3, dtype=bool), np.ones((2, 3), bool))
  a2 = relabel(*a, [2, 0, 1], [1, 2, 0], [1, 0])
  assert network_representatives([a, b, a2, b, a]) == [0, 1]
  assert network_representatives([]) == []
