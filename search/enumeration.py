"""Per-layer mask enumeration of the combinatorial search, in reference order (METHODS §D.3-D.5).

Phase 2 of the search trains every triple of unstructured masks for W1 (d1x2),
W2 (d2xd1) and W3 (d3xd2) inside the minimal widths found by phase 1. Each
layer's masks are identified, as in the reference sweeps, by `(nnz,
mask_config)` where `mask_config` is the 0-based position in the list that the
reference recursion V(C, R, n) produces. The released 99.5% sweeps keep only
the *first* k W2 masks per nnz, so the position is not a cosmetic label: only
the exact reference order reproduces the authors' search spaces and lets our
results be joined with theirs config by config. This module reproduces that
order exactly.

Masks use PyTorch orientation: a layer mask has shape (rows = output units,
cols = input units). A row r is read as the integer bin(r) = sum_j r[j] 2^(C-1-j)
(column 0 most significant).

The reference order (§D.3), restated:

1. Row budgets: non-increasing sequences b_1 >= ... >= b_R, each in 1..C,
   summing to n. b_1 runs *ascending* from ceil(n/R) to min(C, n-(R-1)); each
   b_1 is followed by every sequence for (R-1 rows, cap b_1, total n-b_1),
   recursively, in the same way.
2. Row candidates for a budget b: the rows with b ones in itertools.combinations
   order of their column-index tuples. For a fixed popcount this is exactly
   *descending* bin() order.
3. Within one budget sequence the matrix is built bottom-up: the list for rows
   r..R loops over the matrices B of rows r+1..R (outer) and the candidates x for
   row r (inner), keeping x only if b_r != b_{r+1} or bin(x) >= bin(B[0]).
   The top row does the same and also rejects a matrix with an empty column.
   Hence, inside one budget sequence, masks are ordered lexicographically by
   (candidate index of row R, of row R-1, ..., of row 1): the *bottom* row is
   the most significant digit.
4. The budget sequences are concatenated in the order of step 1.

The result holds exactly one mask per row-permutation orbit of valid matrices
(no empty row, no empty column): rows sorted by budget descending, then by
bin() descending (identical rows allowed). Column permutations are not
quotiented (§D.4).

Implementation: `layer_masks` runs the same recursion, vectorised with numpy
over whole candidate lists, and prunes partial matrices early (a partial matrix
whose uncovered columns outnumber the budget of the rows still to be placed is
dropped; the top row is generated directly as a superset of the uncovered
columns). Pruning only removes entries that the reference would reject later,
and every step is a stable filter of the reference's (outer, inner) product, so
the order is unchanged. The tests compare it with a literal transcription.
Results are cached per (rows, cols, nnz) and returned read-only.

`count_layer_masks` counts orbits without materialising them: an orbit is a
multiset of R nonzero rows; inclusion-exclusion over the set of columns forced
empty, with a generating-function DP over row popcounts, gives an exact Python
int for any shape (16x16 included).

Canonical forms and network-level symmetry (relabelling classes) are in
search/symmetry.py.
"""

from __future__ import annotations

import itertools
import math
from functools import lru_cache

import numpy as np

__all__ = [
  "nnz_range",
  "layer_masks",
  "count_layer_masks",
  "all_layer_masks",
  "mask_from_index",
  "index_of_mask",
]

# Enumeration works on rows stored as int64 bin() values; the top-row superset
# search packs (segment, value) pairs into one int64, which needs 2*C+1 bits.
_MAX_ENUM_COLS = 30
# Largest (partial matrices x candidates) product materialised at once.
_JOIN_CHUNK = 1 << 22
# Largest number of masks layer_masks will materialise for one (rows, cols, nnz).
_MAX_ENUM_MASKS = 20_000_000


# ---------------------------------------------------------------------------
# Validation helpers


def _check_shape(rows, cols) -> tuple[int, int]:
  for name, value in (("rows", rows), ("cols", cols)):
    if isinstance(value, bool) or int(value) != value or value < 1:
      raise ValueError(f"{name}={value!r} must be a positive integer")
  return int(rows), int(cols)


def _check_nnz(rows: int, cols: int, nnz) -> int:
  if isinstance(nnz, bool) or int(nnz) != nnz or not max(rows, cols) <= nnz <= rows * cols:
    raise ValueError(
      f"nnz={nnz!r} is outside {max(rows, cols)}..{rows * cols} for a {rows}x{cols} layer"
    )
  return int(nnz)


def as_bool_matrix(mask, name: str = "mask") -> np.ndarray:
  array = np.asarray(mask)
  if array.ndim != 2 or 0 in array.shape:
    raise ValueError(f"{name} must be a non-empty 2-D (rows, cols) array, got shape {array.shape}")
  if array.dtype != bool:
    if not np.isin(array, (0, 1)).all():
      raise ValueError(f"{name} must contain only 0/1 entries")
    array = array.astype(bool)
  return array


def nnz_range(rows: int, cols: int) -> range:
  """Valid per-layer nnz levels: max(rows, cols) .. rows*cols inclusive (§D.3)."""
  rows, cols = _check_shape(rows, cols)
  return range(max(rows, cols), rows * cols + 1)


# ---------------------------------------------------------------------------
# Enumeration in reference order


def _budget_sequences(rows: int, cap: int, total: int) -> list[tuple[int, ...]]:
  """Non-increasing row budgets in reference order (§D.3 step 1)."""
  if rows == 1:
    return [(total,)] if 1 <= total <= cap else []
  out = []
  for first in range(-(-total // rows), min(cap, total - (rows - 1)) + 1):
    for rest in _budget_sequences(rows - 1, first, total - first):
      out.append((first,) + rest)
  return out


@lru_cache(maxsize=None)
def _candidates(cols: int, budget: int) -> np.ndarray:
  """bin() values of the rows with `budget` ones, in itertools.combinations order."""
  values = [
    sum(1 << (cols - 1 - j) for j in combo) for combo in itertools.combinations(range(cols), budget)
  ]
  out = np.asarray(values, np.int64)
  out.flags.writeable = False
  return out


@lru_cache(maxsize=1 << 16)
def _supersets(required: int, budget: int, cols: int) -> np.ndarray:
  """Rows with `budget` ones containing every bit of `required`, in descending bin() order.

  Lexicographic combinations of the free columns, OR-ed with `required`, are
  in descending bin() order, which is the reference candidate order.
  """
  free = [j for j in range(cols) if not required >> (cols - 1 - j) & 1]
  need = budget - bin(required).count("1")
  if need < 0:
    return np.zeros(0, np.int64)
  values = [
    required | sum(1 << (cols - 1 - j) for j in combo)
    for combo in itertools.combinations(free, need)
  ]
  return np.asarray(values, np.int64)


def _popcount(values: np.ndarray) -> np.ndarray:
  return np.bitwise_count(values).astype(np.int64)


def _join_row(partial, cover, cand, equal_budget, budget_above, full):
  """Prepend one row: outer loop over `partial` matrices, inner loop over `cand`.

  Keeps x iff (not equal_budget or bin(x) >= bin(B[0])) and the columns still
  uncovered can be covered by the rows above (total budget `budget_above`).
  """
  n_cand = len(cand)
  step = max(1, _JOIN_CHUNK // max(n_cand, 1))
  pieces, covers = [], []
  for start in range(0, len(partial), step):
    block = partial[start : start + step]
    block_cover = cover[start : start + step]
    b_idx = np.repeat(np.arange(len(block)), n_cand)
    x = np.tile(cand, len(block))
    new_cover = block_cover[b_idx] | x
    keep = _popcount(full & ~new_cover) <= budget_above
    if equal_budget:
      keep &= x >= block[b_idx, 0]
    b_idx = b_idx[keep]
    pieces.append(np.column_stack([x[keep], block[b_idx]]))
    covers.append(new_cover[keep])
  if not pieces:
    return partial[:0], cover[:0]
  return np.concatenate(pieces), np.concatenate(covers)


def _top_row(partial, cover, budget, equal_budget, cols, full):
  """Prepend the top row: for each B (outer), every x (inner) covering B's empty columns."""
  missing = full & ~cover
  uniq, inv = np.unique(missing, return_inverse=True)
  inv = inv.reshape(-1)
  sets = [_supersets(int(u), budget, cols) for u in uniq]
  lengths = np.asarray([len(s) for s in sets], np.int64)
  offsets = np.concatenate([[0], np.cumsum(lengths)[:-1]]).astype(np.int64)
  flat = np.concatenate(sets) if sets else np.zeros(0, np.int64)
  counts = lengths[inv]
  if equal_budget:
    # Each superset list is in descending bin() order, so bin(x) >= bin(B[0])
    # is a prefix. Search all segments at once with (segment, -value) keys.
    shift = np.int64(1) << np.int64(cols + 1)
    seg = np.repeat(np.arange(len(sets), dtype=np.int64), lengths)
    keys = seg * shift + ((np.int64(1) << cols) - flat)
    probe = inv.astype(np.int64) * shift + ((np.int64(1) << cols) - partial[:, 0])
    counts = np.searchsorted(keys, probe, side="right") - offsets[inv]
  total = int(counts.sum())
  b_idx = np.repeat(np.arange(len(partial)), counts)
  within = np.arange(total, dtype=np.int64) - np.repeat(np.cumsum(counts) - counts, counts)
  x = flat[offsets[inv][b_idx] + within]
  return np.column_stack([x, partial[b_idx]])


def _enumerate_budget(budgets: tuple[int, ...], cols: int) -> np.ndarray:
  rows = len(budgets)
  full = np.int64((1 << cols) - 1)
  if rows == 1:
    return _candidates(cols, budgets[0])[:, None].copy()
  partial = _candidates(cols, budgets[-1])[:, None].copy()
  cover = partial[:, 0].copy()
  for r in range(rows - 2, 0, -1):
    partial, cover = _join_row(
      partial,
      cover,
      _candidates(cols, budgets[r]),
      budgets[r] == budgets[r + 1],
      sum(budgets[:r]),
      full,
    )
    if not len(partial):
      return np.zeros((0, rows), np.int64)
  return _top_row(partial, cover, budgets[0], budgets[0] == budgets[1], cols, full)


@lru_cache(maxsize=None)
def _layer_bins(rows: int, cols: int, nnz: int) -> np.ndarray:
  """(count, rows) int64 bin() values of every row, top row first, in reference order."""
  if cols > _MAX_ENUM_COLS:
    raise ValueError(f"cannot materialise masks with cols={cols} > {_MAX_ENUM_COLS}")
  count = _count(rows, cols, nnz)
  if count > _MAX_ENUM_MASKS:
    raise ValueError(
      f"{count} masks at {rows}x{cols}, nnz={nnz} are too many to materialise "
      f"(limit {_MAX_ENUM_MASKS}); use count_layer_masks"
    )
  blocks = [_enumerate_budget(b, cols) for b in _budget_sequences(rows, cols, nnz)]
  out = np.concatenate(blocks) if blocks else np.zeros((0, rows), np.int64)
  out.flags.writeable = False
  return out


def _bins_to_masks(bins: np.ndarray, cols: int) -> np.ndarray:
  shifts = np.arange(cols - 1, -1, -1, dtype=np.int64)
  return ((bins[..., None] >> shifts) & 1).astype(bool)


@lru_cache(maxsize=None)
def _layer_masks_cached(rows: int, cols: int, nnz: int) -> np.ndarray:
  out = _bins_to_masks(_layer_bins(rows, cols, nnz), cols)
  out.flags.writeable = False
  return out


def layer_masks(rows: int, cols: int, nnz: int) -> np.ndarray:
  """Every valid (rows x cols) mask with `nnz` ones, one per row-permutation orbit.

  Returns a read-only bool array of shape (count, rows, cols) in the reference
  order of §D.3: entry i is the mask with `mask_config = i`. Cached per
  (rows, cols, nnz); copy it before modifying.
  """
  rows, cols = _check_shape(rows, cols)
  nnz = _check_nnz(rows, cols, nnz)
  return _layer_masks_cached(rows, cols, nnz)


def all_layer_masks(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Every valid mask of one layer over all nnz levels: (nnz, mask_config, masks).

  Concatenated in ascending nnz, reference order within each level. Arrays of
  length N (int64, int64) and a bool (N, rows, cols) array.
  """
  levels = nnz_range(rows, cols)
  blocks = [layer_masks(rows, cols, n) for n in levels]
  nnz = np.concatenate([np.full(len(b), n, np.int64) for n, b in zip(levels, blocks)])
  index = np.concatenate([np.arange(len(b), dtype=np.int64) for b in blocks])
  return nnz, index, np.concatenate(blocks)


# ---------------------------------------------------------------------------
# Counting without materialising


@lru_cache(maxsize=None)
def _multiset_table(rows: int, cols: int) -> tuple[tuple[int, ...], ...]:
  """table[s][n]: multisets of `rows` nonzero rows supported on s given columns, total weight n.

  Generating function prod_k (1 - y t^k)^(-C(s,k)); coefficient of y^rows t^n.
  A multiset of t rows drawn from m row types of weight k: C(m + t - 1, t) ways.
  """
  max_n = rows * cols
  table = []
  for s in range(cols + 1):
    dp = np.zeros((rows + 1, max_n + 1), dtype=object)
    dp[:] = 0
    dp[0, 0] = 1
    for k in range(1, s + 1):
      m = math.comb(s, k)
      new = dp.copy()
      for t in range(1, rows + 1):
        if k * t > max_n:
          break
        new[t:, k * t :] += dp[: rows + 1 - t, : max_n + 1 - k * t] * math.comb(m + t - 1, t)
      dp = new
    table.append(tuple(int(v) for v in dp[rows]))
  return tuple(table)


@lru_cache(maxsize=None)
def _count(rows: int, cols: int, nnz: int) -> int:
  table = _multiset_table(rows, cols)
  # Inclusion-exclusion over the set of columns forced to be empty.
  total = sum((-1) ** j * math.comb(cols, j) * table[cols - j][nnz] for j in range(cols + 1))
  return int(total)


def count_layer_masks(rows: int, cols: int, nnz: int) -> int:
  """Number of masks `layer_masks(rows, cols, nnz)` returns, without materialising them.

  Counts row-permutation orbits of rows x cols 0/1 matrices with nnz ones and no
  empty row or column (an orbit is a multiset of nonzero rows), by
  inclusion-exclusion over empty columns. Exact Python int for any shape.
  """
  rows, cols = _check_shape(rows, cols)
  nnz = _check_nnz(rows, cols, nnz)
  return _count(rows, cols, nnz)


# ---------------------------------------------------------------------------
# Index <-> mask


def mask_from_index(rows: int, cols: int, nnz: int, index: int) -> np.ndarray:
  """The mask with `mask_config = index` at (rows, cols, nnz): a fresh bool (rows, cols) array."""
  rows, cols = _check_shape(rows, cols)
  nnz = _check_nnz(rows, cols, nnz)
  count = _count(rows, cols, nnz)
  if isinstance(index, bool) or int(index) != index or not 0 <= index < count:
    raise ValueError(
      f"index={index!r} is outside 0..{count - 1} for a {rows}x{cols} layer at nnz={nnz}"
    )
  return _bins_to_masks(_layer_bins(rows, cols, nnz)[int(index)], cols)


def _row_bins(mask: np.ndarray) -> list[int]:
  cols = mask.shape[1]
  return [sum(1 << (cols - 1 - j) for j in np.flatnonzero(row)) for row in mask]


def index_of_mask(mask) -> int:
  """`mask_config` of a valid canonical mask (inverse of `mask_from_index`).

  Raises ValueError if the mask has an empty row or column, or is not the
  orbit representative the enumeration produces (see `canonical_layer`).
  """
  mask = as_bool_matrix(mask)
  rows, cols = mask.shape
  if not mask.any(axis=1).all() or not mask.any(axis=0).all():
    raise ValueError("mask has an empty row or column, so it is not in the enumeration")
  keys = list(zip(mask.sum(axis=1).tolist(), _row_bins(mask)))
  if any(a < b for a, b in zip(keys, keys[1:])):
    raise ValueError(
      "mask is not canonical: rows must be sorted by nnz, then bin(), descending "
      "(use canonical_layer)"
    )
  bins = _layer_bins(rows, cols, int(mask.sum()))
  target = np.asarray([k[1] for k in keys], np.int64)
  hits = np.flatnonzero((bins == target).all(axis=1))
  if len(hits) != 1:  # cannot happen for a valid canonical mask
    raise ValueError("mask not found in the enumeration")
  return int(hits[0])
