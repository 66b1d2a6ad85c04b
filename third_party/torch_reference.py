"""PyTorch reference of the training semantics: the parity oracle and the timing baseline.

Provenance
----------
Written for this project from the prose specification in ``docs/METHODS.md``
(sections B "Model, initialisation, masks, NNZ" and C "Training protocol").
That specification describes the semantics of the authors' repository for
Zhang & Papyan, *Sparsest Models Elude Pruning* (ICML 2024),
``stephenqz/sparsest`` at ``b7fe768``, file ``training_loops/main_loop.py``
(with ``Model/FourLayerMLP.py`` and ``training_loops/training_utils.py``).
No code was copied from that repository; this is our own port of the described
behaviour, kept small so a reader can check it line by line against METHODS.

What it reproduces (each item points at METHODS)
------------------------------------------------
* Model (B.1): 2 -> w -> w -> w -> 1, every layer with a bias, ReLU between,
  one logit out.  Parameter names follow the reference checkpoints
  (``first_layer``, ``second_layer``, ``third_layer``, ``clf``); the numpy
  exchange format uses ``layer{1..4}_{weight,bias}`` in PyTorch (out, in)
  orientation, as in ``shared/data/bench95_init.npz``.
* Masks (B.3): the *stored parameter values* are multiplied by the 0/1 masks
  at installation, before every forward pass and after every optimiser step.
  Gradients are NOT masked, so the momentum buffers of masked entries fill with
  gradient values; they never reach an active entry because the masked values
  are zeroed again after each step.  Biases have their own masks.
* Loss (C.1): ``nn.BCEWithLogitsLoss`` (mean over the batch) on (B, 1) logits
  against (B, 1) float labels.
* Optimiser (C.1): ``torch.optim.SGD(lr, momentum=0.9, weight_decay=5e-4)``,
  dampening 0, no Nesterov: weight decay is added to the gradient *before*
  momentum, the buffer equals that gradient on the first step, and every
  parameter (masked or not, biases included) is decayed.
* Schedules (C.4), stepped once per epoch, built from ``torch.optim.lr_scheduler``:
  constant = ``MultiStepLR`` with an empty milestone list; step = ``MultiStepLR``
  with milestones ``[ceil(0.3 E), ceil(0.6 E)]`` and gamma 0.1; cosine =
  ``CosineAnnealingLR(T_max=E, eta_min=0)`` (PyTorch's recursive form).
* Batching (C.2): the caller supplies the exact batch order as an integer array
  (epochs, batches_per_epoch, batch_size).  The reference draws a fresh
  permutation per epoch, keeps the first 390*128 = 49,920 rows and drops the
  rest (``drop_last``); ``make_batch_order`` builds such an order from an
  explicit numpy Generator.  Supplying the order makes the oracle and the JAX
  trainer see identical batches.
* Evaluation (C.5): after the last epoch, accuracy on all N points with
  prediction ``logit > 0`` (a logit of exactly 0 counts as class 0); the mean
  BCE over all N points is also returned.
* Float32 throughout (torch's default dtype).

What it deliberately does not reproduce
---------------------------------------
* No seeding / global RNG (quirk H.14): ``train_reference`` is a pure function
  of its inputs.  The model is built without running PyTorch's initialiser
  (``torch.nn.utils.skip_init``), so the global torch generator is never
  touched; all randomness (initialisation, batch order) is an input.
* Pruning methods, IMP/LTH events and RigL are out of scope: masks are fixed for
  the whole run.

Torch is imported here and only here; the rest of the project must not depend on it.
"""

from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import nn

__all__ = [
  "LAYER_NAMES",
  "FourLayerMLP",
  "load_params",
  "get_params",
  "make_scheduler",
  "lr_schedule",
  "make_batch_order",
  "train_reference",
  "seconds_per_run",
]

#: numpy key prefix -> attribute name of the reference model.
LAYER_NAMES = {
  "layer1": "first_layer",
  "layer2": "second_layer",
  "layer3": "third_layer",
  "layer4": "clf",
}

N_DATA = 49_982  # METHODS A.2
BATCH_SIZE = 128  # METHODS C.2
BATCHES_PER_EPOCH = 390  # METHODS C.2 (floor(50000/128), equal to the true count)


# ---------------------------------------------------------------------------
# Model and parameter exchange
# ---------------------------------------------------------------------------


def _linear(n_in: int, n_out: int, init: bool) -> nn.Linear:
  if init:
    return nn.Linear(n_in, n_out)  # PyTorch default init, uses the global RNG
  # Allocate without initialising: no global RNG draw, values set later.
  return torch.nn.utils.skip_init(nn.Linear, n_in, n_out)


class FourLayerMLP(nn.Module):
  """f(x) = clf(relu(third(relu(second(relu(first(x))))))), widths 2 -> w -> w -> w -> 1.

  ``init=True`` runs PyTorch's default ``nn.Linear`` initialisation (global
  RNG); ``init=False`` leaves the values uninitialised, to be filled by
  ``load_params``.
  """

  def __init__(self, width: int, init: bool = True):
    super().__init__()
    self.width = int(width)
    self.first_layer = _linear(2, width, init)
    self.second_layer = _linear(width, width, init)
    self.third_layer = _linear(width, width, init)
    self.clf = _linear(width, 1, init)

  def forward(self, x: torch.Tensor) -> torch.Tensor:
    h = torch.relu(self.first_layer(x))
    h = torch.relu(self.second_layer(h))
    h = torch.relu(self.third_layer(h))
    return self.clf(h)  # (B, 1) logits

  def layers(self) -> list[nn.Linear]:
    return [getattr(self, LAYER_NAMES[f"layer{i}"]) for i in range(1, 5)]


def load_params(model: FourLayerMLP, params: dict[str, np.ndarray]) -> FourLayerMLP:
  """Copy ``layer{1..4}_{weight,bias}`` numpy arrays ((out, in) orientation) into ``model``."""
  with torch.no_grad():
    for i, layer in enumerate(model.layers(), start=1):
      for kind in ("weight", "bias"):
        value = np.asarray(params[f"layer{i}_{kind}"], dtype=np.float32)
        target = getattr(layer, kind)
        if tuple(value.shape) != tuple(target.shape):
          raise ValueError(f"layer{i}_{kind}: shape {value.shape} != model {tuple(target.shape)}")
        target.copy_(torch.from_numpy(value.copy()))
  return model


def get_params(model: FourLayerMLP) -> dict[str, np.ndarray]:
  """The model's parameters as float32 numpy copies, in the ``layer{i}_{kind}`` format."""
  out = {}
  for i, layer in enumerate(model.layers(), start=1):
    out[f"layer{i}_weight"] = layer.weight.detach().cpu().numpy().astype(np.float32, copy=True)
    out[f"layer{i}_bias"] = layer.bias.detach().cpu().numpy().astype(np.float32, copy=True)
  return out


# ---------------------------------------------------------------------------
# Schedules and batch orders
# ---------------------------------------------------------------------------


def make_scheduler(optimizer: torch.optim.Optimizer, schedule: str, epochs: int):
  """The per-epoch scheduler of METHODS C.4, as torch.optim.lr_scheduler objects."""
  if schedule == "constant":
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[], gamma=0.1)
  if schedule == "step":
    milestones = [math.ceil(0.3 * epochs), math.ceil(0.6 * epochs)]
    return torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=milestones, gamma=0.1)
  if schedule == "cosine":
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs, eta_min=0.0)
  raise ValueError(f"unknown schedule {schedule!r}; expected 'constant', 'step' or 'cosine'")


def lr_schedule(lr: float, schedule: str, epochs: int) -> np.ndarray:
  """The lr used in each epoch e = 1..E (float64, shape (E,)), read off the torch scheduler."""
  dummy = torch.zeros(1, requires_grad=True)
  opt = torch.optim.SGD([dummy], lr=lr, momentum=0.9, weight_decay=5e-4)
  sched = make_scheduler(opt, schedule, epochs)
  lrs = []
  for _ in range(epochs):
    lrs.append(opt.param_groups[0]["lr"])
    opt.step()  # keeps the scheduler from warning about call order; dummy has no grad
    sched.step()
  return np.asarray(lrs, dtype=np.float64)


def make_batch_order(
  rng: np.random.Generator,
  n: int,
  epochs: int,
  batch_size: int = BATCH_SIZE,
  batches_per_epoch: int | None = None,
) -> np.ndarray:
  """(epochs, batches, batch_size) int64 row indices: a fresh permutation per epoch, drop_last."""
  if batches_per_epoch is None:
    batches_per_epoch = n // batch_size
  if batches_per_epoch * batch_size > n:
    raise ValueError("batches_per_epoch * batch_size exceeds the number of points")
  used = batches_per_epoch * batch_size
  order = np.stack([rng.permutation(n)[:used] for _ in range(epochs)])
  return order.reshape(epochs, batches_per_epoch, batch_size).astype(np.int64)


# ---------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------


def _as_mask_tensors(masks: Sequence[np.ndarray], params: Sequence[torch.Tensor], what: str):
  if len(masks) != 4:
    raise ValueError(f"{what}: expected 4 masks, got {len(masks)}")
  out = []
  for i, (m, p) in enumerate(zip(masks, params), start=1):
    t = torch.from_numpy(np.asarray(m, dtype=np.float32).copy())
    if tuple(t.shape) != tuple(p.shape):
      raise ValueError(f"{what}[{i - 1}]: shape {tuple(t.shape)} != parameter {tuple(p.shape)}")
    out.append(t)
  return out


def train_reference(
  params0: dict[str, np.ndarray],
  weight_masks: Sequence[np.ndarray],
  bias_masks: Sequence[np.ndarray],
  x: np.ndarray,
  y: np.ndarray,
  batch_order: np.ndarray,
  lr: float,
  schedule: str,
  epochs: int,
  weight_decay: float = 5e-4,
  momentum: float = 0.9,
  record_every_step: bool = True,
) -> dict[str, Any]:
  """Train one masked FourLayerMLP with the reference semantics (METHODS B.3, C).

  Args:
    params0: initial parameters, ``layer{1..4}_{weight,bias}`` float32, (out, in).
    weight_masks, bias_masks: 4 arrays each of 0/1, shaped like the weights/biases.
    x: (N, 2) float32 inputs.  y: (N,) labels in {0, 1}.
    batch_order: (epochs, batches_per_epoch, batch_size) row indices into x.
    lr, schedule, epochs: base lr, one of "constant" / "step" / "cosine", E.
    record_every_step: if True, ``losses`` holds every step's loss
      (shape (epochs * batches_per_epoch,)); if False it holds the per-epoch
      mean of the step losses (shape (epochs,)), see ``loss_granularity``.

  Returns a dict with
    ``losses`` (float64; per-step loss of the forward pass of that step,
    i.e. before its update), ``loss_granularity`` ("step" or "epoch"),
    ``final_params`` (dict, float32), ``accuracy`` (float, logit > 0 on all N),
    ``loss`` (float, mean BCE on all N with the final params),
    ``lrs`` (float64 (epochs,), lr used in each epoch).
  """
  batch_order = np.asarray(batch_order)
  if batch_order.ndim != 3 or batch_order.shape[0] != epochs:
    raise ValueError(
      f"batch_order must have shape (epochs={epochs}, batches, batch_size); got {batch_order.shape}"
    )
  n_batches = batch_order.shape[1]

  width = int(np.asarray(params0["layer1_weight"]).shape[0])
  model = FourLayerMLP(width, init=False)
  load_params(model, params0)
  layers = model.layers()
  weights = [layer.weight for layer in layers]
  biases = [layer.bias for layer in layers]
  pairs = list(
    zip(
      weights + biases,
      _as_mask_tensors(weight_masks, weights, "weight_masks")
      + _as_mask_tensors(bias_masks, biases, "bias_masks"),
    )
  )

  def apply_masks():
    with torch.no_grad():
      for p, m in pairs:
        p.mul_(m)

  x_t = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
  y_t = torch.from_numpy(np.ascontiguousarray(y, dtype=np.float32)).reshape(-1, 1)
  if x_t.ndim != 2 or x_t.shape[1] != 2 or y_t.shape[0] != x_t.shape[0]:
    raise ValueError(f"x must be (N, 2) and y (N,); got {tuple(x_t.shape)} and {np.shape(y)}")
  order_t = torch.from_numpy(batch_order.astype(np.int64))

  criterion = nn.BCEWithLogitsLoss()  # mean reduction
  apply_masks()  # at installation, before the optimiser is built (C.5)
  optimizer = torch.optim.SGD(
    model.parameters(), lr=lr, momentum=momentum, weight_decay=weight_decay
  )
  scheduler = make_scheduler(optimizer, schedule, epochs)

  step_losses = np.empty(epochs * n_batches if record_every_step else 0, dtype=np.float64)
  epoch_losses = np.empty(0 if record_every_step else epochs, dtype=np.float64)
  lrs = np.empty(epochs, dtype=np.float64)

  model.train()
  for e in range(epochs):
    lrs[e] = optimizer.param_groups[0]["lr"]
    epoch_sum = torch.zeros((), dtype=torch.float64)
    for b in range(n_batches):
      idx = order_t[e, b]
      xb, yb = x_t[idx], y_t[idx]
      optimizer.zero_grad()
      apply_masks()  # before every forward pass
      loss = criterion(model(xb), yb)
      loss.backward()  # gradients are not masked
      optimizer.step()
      apply_masks()  # after every optimiser step
      if record_every_step:
        step_losses[e * n_batches + b] = loss.item()
      else:
        epoch_sum += loss.detach()
    if not record_every_step:
      epoch_losses[e] = epoch_sum.item() / n_batches
    scheduler.step()  # once per epoch

  model.eval()
  with torch.no_grad():
    apply_masks()
    logits = model(x_t)
    full_loss = criterion(logits, y_t).item()
    pred = (logits > 0).to(torch.float32)
    accuracy = (pred == y_t).to(torch.float64).mean().item()

  return {
    "losses": step_losses if record_every_step else epoch_losses,
    "loss_granularity": "step" if record_every_step else "epoch",
    "final_params": get_params(model),
    "accuracy": float(accuracy),
    "loss": float(full_loss),
    "lrs": lrs,
  }


# ---------------------------------------------------------------------------
# Timing baseline
# ---------------------------------------------------------------------------


def _default_init_numpy(rng: np.random.Generator, width: int) -> dict[str, np.ndarray]:
  """PyTorch-default-like init (U(-1/sqrt(fan_in), +1/sqrt(fan_in))) from an explicit Generator."""
  shapes = [(width, 2), (width, width), (width, width), (1, width)]
  params = {}
  for i, (n_out, n_in) in enumerate(shapes, start=1):
    bound = 1.0 / math.sqrt(n_in)
    params[f"layer{i}_weight"] = rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32)
    params[f"layer{i}_bias"] = rng.uniform(-bound, bound, (n_out,)).astype(np.float32)
  return params


def seconds_per_run(
  width: int = 16,
  epochs: int = 1,
  x: np.ndarray | None = None,
  y: np.ndarray | None = None,
  lr: float = 0.05,
  schedule: str = "cosine",
  run_epochs: int = 50,
  num_threads: int = 1,
  warmup_steps: int = 20,
  seed: int = 0,
  repeats: int = 3,
) -> dict[str, Any]:
  """Wall-clock cost of the reference trainer for one run, on one CPU thread.

  Times ``repeats`` identical calls of ``train_reference``, each over
  ``epochs`` full epochs (390 batches of 128, dense masks, per-step loss
  recording on, the final full-data evaluation included), after a short
  untimed warm-up call of ``warmup_steps`` steps.  Without ``x, y`` it uses
  N = 49,982 standard-normal points with random labels: the cost does not
  depend on the values.

  Reported: ``seconds_per_epoch`` is the fastest repeat divided by
  ``epochs`` (the usual timeit convention: the least disturbed measurement);
  ``seconds_per_epoch_median`` and ``samples_seconds`` are there too, because
  on a shared 2-core machine the spread can be 2x.

  Extrapolation: ``projected_seconds_per_run = seconds_per_epoch * run_epochs``
  (linear in epochs; every epoch does the same work, and the one final
  evaluation that the measurement includes is amortised over the measured
  epochs, so it is slightly over-counted when ``epochs`` is small).
  """
  rng = np.random.default_rng(seed)
  if x is None or y is None:
    x = rng.standard_normal((N_DATA, 2)).astype(np.float32)
    y = (rng.random(N_DATA) < 0.5).astype(np.float32)
  n = int(np.shape(x)[0])
  params0 = _default_init_numpy(rng, width)
  w_masks = [np.ones_like(params0[f"layer{i}_weight"]) for i in range(1, 5)]
  b_masks = [np.ones_like(params0[f"layer{i}_bias"]) for i in range(1, 5)]
  order = make_batch_order(rng, n, epochs, BATCH_SIZE, BATCHES_PER_EPOCH)

  previous_threads = torch.get_num_threads()
  torch.set_num_threads(num_threads)
  try:
    if warmup_steps > 0:
      train_reference(params0, w_masks, b_masks, x, y, order[:1, :warmup_steps], lr, schedule, 1)
    samples = []
    for _ in range(max(1, repeats)):
      t0 = time.perf_counter()
      train_reference(params0, w_masks, b_masks, x, y, order, lr, schedule, epochs)
      samples.append(time.perf_counter() - t0)
  finally:
    torch.set_num_threads(previous_threads)

  elapsed = min(samples)
  per_epoch = elapsed / epochs
  return {
    "seconds_measured": elapsed,
    "samples_seconds": samples,
    "seconds_per_epoch_median": float(np.median(samples)) / epochs,
    "repeats": len(samples),
    "epochs_measured": epochs,
    "steps_measured": epochs * BATCHES_PER_EPOCH,
    "seconds_per_step": elapsed / (epochs * BATCHES_PER_EPOCH),
    "seconds_per_epoch": per_epoch,
    "run_epochs": run_epochs,
    "projected_seconds_per_run": per_epoch * run_epochs,
    "statistic": f"min over {len(samples)} repeats of one {epochs}-epoch call",
    "extrapolation": f"linear: seconds_per_epoch * {run_epochs}",
    "includes": "one final full-data evaluation; per-step loss.item(); no data generation",
    "width": width,
    "n_points": n,
    "batch_size": BATCH_SIZE,
    "batches_per_epoch": BATCHES_PER_EPOCH,
    "num_threads": num_threads,
    "torch_version": torch.__version__,
  }


if __name__ == "__main__":  # python -m third_party.torch_reference
  import json

  print(json.dumps(seconds_per_run(), indent=2))
