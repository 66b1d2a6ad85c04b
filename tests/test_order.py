"""Data orders: both methods give exact permutations; Feistel orders look random."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from cubist import data, order


@pytest.mark.parametrize("num_points", [data.NUM_POINTS, 2560, 1000, 256])
def test_feistel_is_a_bijection(num_points):
  key = jax.random.bits(jax.random.PRNGKey(3), (order.FEISTEL_ROUNDS,), jnp.uint32)
  image = np.asarray(order.feistel_permute(key, jnp.arange(num_points), num_points))
  assert np.array_equal(np.sort(image), np.arange(num_points))


def test_feistel_domain_of_the_spiral_and_bad_sizes():
  assert order.feistel_domain(data.NUM_POINTS) == (134, 373)
  with pytest.raises(ValueError, match="order='sort'"):
    order.feistel_domain(2557)  # prime


@pytest.mark.parametrize("method", order.ORDER_METHODS)
def test_epoch_batches_drop_last_and_are_disjoint(method):
  batches = np.asarray(order.epoch_batches(jax.random.PRNGKey(0), data.NUM_POINTS, 128, method))
  assert batches.shape == (390, 128)
  assert len(np.unique(batches)) == 390 * 128
  assert batches.min() >= 0 and batches.max() < data.NUM_POINTS


@pytest.mark.parametrize("method", order.ORDER_METHODS)
def test_orders_depend_only_on_key_and_epoch(method):
  key = jax.random.PRNGKey(7)
  first = order.batch_order(key, 2, 1280, 128, method)
  again = order.batch_order(key, 2, 1280, 128, method)
  other = order.batch_order(jax.random.PRNGKey(8), 2, 1280, 128, method)
  assert np.array_equal(first, again)
  assert not np.array_equal(first[0], first[1])
  assert not np.array_equal(first, other)


def test_feistel_positions_are_uniform_across_keys():
  """Where does each index land? Over many keys, every batch is equally likely.

  A chi-square test on the batch that index i falls into, for several i,
  over 4000 keys and 20 batches (19 degrees of freedom: the 99.9% quantile is
  43.8). A weak or structured permutation (e.g. an affine map) fails this.
  """
  num_points, batch, keys = 2560, 128, 4000
  round_keys = jax.random.bits(jax.random.PRNGKey(11), (keys, order.FEISTEL_ROUNDS), jnp.uint32)
  images = np.asarray(
    jax.vmap(lambda k: order.feistel_permute(k, jnp.arange(num_points), num_points))(round_keys)
  )
  positions = np.argsort(images, axis=1)  # position of each index
  for index in (0, 1, 2, 640, 2559):
    counts = np.bincount(positions[:, index] // batch, minlength=num_points // batch)
    expected = keys / (num_points // batch)
    chi2 = np.sum((counts - expected) ** 2 / expected)
    assert chi2 < 43.8, (index, chi2)
  # Neighbouring indices must not travel together: the chance that 0 and 1
  # share a batch is (batch - 1) / (num_points - 1) ~ 5%.
  together = np.mean(positions[:, 0] // batch == positions[:, 1] // batch)
  assert abs(together - 127 / 2559) < 0.02


# --- order="sort": exactly uniform permutations ---------------------------


@pytest.fixture(scope="module")
def run_key():
  return jax.random.key(20240707)


@pytest.fixture(scope="module")
def sort_order(run_key):
  return order.batch_order(run_key, 3, data.NUM_POINTS, data.BATCH_SIZE, "sort")


def test_epoch_batches_shape_and_partition(sort_order):
  assert (
    sort_order.shape == (3, data.BATCHES_PER_EPOCH, data.BATCH_SIZE)
    and sort_order.dtype == np.int32
  )
  for e in range(3):
    flat = sort_order[e].ravel()
    assert flat.min() >= 0 and flat.max() < data.NUM_POINTS
    assert np.unique(flat).size == flat.size == 390 * 128  # rows pairwise disjoint, no repeats
  dropped = [np.setdiff1d(np.arange(data.NUM_POINTS), sort_order[e].ravel()) for e in range(3)]
  assert all(d.size == data.NUM_POINTS - 390 * 128 == 62 for d in dropped)
  assert not np.array_equal(dropped[0], dropped[1])


def test_batch_order_consistent_and_deterministic(run_key, sort_order):
  for e in range(3):
    again = np.asarray(order.sorted_epoch_batches(order.epoch_key(run_key, e)))
    np.testing.assert_array_equal(sort_order[e], again)
  assert not np.array_equal(sort_order[0], sort_order[1])
  other = np.asarray(order.sorted_epoch_batches(order.epoch_key(jax.random.key(1), 0)))
  assert not np.array_equal(sort_order[0], other)
  # A traced epoch index (as inside lax.scan) gives the same key as a Python int.
  traced = jax.jit(lambda k, e: order.sorted_epoch_batches(order.epoch_key(k, e)))(
    run_key, jnp.int32(2)
  )
  np.testing.assert_array_equal(sort_order[2], np.asarray(traced))


def test_epoch_batches_vmap_invariant():
  """A run's batches do not depend on which other runs share its vmapped chunk."""
  keys = jax.random.split(jax.random.key(3), 3)
  together = np.asarray(jax.vmap(order.sorted_epoch_batches)(keys))
  for i in range(3):
    np.testing.assert_array_equal(together[i], np.asarray(order.sorted_epoch_batches(keys[i])))


def test_epoch_batches_accepts_raw_keys_and_small_sizes():
  b = np.asarray(order.sorted_epoch_batches(jax.random.PRNGKey(0), num_points=1000, batch_size=64))
  assert b.shape == (15, 64) and np.unique(b).size == 15 * 64 and b.max() < 1000


def _radix_rounds_reference(key, n):
  """numpy mirror of order.uniform_permutation: rounds of *stable* argsort by fresh fields."""
  index_bits = max(1, (n - 1).bit_length())
  field_bits = 32 - index_bits
  rounds = -(-64 // field_bits)
  per_word = 32 // field_bits
  words = np.asarray(jax.random.bits(key, (-(-rounds // per_word), n), jnp.uint32)).astype(np.int64)
  perm = np.arange(n)
  for r in range(rounds):
    shift = 32 - field_bits * (r % per_word + 1)
    field = (words[r // per_word] >> shift) & ((1 << field_bits) - 1)  # indexed by position
    perm = perm[np.argsort(field, kind="stable")]
  return perm


@pytest.mark.parametrize("n", [5, 1000, data.NUM_POINTS])
def test_permutation_is_stable_radix_sort_by_random_fields(n):
  key = jax.random.key(n)
  np.testing.assert_array_equal(
    np.asarray(order.uniform_permutation(key, n)), _radix_rounds_reference(key, n)
  )


def test_permutation_is_uniform_on_small_n():
  """Chi-square over all 4! = 24 permutations of 4 items, 24,000 draws."""
  keys = jax.random.split(jax.random.key(7), 24_000)
  perms = np.asarray(jax.jit(jax.vmap(lambda k: order.uniform_permutation(k, 4)))(keys))
  codes = perms @ np.array([64, 16, 4, 1])
  _, counts = np.unique(codes, return_counts=True)
  assert counts.size == 24
  chi2 = float(((counts - 1000.0) ** 2 / 1000.0).sum())
  assert chi2 < 49.7  # 23 degrees of freedom, p = 0.001


def test_feistel_orders_are_pinned():
  """Stores resume by exp_id, so the order of a (key, epoch) must never change
  silently: a change to the Feistel network must come with a new data_order name."""
  import hashlib

  batches = np.asarray(
    order.epoch_batches(order.epoch_key(jax.random.PRNGKey(0), 3), data.NUM_POINTS, 128, "feistel")
  )
  assert batches[0, :6].tolist() == [3398, 38388, 2309, 47342, 23278, 39800]
  assert batches[389, -3:].tolist() == [27004, 23548, 19234]
  assert hashlib.sha1(batches.tobytes()).hexdigest() == "8313514838b9ebc170f694a2a4cacc8c5063e94b"


def test_feistel_has_no_structure_along_the_domain_split():
  """Indices one apart, or one row of the 134 x 373 split apart, must not
  travel together, and an index's position in consecutive epochs must be
  independent. 800 keys on the real data size (the tolerances are > 5 sigma)."""
  keys = 800
  num_points, batch = data.NUM_POINTS, 128
  run_keys = jax.vmap(jax.random.PRNGKey)(jnp.arange(keys))

  def positions(epoch):
    round_keys = jax.vmap(
      lambda k: order.epoch_state(order.epoch_key(k, epoch), num_points, batch, "feistel")
    )(run_keys)
    images = jax.vmap(lambda k: order.feistel_permute(k, jnp.arange(num_points), num_points))(
      round_keys
    )
    return np.asarray(jnp.argsort(images, axis=1))

  first, second = positions(0), positions(1)
  chance = (batch - 1) / (num_points - 1)
  for offset in (1, 2, 133, 134, 135, 373, 374):
    together = np.mean(first[:, 0] // batch == first[:, offset] // batch)
    assert abs(together - chance) < 0.01, (offset, together)
  correlation = np.corrcoef(first[:, 7], second[:, 7])[0, 1]
  assert abs(correlation) < 0.2, correlation
  # Every index is equally likely to be among the 62 dropped points (~0.124%).
  dropped = np.mean(first >= (num_points // batch) * batch, axis=0)
  assert abs(dropped.mean() - 62 / num_points) < 1e-5
