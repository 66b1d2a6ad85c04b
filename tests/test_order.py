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
  images = np.asarray(jax.vmap(lambda k: order.feistel_permute(k, jnp.arange(num_points),
                                                               num_points))(round_keys))
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
