"""Canonical forms and network-level symmetry of the search's masks (METHODS §D.4).

Per layer, `canonical_layer` is the row-permutation orbit representative the
enumeration (search/enumeration.py) writes. For a network, relabelling the
hidden units of layer l permutes the rows of W_l and the columns of W_{l+1};
the per-layer canonical forms cover every network class but not uniquely.
`canonical_network` gives a true canonical key (equal iff relabellings of
each other, under every network-level relabelling pi1, pi2, pi3), and
`network_representatives` keeps the first triple of each class: the "option
to train one representative per class". Under a fixed initialisation
relabelling is not a symmetry (§D.4), so use it for random-init searches only.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Sequence

import numpy as np

from search.enumeration import as_bool_matrix

__all__ = ["canonical_layer", "canonical_network", "network_representatives"]

# Largest number of layer-2 orderings canonical_network will try for one network.
_MAX_NETWORK_ORDERINGS = 2_000_000


def canonical_layer(mask) -> np.ndarray:
  """Row-permutation orbit representative, as the enumeration writes it.

  Rows sorted by number of ones descending, then by bin() (column 0 most
  significant) descending. Works for any 0/1 matrix; for a valid one the
  result is `layer_masks(rows, cols, nnz)[index_of_mask(result)]`.
  """
  mask = as_bool_matrix(mask)
  # lexsort: last key is primary. Negate for descending order.
  keys = [-mask[:, j].astype(np.int64) for j in range(mask.shape[1] - 1, -1, -1)]
  keys.append(-mask.sum(axis=1))
  return mask[np.lexsort(keys)].copy()


def _relabel(signatures: list) -> list[int]:
  """Replace each signature by its rank among the distinct signatures (an invariant)."""
  ranks = {s: i for i, s in enumerate(sorted(set(signatures)))}
  return [ranks[s] for s in signatures]


def _layer2_colours(type1, w2, w3) -> list[int]:
  """Colour refinement (1-WL) on the layered network; returns the layer-2 colours.

  Colours are computed per layer from sorted signatures, so they are invariant
  values: a relabelling maps each unit to a unit of equal colour.
  """
  d3, d2 = w3.shape
  in2 = [np.flatnonzero(w2[j]).tolist() for j in range(d2)]
  out1 = [np.flatnonzero(w2[:, i]).tolist() for i in range(w2.shape[1])]
  out2 = [np.flatnonzero(w3[:, j]).tolist() for j in range(d2)]
  in3 = [np.flatnonzero(w3[m]).tolist() for m in range(d3)]
  c1 = _relabel(list(type1))
  c2 = [0] * d2
  c3 = [0] * d3
  sizes = None
  while True:
    n1 = _relabel([(c1[i], tuple(sorted(c2[j] for j in out1[i]))) for i in range(len(c1))])
    n2 = _relabel(
      [
        (c2[j], tuple(sorted(c1[i] for i in in2[j])), tuple(sorted(c3[m] for m in out2[j])))
        for j in range(d2)
      ]
    )
    n3 = _relabel([(c3[m], tuple(sorted(c2[j] for j in in3[m]))) for m in range(d3)])
    new_sizes = (len(set(n1)), len(set(n2)), len(set(n3)))
    c1, c2, c3 = n1, n2, n3
    if new_sizes == sizes:
      return c2
    sizes = new_sizes


def _multiset_permutations(items: list) -> Iterable[tuple]:
  """Distinct orderings of a multiset, each once."""
  items = sorted(items)
  n = len(items)
  while True:
    yield tuple(items)
    i = n - 2
    while i >= 0 and items[i] >= items[i + 1]:
      i -= 1
    if i < 0:
      return
    j = n - 1
    while items[j] <= items[i]:
      j -= 1
    items[i], items[j] = items[j], items[i]
    items[i + 1 :] = reversed(items[i + 1 :])


def _layer2_orderings(w2, w3, colours) -> np.ndarray:
  """Candidate orderings pi2 of layer 2: colour-sorted, twins (equal in- and out-sets) merged."""
  d2 = w2.shape[0]
  twin_sig = [(w2[j].tobytes(), w3[:, j].tobytes()) for j in range(d2)]
  per_colour = []
  total = 1
  for colour in sorted(set(colours)):
    members = [j for j in range(d2) if colours[j] == colour]
    labels = _relabel([twin_sig[j] for j in members])
    by_label = {}
    for j, lab in zip(members, labels):
      by_label.setdefault(lab, []).append(j)
    counts = [len(v) for v in by_label.values()]
    total *= math.factorial(len(members)) // math.prod(math.factorial(c) for c in counts)
    if total > _MAX_NETWORK_ORDERINGS:
      raise ValueError(
        f"network too symmetric for the exact canonical form "
        f"(> {_MAX_NETWORK_ORDERINGS} layer-2 orderings)"
      )
    options = []
    for seq in _multiset_permutations(labels):
      pools = {lab: iter(units) for lab, units in by_label.items()}
      options.append([next(pools[lab]) for lab in seq])
    per_colour.append(options)
  return np.asarray([sum(combo, []) for combo in itertools.product(*per_colour)], np.int64)


def canonical_network(w1_mask, w2_mask, w3_mask) -> tuple:
  """Exact canonical key of a masked network under hidden-unit relabelling (§D.4).

  Masks are the top-left blocks: W1 (d1, 2), W2 (d2, d1), W3 (d3, d2); the
  classifier is dense over d3 and biases are kept on all d_l units, so both
  are invariant. Relabelling (pi1, pi2, pi3) maps
  W1 -> P1 W1, W2 -> P2 W2 P1^T, W3 -> P3 W3 P2^T. Two networks get the same
  key iff one is such a relabelling of the other.

  Method: fix an ordering pi2 of layer 2. Every layer-1 unit is then fully
  described by (its W1 row, its W2 column) and every layer-3 unit by its W3
  row, so the best pi1 and pi3 just sort these descriptors. The key is the
  minimum over pi2 of (sorted layer-1 descriptors, sorted layer-3
  descriptors), which determines the network up to relabelling. pi2 only
  ranges over orderings that sort layer 2 by an invariant colour refinement
  (1-WL) colour, with twin units (equal W2 row and W3 column) merged.

  Cost: one colour refinement (O(d^3) in Python, tens of microseconds) plus
  prod over colour classes of the number of distinct twin-orderings, each
  scored in vectorised numpy. Typically 1-10 orderings; the worst case is
  d2! (e.g. d identical disjoint paths): 40320 orderings at d = 8, ~0.25 s. Raises
  ValueError beyond 2,000,000 orderings.
  """
  w1 = as_bool_matrix(w1_mask, "w1_mask")
  w2 = as_bool_matrix(w2_mask, "w2_mask")
  w3 = as_bool_matrix(w3_mask, "w3_mask")
  d1, d2, d3 = w1.shape[0], w2.shape[0], w3.shape[0]
  if w1.shape[1] != 2 or w2.shape[1] != d1 or w3.shape[1] != d2:
    raise ValueError(
      f"mask shapes {w1.shape}, {w2.shape}, {w3.shape} are not (d1,2), (d2,d1), (d3,d2)"
    )
  if d2 > 60:
    raise ValueError(f"d2={d2} is too wide for the canonical encoding")
  type1 = (w1[:, 0].astype(np.int64) << 1) | w1[:, 1].astype(np.int64)
  orders = _layer2_orderings(w2, w3, _layer2_colours(type1.tolist(), w2, w3))
  weights = np.int64(1) << np.arange(d2 - 1, -1, -1, dtype=np.int64)
  w2p = w2[orders].astype(np.int64)  # (K, d2, d1)
  desc1 = np.einsum("kji,j->ki", w2p, weights) + (type1 << d2)[None]  # (K, d1)
  desc3 = np.einsum("mkj,j->km", w3[:, orders].astype(np.int64), weights)  # (K, d3)
  keys = np.concatenate([np.sort(desc1, axis=1), np.sort(desc3, axis=1)], axis=1)
  best = keys[np.lexsort(keys.T[::-1])[0]] if len(keys) > 1 else keys[0]
  return (d1, d2, d3) + tuple(int(v) for v in best)


def network_representatives(triples: Sequence) -> list[int]:
  """Indices of one triple per relabelling class: the first occurrence in the given order.

  `triples` is a sequence of (w1_mask, w2_mask, w3_mask). Training only these
  is the "one representative per class" option of §D.4 (random init only).
  """
  seen = set()
  out = []
  for i, (w1, w2, w3) in enumerate(triples):
    key = canonical_network(w1, w2, w3)
    if key not in seen:
      seen.add(key)
      out.append(i)
  return out
