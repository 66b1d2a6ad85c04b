"""PyTorch reference of the six pruning-at-initialisation scores and selections: a test oracle.

Provenance
----------
Written for this project from the prose specification in ``docs/METHODS.md``
(sections B.3 "How masks act", E.0 "Common machinery", E.3 SNIP, E.4 GraSP,
E.5 SynFlow, E.6 Iter-SNIP, E.7 FORCE, E.8 ProsPr, E.10 and H). That
specification describes the semantics of the authors' repository for Zhang &
Papyan, *Sparsest Models Elude Pruning* (ICML 2024), ``stephenqz/sparsest`` at
``b7fe768``, files ``pruning_methods/{SNIP,GraSP,SynFlow,FORCE}.py`` and
``pruning_methods/ProsPr/{prospr,utils}.py``, which in turn adapt mil-ad/snip,
alecwangcq/GraSP, ganguli-lab/Synaptic-Flow, naver/force and mil-ad/prospr.
No code was copied from any of them; this is our own port of the described
behaviour, written the PyTorch way (autograd with ``create_graph``, mask
tensors multiplied into the weights, ``torch.topk`` and ``torch.sort``
thresholds), so that the JAX implementation in ``search/pruning/at_init.py``
can be checked against an independent one on identical weights and batches.

What it reproduces (each item points at METHODS)
------------------------------------------------
* SNIP (E.3): |dL/dc| with the forward using W * c at c = 1, BCE mean; scores
  normalised by their sum; k = int(N (f / N)); keep s >= the k-th largest.
* GraSP (E.4): halves of the given 2 S samples; g = sum of the halves' weight
  gradients (detached); Hg accumulated by ``z.backward()`` per half with
  z = sum(g * grad_f), grad_f taken with ``create_graph``; s = -W * Hg,
  normalised by |sum| + 1e-10; R = int(N (1 - keep_ratio)); keep s < the R-th
  largest (strict, paper (1)'s change).
* SynFlow (E.5): 100 iterations: signs saved, |theta| in place, R = sum of the
  output for a ones (1, 2) input, s = |W * dR/dW|, signs restored;
  P_i = int(N - f^r / N^(r - 1)); if P_i >= 1 the threshold is
  ``torch.sort(scores)[P_i]``, keep s > threshold, bias masks by the rule, and
  weights and biases are multiplied by their masks in place.
* Iter-SNIP and FORCE (E.6, E.7): K_x = int(N exp(-x (-ln(f / N)) / 10));
  Iter-SNIP scores |W_cur * grad| on the progressively pruned copy with a
  gradient hook (grad * mask) and pruned entries set to the minimum saliency;
  FORCE scores |W_0 * grad L(W_0 * M)|; keep s > the K_x-th largest; the final
  mask is 1 where the masked original weight is nonzero.
* ProsPr (E.8): c = 1 on every weight, fast weights (W * c, b), inner SGD with
  momentum 0.9 and no weight decay through ``autograd.grad(create_graph=True)``
  on batches B1..B_S, meta-loss on the last batch, s = |dL_meta/dc|;
  k = ceil(N (1 - prune_ratio)) by ``torch.topk``; the bias-mask index bug.

The data batches are inputs (no DataLoader, no global RNG): the caller gives
the exact samples, so the oracle and JAX see the same ones. Float32
throughout. Flat vectors concatenate W1..W4 row-major in the (out, in)
orientation, as in ``search.pruning.select.flat_weights``; parameters use the
``layer{1..4}_{weight,bias}`` numpy format of ``third_party/torch_reference.py``.

Torch is imported here and only here; the rest of the project must not depend on it.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = [
  "snip_scores",
  "snip_keep",
  "grasp_scores",
  "grasp_keep",
  "synflow_prune",
  "iterative_prune",
  "prospr_scores",
  "prospr_keep",
  "prospr_bias_masks",
  "bias_rule",
]

NUM_LAYERS = 4


# --------------------------------------------------------------------------- helpers


def _tensors(params: dict[str, np.ndarray], kind: str) -> list[torch.Tensor]:
  """The four weights or biases as float32 tensors (fresh copies)."""
  return [
    torch.tensor(np.asarray(params[f"layer{i}_{kind}"], np.float32))
    for i in range(1, NUM_LAYERS + 1)
  ]


def _forward(
  weights: Sequence[torch.Tensor], biases: Sequence[torch.Tensor], x: torch.Tensor
) -> torch.Tensor:
  """Logits (B, 1) of the four-layer ReLU MLP (METHODS B.1)."""
  h = x
  for index, (w, b) in enumerate(zip(weights, biases)):
    h = F.linear(h, w, b)
    if index < NUM_LAYERS - 1:
      h = torch.relu(h)
  return h


def _bce(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
  """BCEWithLogitsLoss (mean) of (B, 1) logits against (B,) labels."""
  return F.binary_cross_entropy_with_logits(logits, y.reshape(-1, 1))


def _as_tensor(array) -> torch.Tensor:
  return torch.tensor(np.asarray(array, np.float32))


def _flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
  return torch.cat([t.reshape(-1) for t in tensors])


def _split(flat: torch.Tensor, like: Sequence[torch.Tensor]) -> list[torch.Tensor]:
  out, start = [], 0
  for t in like:
    out.append(flat[start : start + t.numel()].reshape(t.shape))
    start += t.numel()
  return out


def bias_rule(weight_masks: Sequence[np.ndarray]) -> list[np.ndarray]:
  """Bias masks by the rule of METHODS B.3: a hidden unit keeps its bias iff it has an outgoing weight."""
  hidden = [np.any(np.asarray(weight_masks[l + 1]) != 0, axis=0) for l in range(3)]
  return hidden + [np.ones(1, bool)]


# --------------------------------------------------------------------------- SNIP (E.3)


def snip_scores(params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray) -> np.ndarray:
  """|dL/dc| at c = 1 with the forward using W * c (unnormalised), float32 (N,)."""
  weights, biases = _tensors(params, "weight"), _tensors(params, "bias")
  cs = [torch.ones_like(w, requires_grad=True) for w in weights]
  loss = _bce(_forward([w * c for w, c in zip(weights, cs)], biases, _as_tensor(x)), _as_tensor(y))
  grads = torch.autograd.grad(loss, cs)
  return _flat([g.abs() for g in grads]).numpy()


def snip_keep(scores: np.ndarray, f: int, num_weights: int) -> np.ndarray:
  """SNIP's keep vector, bool (N,): normalise, k = int(N (f / N)), keep s >= the k-th largest."""
  s = torch.tensor(scores)
  s = s / s.sum()
  k = int(num_weights * (f / num_weights))
  acceptable = torch.topk(s, k, sorted=True).values[-1]
  return (s >= acceptable).numpy()


# --------------------------------------------------------------------------- GraSP (E.4)


def grasp_scores(
  params: dict[str, np.ndarray], x: np.ndarray, y: np.ndarray, temperature: float = 200.0
) -> np.ndarray:
  """-W * Hg (unnormalised), float32 (N,), on the halves of the given 2 S samples."""
  weights = [w.requires_grad_(True) for w in _tensors(params, "weight")]
  biases = _tensors(params, "bias")
  x_t, y_t = _as_tensor(x), _as_tensor(y)
  half = x_t.shape[0] // 2
  halves = [(x_t[:half], y_t[:half]), (x_t[half:], y_t[half:])]

  def half_loss(hx, hy):
    logits = _forward(weights, biases, hx).squeeze(1) / temperature
    return F.binary_cross_entropy_with_logits(logits, hy)

  grad_w = None
  for hx, hy in halves:
    grads = torch.autograd.grad(half_loss(hx, hy), weights)
    grad_w = list(grads) if grad_w is None else [a + b for a, b in zip(grad_w, grads)]
  grad_w = [g.detach() for g in grad_w]
  for hx, hy in halves:
    grad_f = torch.autograd.grad(half_loss(hx, hy), weights, create_graph=True)
    z = sum((gw * gf).sum() for gw, gf in zip(grad_w, grad_f))
    z.backward()  # accumulates Hg into weight.grad over the two halves
  return _flat([-w.detach() * w.grad for w in weights]).numpy()


def grasp_keep(scores: np.ndarray, f: int, num_weights: int) -> np.ndarray:
  """GraSP's keep vector, bool (N,): R = int(N (1 - keep_ratio)); keep s < the R-th largest."""
  s = torch.tensor(scores)
  s = s / (s.sum().abs() + 1e-10)
  prune_ratio = 1 - f / num_weights
  keep_ratio = 1 - prune_ratio
  removed = int(num_weights * (1 - keep_ratio))
  acceptable = torch.topk(s, removed, sorted=True).values[-1]
  return (s < acceptable).numpy()


# --------------------------------------------------------------------------- SynFlow (E.5)


def synflow_prune(params: dict[str, np.ndarray], f: int, iterations: int = 100) -> dict:
  """SynFlow's 100-iteration loop on a copy of the network.

  Returns {"keep": bool (N,), "bias_masks": 4 bool arrays, "scores": float32
  (iterations, N) the scores of every iteration}.
  """
  weights, biases = _tensors(params, "weight"), _tensors(params, "bias")
  num_weights = sum(w.numel() for w in weights)
  weight_masks = [torch.ones_like(w) for w in weights]
  bias_masks = [torch.ones_like(b) for b in biases]
  history = []
  for i in range(1, iterations + 1):
    with torch.no_grad():
      signs = [torch.sign(p) for p in weights + biases]
      for p in weights + biases:
        p.abs_()
    live = [w.detach().clone().requires_grad_(True) for w in weights]
    total = _forward(live, biases, torch.ones(1, 2)).sum()
    grads = torch.autograd.grad(total, live)
    scores = _flat([(w * g).detach().abs() for w, g in zip(live, grads)])
    history.append(scores.numpy().copy())
    with torch.no_grad():
      for p, sign in zip(weights + biases, signs):
        p.mul_(sign)
    r = i / iterations
    pruned = int(num_weights - f**r / num_weights ** (r - 1))
    if pruned < 1:
      continue
    threshold = torch.sort(scores).values[pruned]
    weight_masks = [(s > threshold).to(torch.float32) for s in _split(scores, weights)]
    bias_masks = [
      torch.tensor(m, dtype=torch.float32) for m in bias_rule([m.numpy() for m in weight_masks])
    ]
    with torch.no_grad():
      for p, m in zip(weights + biases, weight_masks + bias_masks):
        p.mul_(m)
  return {
    "keep": _flat(weight_masks).numpy() != 0,
    "bias_masks": [m.numpy() != 0 for m in bias_masks],
    "scores": np.stack(history),
  }


# --------------------------------------------------------------------------- Iter-SNIP, FORCE (E.6, E.7)


def iterative_prune(
  params: dict[str, np.ndarray], batches_x: np.ndarray, batches_y: np.ndarray, f: int, variant: str
) -> dict:
  """Iter-SNIP (variant "iter_snip") or FORCE ("force") over the given per-step batches.

  batches_x (S, B, 2), batches_y (S, B). Returns {"keep": bool (N,), the final
  weight mask (1 where the masked original weight is nonzero), "scores":
  float32 (S, N) every step's saliency}.
  """
  if variant not in ("iter_snip", "force"):
    raise ValueError(f"variant={variant!r}: expected 'iter_snip' or 'force'")
  original, biases = _tensors(params, "weight"), _tensors(params, "bias")
  num_weights = sum(w.numel() for w in original)
  steps = len(batches_x)
  keep = torch.ones(num_weights, dtype=torch.bool)
  history = []
  for x in range(1, steps + 1):
    kept = int(num_weights * math.exp(-x * (-math.log(f / num_weights)) / steps))
    masks = [m.to(torch.float32) for m in _split(keep, original)]
    working = [(w * m).requires_grad_(True) for w, m in zip(original, masks)]
    if variant == "iter_snip":  # the gradient hook blocks pruned weights
      for w, m in zip(working, masks):
        w.register_hook(lambda grad, m=m: grad * m)
    loss = _bce(
      _forward(working, biases, _as_tensor(batches_x[x - 1])), _as_tensor(batches_y[x - 1])
    )
    grads = torch.autograd.grad(loss, working)
    if variant == "iter_snip":
      saliency = _flat([(w.detach() * g).abs() for w, g in zip(working, grads)])
      saliency = torch.where(keep, saliency, saliency.min())
    else:
      saliency = _flat([(w * g).abs() for w, g in zip(original, grads)])
    history.append(saliency.numpy().copy())
    acceptable = torch.topk(saliency, kept, sorted=True).values[-1]
    keep = saliency > acceptable
  keep = keep & (_flat(original) != 0)
  return {"keep": keep.numpy(), "scores": np.stack(history)}


# --------------------------------------------------------------------------- ProsPr (E.8)


def prospr_scores(
  params: dict[str, np.ndarray],
  batches_x: np.ndarray,
  batches_y: np.ndarray,
  lr: float,
  momentum: float = 0.9,
  detach_first_buffer: bool = True,
) -> np.ndarray:
  """|dL_meta/dc|, float32 (N,): S = len(batches) - 1 inner SGD steps, meta-loss on the last batch.

  The reference's inner SGD (`functional_sgd` in the authors' ProsPr utilities)
  starts each momentum buffer as `torch.clone(d_p).detach()`; later buffers are
  `momentum * buf + d_p`, not detached. detach_first_buffer=False differentiates
  through the first buffer too (cubist's `clean` variant).
  """
  weights, biases = _tensors(params, "weight"), _tensors(params, "bias")
  cs = [torch.ones_like(w, requires_grad=True) for w in weights]
  fast = [w * c for w, c in zip(weights, cs)] + [b.clone().requires_grad_(True) for b in biases]
  buffers = None
  for step in range(len(batches_x) - 1):
    loss = _bce(
      _forward(fast[:NUM_LAYERS], fast[NUM_LAYERS:], _as_tensor(batches_x[step])),
      _as_tensor(batches_y[step]),
    )
    grads = torch.autograd.grad(loss, fast, create_graph=True)
    if buffers is None:
      buffers = [torch.clone(g).detach() if detach_first_buffer else g for g in grads]
    else:
      buffers = [momentum * b + g for b, g in zip(buffers, grads)]
    fast = [p - lr * b for p, b in zip(fast, buffers)]
  meta = _bce(
    _forward(fast[:NUM_LAYERS], fast[NUM_LAYERS:], _as_tensor(batches_x[-1])),
    _as_tensor(batches_y[-1]),
  )
  return _flat([g.abs() for g in torch.autograd.grad(meta, cs)]).detach().numpy()


def prospr_keep(scores: np.ndarray, f: int, num_weights: int) -> np.ndarray:
  """ProsPr's keep vector, bool (N,): the ceil(N (1 - prune_ratio)) largest by torch.topk."""
  prune_ratio = 1 - f / num_weights
  kept = math.ceil(num_weights * (1 - prune_ratio))
  keep = torch.zeros(len(scores), dtype=torch.bool)
  keep[torch.topk(torch.tensor(scores), kept).indices] = True
  return keep.numpy()


def prospr_bias_masks(weight_masks: Sequence[np.ndarray]) -> list[np.ndarray]:
  """ProsPr's bias masks with the index bug: layer i is masked only if i < rows(mask_i) - 1."""
  rule = bias_rule(weight_masks)
  out = []
  for index, mask in enumerate(weight_masks):
    rows = np.asarray(mask).shape[0]
    out.append(rule[index] if index < rows - 1 else np.ones(rows, bool))
  return out
