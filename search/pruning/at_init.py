"""Pruning at initialisation: SNIP, GraSP, SynFlow, Iter-SNIP, FORCE, ProsPr (METHODS §E.3-E.8).

Each method scores the weights of all four matrices of ONE network together
(biases are never scored), keeps the best ones, and hands the trainer the
masked initial weights and the new bool masks (biases by the rule of §B.3,
ProsPr by its own buggy variant, §E.8). The trainer vmaps `at_init` over a
leading experiment axis, so everything here is pure, jittable and vmappable:
counts are traced int32 read from `hyper.counts` (computed on the host in
float64 by `host_counts`, exactly as the reference's Python expressions,
§E.0 "Float arithmetic", §E.10), and no Python control flow touches a traced
value.

Layout of the module:
- score functions (`snip_scores`, `grasp_scores`, `synflow_scores`,
  `iter_snip_scores`, `force_scores`, `prospr_scores`): pure functions of
  explicit params and batches, so tests can feed the PyTorch oracle
  (third_party/torch_pruning_reference.py) the very same inputs;
- selection functions (`snip_select`, `grasp_select`, `strict_select`,
  `synflow_masks`, `iterative_masks`): scores + counts -> flat keep vector, in
  `count_mode` "reference" (the reference's comparisons, off-by-ones and ties)
  or "exact" (exactly the count, ties to the lower index, select.keep_top_k);
- batch drawing (`shuffled_prefix`, `grasp_sample_indices`): the first
  batch(es) of a fresh shuffled DataLoader, drawn from the method's key;
- the six `Method`s in `METHODS`.

Shapes (one experiment, width w): params/masks are `Params` (cubist.mlp),
weights (out, in); x (P, 2) float32 and y (P,) float32 are the whole data set;
flat vectors (scores, keep) have length N_arr = 2w^2 + 3w of the (possibly
padded) arrays, concatenating W1..W4 row-major (select.flat_weights).

Padding (§I): a network of width w may sit zero-padded in wider arrays with
its starting mask False outside. The starting weight mask is the set of
`valid` entries: invalid entries score -inf, are never kept, and never shift
a reference threshold, which is always read as "the k-th largest valid score"
(an ascending index P among N valid scores is the (N - P)-th largest). The
count formulas use N = hyper.num_weights, the run's own weight count.
Xavier re-initialisation takes its fans from the starting mask's rows and
columns, i.e. from the run's width, not the padded one.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from cubist import masks as mask_ops
from cubist import order, portable
from cubist.layouts import bce_with_logits
from cubist.method import COUNT_MODES, Hyper, Method, MethodStatic
from cubist.mlp import Layer, Params, apply
from search.pruning import counts, select

GRASP_SAMPLES_PER_CLASS = 25  # §E.4: paper (1) uses 25 (the original CIFAR configs 10)
GRASP_TEMPERATURE = 200.0  # §E.4: T
GRASP_SCAN_CHUNK = 256  # positions of the data order examined per while-loop step
SYNFLOW_ITERATIONS = 100  # §E.5
ITERATIVE_STEPS = 10  # §E.6: Iter-SNIP and FORCE, mode "exp"
PROSPR_INNER_STEPS = 3  # §E.8
PROSPR_MOMENTUM = 0.9  # §E.8; inner weight decay 0 (§H 9)


# --------------------------------------------------------------------------- helpers


def _check_static(static: MethodStatic) -> None:
  """One-line ValueError for an unknown count mode (a trace-time check)."""
  if static.count_mode not in COUNT_MODES:
    raise ValueError(f"count_mode={static.count_mode!r} is unknown; known: {COUNT_MODES}")


def _weights(params: Params) -> tuple:
  """The four weight matrices."""
  return tuple(layer.weight for layer in params)


def _with_weights(params: Params, weights) -> Params:
  """`params` with its four weight matrices replaced."""
  return tuple(Layer(weight, layer.bias) for weight, layer in zip(weights, params))


def _mean_loss(params: Params, batch_x: jax.Array, batch_y: jax.Array) -> jax.Array:
  """Mean BCE-with-logits of a batch, (B, 2) and (B,) -> scalar (§C.1)."""
  return portable.mean(bce_with_logits(apply(params, batch_x), batch_y), 0)


def _masked_scores(scores: jax.Array, valid: jax.Array) -> jax.Array:
  """Scores with the invalid (padded or pre-masked) entries at -inf."""
  return jnp.where(valid, scores, -jnp.inf)


def _install(params: Params, masks: Params, keep: jax.Array) -> tuple[Params, Params]:
  """(masked params, new masks) from a flat keep vector; biases by the rule (§B.3).

  Bias masks are the rule AND the starting bias masks, so masks only shrink
  (for a starting mask that follows the rule this AND changes nothing).
  """
  rule = select.masks_from_flat(keep, params)
  new_masks = tuple(
    Layer(new.weight, new.bias & old.bias.astype(bool)) for new, old in zip(rule, masks)
  )
  return select.apply_weight_keep(params, new_masks), new_masks


def xavier_normal_from_masks(key: jax.Array, params: Params, masks: Params) -> Params:
  """Xavier-normal weights (gain 1), biases kept, weights masked (§B.2, SNIP/GraSP).

  std_l = sqrt(2 / (fan_in + fan_out)) with the fans of the run's network: the
  number of columns and rows of W_l's starting mask holding any True entry
  (the full w at a dense width-w start, padded or not). Draws use the same key
  split as cubist.mlp.xavier_normal_weights, so an unpadded dense start gives
  the same weights.
  """
  keys = jax.random.split(key, len(params))
  layers = []
  for layer_key, layer, mask in zip(keys, params, masks):
    weight_mask = mask.weight.astype(bool)
    fan_out = jnp.sum(jnp.any(weight_mask, axis=1))
    fan_in = jnp.sum(jnp.any(weight_mask, axis=0))
    std = jnp.sqrt(2.0 / jnp.maximum(fan_in + fan_out, 1).astype(jnp.float32))
    weight = std * jax.random.normal(layer_key, layer.weight.shape, jnp.float32)
    layers.append(Layer(weight * weight_mask, layer.bias))
  return tuple(layers)


# --------------------------------------------------------------------------- data batches


def _data_order(key: jax.Array, num_points: int):
  """A fresh random order of the data: a function from positions (int32, any shape) to data indices.

  What a freshly shuffled DataLoader walks through. Drawn with the trainer's
  keyed Feistel bijection (cubist.order), evaluated only at the positions
  asked for (O(1) memory per position instead of a full O(P log P)
  permutation per experiment); sizes the Feistel network cannot split fall
  back to jax.random.permutation. `num_points` is static.
  """
  try:
    order.feistel_domain(num_points)
  except ValueError:
    permutation = jax.random.permutation(key, num_points).astype(jnp.int32)
    return lambda positions: permutation[positions]
  round_keys = jax.random.bits(key, (order.FEISTEL_ROUNDS,), jnp.uint32)
  return lambda positions: order.feistel_permute(round_keys, positions, num_points)


def shuffled_prefix(key: jax.Array, num_points: int, length: int) -> jax.Array:
  """The first `length` data indices of a fresh random order of `num_points`: int32 (length,).

  A fresh DataLoader's first batch (or first few batches, concatenated).
  `num_points` and `length` are static.
  """
  if length > num_points:
    raise ValueError(f"need {length} distinct points, the data set has {num_points}")
  return _data_order(key, num_points)(jnp.arange(length, dtype=jnp.int32))


def grasp_sample_indices(
  key: jax.Array, y: jax.Array, per_class: int = GRASP_SAMPLES_PER_CLASS
) -> jax.Array:
  """GraSP's samples: the first `per_class` points of each class in a fresh order, int32 (2 per_class,).

  Class 0 first, then class 1 (§E.4). Kept quirk (§H 6): GraSP splits this set
  into halves, so the first half is all class 0 and the second all class 1.
  The order is walked in chunks of GRASP_SCAN_CHUNK positions until both
  classes are full (one chunk on a balanced set), so memory stays small
  inside a vmap over thousands of experiments. A class with fewer than
  `per_class` points leaves index 0 in its missing slots (the spiral has
  ~25k of each).
  """
  num_points = y.shape[0]
  data_order = _data_order(key, num_points)
  chunk = min(GRASP_SCAN_CHUNK, num_points)

  def scan_chunk(state):
    start, picks, found = state
    positions = start + jnp.arange(chunk, dtype=jnp.int32)
    inside = positions < num_points
    indices = data_order(jnp.minimum(positions, num_points - 1))
    labels = y[indices]
    new_picks, new_found = [], []
    for label in (0, 1):
      is_label = inside & (labels == label)
      ranks = found[label] + jnp.cumsum(is_label) - 1
      slots = jnp.where(is_label & (ranks < per_class), ranks, per_class)  # per_class: dropped
      new_picks.append(picks[label].at[slots].set(indices, mode="drop"))
      new_found.append(found[label] + jnp.sum(is_label))
    return start + chunk, jnp.stack(new_picks), jnp.stack(new_found)

  def unfinished(state):
    start, _, found = state
    return (start < num_points) & jnp.any(found < per_class)

  state = (jnp.int32(0), jnp.zeros((2, per_class), jnp.int32), jnp.zeros(2, jnp.int32))
  return jax.lax.while_loop(unfinished, scan_chunk, state)[1].reshape(-1)


def _split_key(key: jax.Array) -> tuple[jax.Array, jax.Array]:
  """(init key, data key) of one experiment's method key."""
  return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


# --------------------------------------------------------------------------- scores


def snip_scores(params: Params, batch_x: jax.Array, batch_y: jax.Array) -> jax.Array:
  """SNIP connection sensitivity |dL/dc| = |g * W| at c = 1, flat (N_arr,) (§E.3).

  batch_x (B, 2), batch_y (B,). The reference normalises by the sum, which
  does not change the ranking; raw scores are returned.
  """
  grads = jax.grad(_mean_loss)(params, batch_x, batch_y)
  return jnp.abs(select.flat_weights(grads) * select.flat_weights(params))


def grasp_scores(
  params: Params, sample_x: jax.Array, sample_y: jax.Array, temperature: float = GRASP_TEMPERATURE
) -> jax.Array:
  """GraSP score -W * Hg, flat (N_arr,) (§E.4).

  sample_x (2S, 2), sample_y (2S,): split into halves H1, H2. With L_h the
  mean BCE of logits / T on half h: g = grad_W L_1 + grad_W L_2 (a sum,
  treated as a constant), Hg = grad_W (g . grad_W L_1) + grad_W (g . grad_W L_2).
  Only weights are differentiated; biases enter the forward pass. The
  reference normalises by |sum| + 1e-10 (order-preserving); raw scores here.
  """
  half = sample_x.shape[0] // 2
  halves = ((sample_x[:half], sample_y[:half]), (sample_x[half:], sample_y[half:]))
  weights = _weights(params)

  def half_loss(weights, half_x, half_y):
    logits = apply(_with_weights(params, weights), half_x) / temperature
    return portable.mean(bce_with_logits(logits, half_y), 0)

  half_grads = [jax.grad(half_loss)(weights, hx, hy) for hx, hy in halves]
  gradient = jax.lax.stop_gradient(jax.tree.map(jnp.add, *half_grads))

  def gradient_dot(weights):
    return sum(
      sum(portable.vdot(g, d) for g, d in zip(gradient, jax.grad(half_loss)(weights, hx, hy)))
      for hx, hy in halves
    )

  hessian_gradient = jax.grad(gradient_dot)(weights)
  return -jnp.concatenate([jnp.ravel(w * hg) for w, hg in zip(weights, hessian_gradient)])


def synflow_scores(params: Params) -> jax.Array:
  """SynFlow score |W * dR/dW| at |params| with an all-ones (1, 2) input, flat (N_arr,) (§E.5).

  R is the summed output of the linearised network (every parameter replaced
  by its absolute value, so every ReLU is the identity). Biases enter R but
  are not scored. Zeroed (masked) entries stay zero and score 0.
  """
  abs_params = jax.tree.map(jnp.abs, params)
  ones = jnp.ones((1, 2), jnp.float32)

  def flow(weights):
    return portable.total(apply(_with_weights(abs_params, weights), ones))

  grads = jax.grad(flow)(_weights(abs_params))
  return jnp.abs(jnp.concatenate([jnp.ravel(w * g) for w, g in zip(_weights(abs_params), grads)]))


def iter_snip_scores(
  params: Params, keep: jax.Array, batch_x: jax.Array, batch_y: jax.Array
) -> jax.Array:
  """Iter-SNIP saliency |W_cur * grad L(W_cur)| with W_cur = W * keep, flat (N_arr,) (§E.6).

  keep: bool (N_arr,) the weights still alive. The reference's gradient hook
  zeroes the pruned weights' gradients (their saliency is 0 either way) and
  sets the pruned entries' saliency to the global minimum saliency; both are
  reproduced (the minimum is 0 whenever something is pruned). Biases are not
  masked in the working copy.
  """
  current = _with_weights(params, select.unflat_weights(select.flat_weights(params) * keep, params))
  grads = jax.grad(_mean_loss)(current, batch_x, batch_y)
  flat_grads = select.flat_weights(grads) * keep  # the gradient hook
  saliency = jnp.abs(select.flat_weights(current) * flat_grads)
  return jnp.where(keep, saliency, jnp.min(saliency))


def force_scores(
  params: Params, keep: jax.Array, batch_x: jax.Array, batch_y: jax.Array
) -> jax.Array:
  """FORCE saliency |W0 * grad L(W0 * keep)|, flat (N_arr,) (§E.7).

  The gradient is taken at the sparse point (pruned weights set to 0, not
  blocked) and multiplied by the *dense original* weights W0, so pruned
  weights can be revived. Biases are not masked in the working copy.
  """
  flat_original = select.flat_weights(params)
  sparse = _with_weights(params, select.unflat_weights(flat_original * keep, params))
  grads = jax.grad(_mean_loss)(sparse, batch_x, batch_y)
  return jnp.abs(flat_original * select.flat_weights(grads))


def prospr_scores(
  params: Params,
  batches_x: jax.Array,
  batches_y: jax.Array,
  lr: jax.Array,
  momentum: float = PROSPR_MOMENTUM,
  masks: Params | None = None,
  detach_first_buffer: bool = True,
) -> jax.Array:
  """ProsPr meta-gradient |dL_meta/dc| through the inner SGD steps, flat (N_arr,) (§E.8).

  batches_x (S + 1, B, 2), batches_y (S + 1, B): S inner steps (3 in the
  paper) on B1..BS, the meta-loss on the last batch. Fast weights start at
  (W * c, b) with c = 1; each inner step does buf <- g (first step) or
  buf <- momentum buf + g, then theta <- theta - lr buf, for weights and
  biases, no weight decay (§H 9). jax.grad differentiates through the steps
  (second order; create_graph in the reference); the steps are a lax.scan.

  detach_first_buffer: the reference's inner SGD starts its momentum buffer as
  `torch.clone(grad).detach()`, so the meta-gradient does not flow through the
  first step's gradient (nor through that buffer where later steps carry it);
  later steps' gradients are differentiated. True (the default) reproduces that;
  False is the full second-order meta-gradient (the `clean` variant, §H).
  `masks`, if given, keeps entries outside the starting mask at 0 during the
  inner steps (a no-op for a dense or zero-padded start, whose padded entries
  get zero gradient).
  """

  def inner_step(carry, step_inputs):
    fast, buffer = carry
    batch_x, batch_y, first = step_inputs
    grads = jax.grad(_mean_loss)(fast, batch_x, batch_y)
    if detach_first_buffer:  # the reference's torch.clone(grad).detach() on step 1
      grads = jax.tree.map(lambda g: jnp.where(first, jax.lax.stop_gradient(g), g), grads)
    # A zero initial buffer makes the first step's buffer exactly g (0.9 * 0 + g).
    buffer = jax.tree.map(lambda b, g: momentum * b + g, buffer, grads)
    fast = jax.tree.map(lambda p, b: p - lr * b, fast, buffer)
    if masks is not None:
      fast = jax.tree.map(lambda p, m: p * m.astype(p.dtype), fast, masks)
    return (fast, buffer), None

  def meta_loss(c):
    fast = tuple(Layer(layer.weight * scale, layer.bias) for layer, scale in zip(params, c))
    buffer = jax.tree.map(jnp.zeros_like, fast)
    first = jnp.arange(batches_x.shape[0] - 1) == 0
    (fast, _), _ = jax.lax.scan(inner_step, (fast, buffer), (batches_x[:-1], batches_y[:-1], first))
    return _mean_loss(fast, batches_x[-1], batches_y[-1])

  ones = tuple(jnp.ones_like(layer.weight) for layer in params)
  return jnp.abs(jnp.concatenate([jnp.ravel(g) for g in jax.grad(meta_loss)(ones)]))


# --------------------------------------------------------------------------- selection


def snip_select(
  scores: jax.Array, count: jax.Array, valid: jax.Array, count_mode: str
) -> jax.Array:
  """SNIP keep vector, bool (N_arr,) (§E.3).

  reference: acceptable = the count-th largest score, keep s >= acceptable
  (ties with it are kept; count = int(N (f/N)) may be f - 1, §H 3).
  exact: exactly `count` entries, ties to the lower index.
  """
  if count_mode == "exact":
    return select.keep_top_k(scores, count, valid)
  masked = _masked_scores(scores, valid)
  return (masked >= select.kth_largest(masked, count)) & valid


def grasp_select(
  scores: jax.Array, removed: jax.Array, num_weights: jax.Array, valid: jax.Array, count_mode: str
) -> jax.Array:
  """GraSP keep vector, bool (N_arr,) (§E.4): the `removed` largest scores go.

  reference: acceptable = the removed-th largest score, keep s < acceptable
  (strict, so ties with it are removed too; the original GraSP uses <= and
  keeps one more, paper (1) changed it, §H 5). removed = R =
  int(N (1 - keep_ratio)), so f or f + 1 stay (§H 3).
  exact: exactly num_weights - removed kept (the lowest scores), ties to the
  lower index.
  """
  if count_mode == "exact":
    return select.keep_top_k(-scores, num_weights - removed, valid)
  masked = _masked_scores(scores, valid)
  return (masked < select.kth_largest(masked, removed)) & valid


def strict_select(
  scores: jax.Array, count: jax.Array, valid: jax.Array, count_mode: str
) -> jax.Array:
  """Keep vector of SynFlow / Iter-SNIP / FORCE steps, bool (N_arr,).

  reference: acceptable = the count-th largest valid score, keep s >
  acceptable (strict): count - 1 entries survive without ties (§E.5 off-by-one,
  §E.6 ">" instead of FORCE's original ">=", §H 2, §H 4); if acceptable is 0,
  only positive scores survive.
  exact: exactly `count` valid entries, ties to the lower index.
  """
  if count_mode == "exact":
    return select.keep_top_k(scores, count, valid)
  masked = _masked_scores(scores, valid)
  return (masked > select.kth_largest(masked, count)) & valid


def synflow_masks(
  params: Params,
  masks: Params,
  pruned_counts: jax.Array,
  num_weights: jax.Array,
  count_mode: str,
  score_fn=synflow_scores,
) -> tuple[Params, Params]:
  """SynFlow's 100-iteration loop (§E.5): (pruned params, masks).

  pruned_counts: int32 (I,) P_i, the number of weights to prune at iteration
  i (reference: int(N - f^r / N^(r - 1)), r = i / 100). Each iteration scores
  the current (masked) network, keeps, recomputes the bias masks by the rule
  and writes the masks into the params in place: weights and dead-out biases
  are zeroed (§H 11: the original SynFlow never masks biases), so the next
  iteration's R sees them removed.
  reference: only if P_i >= 1, threshold = the P_i-th (0-based) ascending
  score, i.e. the (N - P_i)-th largest valid one, keep s > threshold, so
  N - P_i - 1 survive and the final count is f - 1 (§E.5 off-by-one, §H 2).
  Pruned weights score 0 and, the threshold being >= 0, never come back.
  exact: keep exactly N - P_i of the current weights, ties to the lower index.
  score_fn(params) -> (N_arr,) is synflow_scores; tests substitute tie-free scores.
  """
  valid = select.flat_weights(masks).astype(bool)

  def iteration(i, carry):
    current, keep = carry
    scores = score_fn(current)
    pruned = pruned_counts[i]
    if count_mode == "exact":
      new_keep = select.keep_top_k(scores, num_weights - pruned, keep)
    else:
      new_keep = jnp.where(
        pruned >= 1, strict_select(scores, num_weights - pruned, valid, "reference"), keep
      )
    return _install(current, masks, new_keep)[0], new_keep

  current, keep = jax.lax.fori_loop(0, pruned_counts.shape[0], iteration, (params, valid))
  return _install(current, masks, keep)


def iterative_masks(
  params: Params,
  valid: jax.Array,
  batches_x: jax.Array,
  batches_y: jax.Array,
  counts: jax.Array,
  count_mode: str,
  revive: bool,
  score_fn=None,
) -> tuple[jax.Array, jax.Array]:
  """Iter-SNIP (revive=False, §E.6) or FORCE (revive=True, §E.7) steps: (keep, scores).

  batches_x (S, B, 2), batches_y (S, B): one fresh batch per step. counts:
  int32 (S,) K_x, the weights to keep after step x. Returns the final keep,
  bool (N_arr,), and every step's scores, float (S, N_arr).
  reference: keep s > the K_x-th largest saliency (strict_select) over all
  valid weights (Iter-SNIP's pruned weights sit at the minimum and never
  return; FORCE's can).
  exact: exactly K_x, among the current weights (Iter-SNIP) or all valid
  weights (FORCE).
  score_fn(params, keep, batch_x, batch_y) -> (N_arr,) defaults to force_scores
  or iter_snip_scores; tests substitute tie-free scores.
  """
  if score_fn is None:
    score_fn = force_scores if revive else iter_snip_scores

  def step(keep, inputs):
    batch_x, batch_y, count = inputs
    scores = score_fn(params, keep, batch_x, batch_y)
    candidates = keep if (count_mode == "exact" and not revive) else valid
    return strict_select(scores, count, candidates, count_mode), scores

  return jax.lax.scan(step, valid, (batches_x, batches_y, counts))


def prospr_bias_masks(weight_masks, masks: Params, clean: bool) -> tuple:
  """ProsPr's bias masks from its weight masks (§E.8, §H 7).

  The reference masks the bias of layer i (0-based) by the column rule only
  if i < rows(mask_i) - 1, where rows is the layer's width w (the rows of the
  starting mask holding any True entry): at w >= 4 all three hidden layers
  are masked, at w = 3 the third hidden layer's biases never are (kept
  quirk), the classifier's never (intended). clean=True applies the rule to
  all three hidden layers. Unmasked biases keep their starting mask.
  """
  rule = mask_ops.bias_masks_from_weights(weight_masks)
  biases = []
  for index, (rule_bias, start) in enumerate(zip(rule, masks)):
    start_bias = start.bias.astype(bool)
    if index == len(masks) - 1:
      biases.append(start_bias)
      continue
    rows = jnp.sum(jnp.any(start.weight.astype(bool), axis=1))
    masked = True if clean else index < rows - 1
    biases.append(jnp.where(masked, rule_bias & start_bias, start_bias))
  return tuple(biases)


# --------------------------------------------------------------------------- at_init hooks


def snip_at_init(key, params, masks, x, y, hyper: Hyper, static: MethodStatic):
  """SNIP (§E.3): one batch, one score, keep the best; Xavier re-init in the random family."""
  _check_static(static)
  init_key, data_key = _split_key(key)
  if static.random_init:  # §B.2, §H 12: scored AND trained from Xavier weights
    params = xavier_normal_from_masks(init_key, params, masks)
  indices = shuffled_prefix(data_key, x.shape[0], static.batch_size)
  scores = snip_scores(params, jnp.asarray(x)[indices], jnp.asarray(y)[indices])
  valid = select.flat_weights(masks).astype(bool)
  keep = snip_select(scores, hyper.counts[0], valid, static.count_mode)
  return _install(params, masks, keep)


def grasp_at_init(key, params, masks, x, y, hyper: Hyper, static: MethodStatic):
  """GraSP (§E.4): 25 + 25 single-class samples, -W * Hg, remove the R largest."""
  _check_static(static)
  init_key, data_key = _split_key(key)
  if static.random_init:  # §B.2, §H 12
    params = xavier_normal_from_masks(init_key, params, masks)
  x, y = jnp.asarray(x), jnp.asarray(y)
  indices = grasp_sample_indices(data_key, y)
  scores = grasp_scores(params, x[indices], y[indices])
  valid = select.flat_weights(masks).astype(bool)
  keep = grasp_select(scores, hyper.counts[0], hyper.num_weights, valid, static.count_mode)
  if static.count_mode == "reference":  # §E.4: the mask is 1 where the masked weight is nonzero
    keep = keep & (select.flat_weights(params) != 0)
  return _install(params, masks, keep)


def synflow_at_init(key, params, masks, x, y, hyper: Hyper, static: MethodStatic):
  """SynFlow (§E.5): data-free, 100 iterations of the exponential schedule, no re-init."""
  del key, x, y
  _check_static(static)
  return synflow_masks(params, masks, hyper.counts, hyper.num_weights, static.count_mode)


def _iterative_at_init(key, params, masks, x, y, hyper, static, revive):
  _check_static(static)
  _, data_key = _split_key(key)
  x, y = jnp.asarray(x), jnp.asarray(y)
  steps = hyper.counts.shape[0]
  indices = jax.vmap(
    lambda step: shuffled_prefix(jax.random.fold_in(data_key, step), x.shape[0], static.batch_size)
  )(jnp.arange(steps))
  valid = select.flat_weights(masks).astype(bool)
  keep, _ = iterative_masks(
    params, valid, x[indices], y[indices], hyper.counts, static.count_mode, revive
  )
  if static.count_mode == "reference":  # §E.6: weight mask = 1 where the masked weight is nonzero
    keep = keep & (select.flat_weights(params) != 0)
  return _install(params, masks, keep)


def iter_snip_at_init(key, params, masks, x, y, hyper: Hyper, static: MethodStatic):
  """Iter-SNIP (§E.6): 10 steps, a fresh batch each, pruned weights stay pruned."""
  return _iterative_at_init(key, params, masks, x, y, hyper, static, revive=False)


def force_at_init(key, params, masks, x, y, hyper: Hyper, static: MethodStatic):
  """FORCE (§E.7): 10 steps, a fresh batch each, scored at the dense weights (revival)."""
  return _iterative_at_init(key, params, masks, x, y, hyper, static, revive=True)


def prospr_at_init(key, params, masks, x, y, hyper: Hyper, static: MethodStatic):
  """ProsPr (§E.8): meta-gradient through 3 SGD steps (B1..B3, meta-loss on B4), global top-k."""
  _check_static(static)
  _, data_key = _split_key(key)
  indices = shuffled_prefix(data_key, x.shape[0], (PROSPR_INNER_STEPS + 1) * static.batch_size)
  indices = indices.reshape(PROSPR_INNER_STEPS + 1, static.batch_size)
  scores = prospr_scores(
    params,
    jnp.asarray(x)[indices],
    jnp.asarray(y)[indices],
    hyper.lr,
    masks=masks,
    detach_first_buffer=not static.clean,
  )
  valid = select.flat_weights(masks).astype(bool)
  # Both modes keep exactly counts[0] (reference: ceil(N (1 - prune_ratio)), f or f + 1,
  # §H 3); torch.topk's tie order is unspecified, ties go to the lower index here.
  keep = select.keep_top_k(scores, hyper.counts[0], valid)
  weight_masks = select.unflat_weights(keep, params)
  biases = prospr_bias_masks(weight_masks, masks, static.clean)
  new_masks = tuple(Layer(w, b) for w, b in zip(weight_masks, biases))
  return select.apply_weight_keep(params, new_masks), new_masks


def prospr_failed(masks: Params, hyper: Hyper, static: MethodStatic) -> jax.Array:
  """True if a weight matrix is empty: the reference's assertion crashes the run (§E.8, §H 8)."""
  del hyper, static
  return jnp.any(jnp.stack([~jnp.any(layer.weight) for layer in masks]))


# --------------------------------------------------------------------------- host counts


def _exact_schedule(f: int, num_weights: int, steps: int) -> list[int]:
  """Kept counts of an exponential schedule with exact rounding, ending at exactly f."""
  kept = [
    max(f, round(num_weights * (f / num_weights) ** (step / steps))) for step in range(1, steps + 1)
  ]
  kept[-1] = f
  return kept


def _counts(values) -> np.ndarray:
  return np.asarray(values, np.int32)


# The reference counts are the formulas of search/pruning/counts.py (their one
# home, also behind the §E.10 table); exact mode asks for f.


def snip_host_counts(f: int, num_weights: int, static: MethodStatic) -> np.ndarray:
  """[k]: reference k = int(N (f / N)) (§E.3; may be f - 1); exact [f]."""
  f, n = int(f), int(num_weights)
  return _counts([f] if static.count_mode == "exact" else [counts.snip_count(f, n)])


def grasp_host_counts(f: int, num_weights: int, static: MethodStatic) -> np.ndarray:
  """[R], the number removed (§E.4): reference N - counts.grasp_count (f or f + 1 stay,
  §H 3); exact [N - f]."""
  f, n = int(f), int(num_weights)
  return _counts([n - (f if static.count_mode == "exact" else counts.grasp_count(f, n))])


def synflow_host_counts(f: int, num_weights: int, static: MethodStatic) -> np.ndarray:
  """[P_1..P_100], pruned per iteration: reference int(N - f^r / N^(r - 1)), r = i / 100 (§E.5).

  (§E.5 also writes int(N (1 - (f/N)^r)); in float64 that gives one less at
  some (N, f, i), e.g. P_100 = N - f - 1 at N = 65, f = 19, whereas the form
  used here always gives P_100 = N - f (f^1 / N^0 = f exactly), hence the
  final f - 1 that §E.10 reports for SynFlow without exception.)
  exact: N - round(N (f/N)^r), floored at f kept, ending at exactly N - f.
  """
  f, n = int(f), int(num_weights)
  if static.count_mode == "exact":
    return _counts([n - kept for kept in _exact_schedule(f, n, SYNFLOW_ITERATIONS)])
  return _counts(counts.synflow_prune_counts(f, n))


def iterative_host_counts(f: int, num_weights: int, static: MethodStatic) -> np.ndarray:
  """[K_1..K_10], kept after each step: reference int(N exp(-x (-ln(f / N)) / 10)) (§E.6).

  exact: round(N (f/N)^(x/10)), floored at f, ending at exactly f.
  """
  f, n = int(f), int(num_weights)
  if static.count_mode == "exact":
    return _counts(_exact_schedule(f, n, ITERATIVE_STEPS))
  return _counts(counts.force_counts(f, n, ITERATIVE_STEPS))


def prospr_host_counts(f: int, num_weights: int, static: MethodStatic) -> np.ndarray:
  """[k]: reference ceil(N (1 - prune_ratio)), prune_ratio = 1 - f / N (§E.8; may be f + 1); exact [f]."""
  f, n = int(f), int(num_weights)
  return _counts([f if static.count_mode == "exact" else counts.prospr_count(f, n)])


# --------------------------------------------------------------------------- registry


METHODS: dict[str, Method] = {
  "snip": Method(
    name="snip",
    at_init=snip_at_init,
    host_counts=snip_host_counts,
    description="SNIP (§E.3): |g * W| on one batch, keep the k best (ties kept)",
  ),
  "grasp": Method(
    name="grasp",
    at_init=grasp_at_init,
    host_counts=grasp_host_counts,
    description="GraSP (§E.4): -W * Hg on 25 + 25 samples at T = 200, remove the R largest",
  ),
  "synflow": Method(
    name="synflow",
    at_init=synflow_at_init,
    host_counts=synflow_host_counts,
    description="SynFlow (§E.5): 100 data-free iterations of |W * dR/dW|, exponential schedule",
  ),
  "iter_snip": Method(
    name="iter_snip",
    at_init=iter_snip_at_init,
    host_counts=iterative_host_counts,
    description="Iter-SNIP (§E.6): 10 SNIP steps on the progressively pruned net",
  ),
  "force": Method(
    name="force",
    at_init=force_at_init,
    host_counts=iterative_host_counts,
    description="FORCE (§E.7): 10 steps, |W0 * grad at the sparse net|, revival allowed",
  ),
  "prospr": Method(
    name="prospr",
    at_init=prospr_at_init,
    host_counts=prospr_host_counts,
    failed=prospr_failed,
    description="ProsPr (§E.8): |dL/dc| through 3 inner SGD steps, global top-k",
  ),
}
