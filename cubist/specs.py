"""Experiment specs: one flat, frozen record per training run (ARCHITECTURE principle 1).

A spec names everything a run needs. Its *static* fields (method, epochs,
batch size, shared order, count mode, method options, and the padded width
the engine derives from its mask) decide the compiled program; everything
else (seed, learning rate, schedule, mask, initial weights, target, strength)
travels as arrays with a leading experiment axis.

Identity: `exp_id` is a stable hash of what the run is (every field, the mask
bits, and an init file by the hash of its *contents*, never its path), so a
restarted sweep recognises finished runs and the same run gets the same id on
any machine. `to_json`/`from_json` round-trip a spec exactly: the store keeps
it with every row (ARCHITECTURE principle 7).

Seeds: `run_seed(*parts)` turns what a run is into its seed; `run_keys(seed)`
splits a seed into its init and data-order streams; `method_key(seed)` is the
method's own stream.
"""

from __future__ import annotations

import base64
import dataclasses
import functools
import hashlib
import json
import os
from typing import Callable

import jax
import numpy as np

from cubist import data, mlp, order, schedules
from cubist import masks as mask_ops
from cubist.method import COUNT_MODES, PLAIN, SETTABLE_OPTIONS, Method, MethodStatic, plain_only
from cubist.mlp import Layer, Params
from cubist.semantics import SEMANTICS_VERSION

RANDOM_INIT = "random"

MethodLookup = Callable[[str], Method]


@dataclasses.dataclass(frozen=True)
class ExperimentSpec:
  """One training run.

  What is trained:
  seed: the experiment's own PRNG seed (init, data order and the method's
    randomness derive from it only).
  lr: base learning rate (finite, > 0). schedule: "constant", "cosine" or "step".
  width: full hidden width w of the model the network lives in (16 for the
    combinatorial search). The init is drawn at this width (§B.2).
  widths: hidden widths (d1, d2, d3) of a structured mask inside `width`
    (top-left blocks); None with `mask` None means the dense width-w network.
  mask: explicit bool masks (a Params at `width`), e.g. a phase-2 mask or a
    learned mask to retrain; excluded from dataclass equality but part of
    `exp_id` through its bits.
  epochs, batch_size: training length and minibatch size (50, 128).
  init: "random" (PyTorch default at `width` from the seed) or the path of an
    npz initialisation such as ../shared/data/bench95_init.npz (sliced to
    `width`); it enters `exp_id` by the hash of the file's contents.
  shared_order: use the chunk-independent shared data order (see TrainStatic).
  data_order: how epoch permutations are drawn, "feistel" or "sort" (cubist.order).
  method: the training method's registered name: "plain" (fixed-mask training
    of `masks()`) or a pruning method (e.g. "imp", "snip"), which starts from
    `masks()` and prunes towards `target_nnz` weights.
  target_nnz, count_mode, strength, threshold, method_options: the method's
    settings (cubist.method: Hyper, MethodStatic); `method_options` is a tuple
    of (name, value) pairs overriding MethodStatic fields (e.g. ("clean", True)).

  What the run is for (labels; they enter exp_id and the store, not the training):
  family: the experiment family, e.g. "train", "phase1", "phase2", "overparam",
    "fixed", "sos", "study", "retrain".
  repeat: the index of this run among runs that differ only by seed.
  mask_config: the search's per-layer mask indices "n1:i1,n2:i2,n3:i3".
  source_id, source_method: for a retraining run, the exp_id and method of the
    run whose learned mask it retrains.
  """

  seed: int
  lr: float
  schedule: str = "cosine"
  width: int = 16
  widths: tuple[int, int, int] | None = None
  mask: Params | None = dataclasses.field(default=None, compare=False, repr=False)
  epochs: int = 50
  batch_size: int = data.BATCH_SIZE
  init: str = RANDOM_INIT
  shared_order: bool = False
  data_order: str = "feistel"
  method: str = PLAIN
  target_nnz: int | None = None
  count_mode: str = "reference"
  strength: float = 0.0
  threshold: float = 3.0
  method_options: tuple = ()
  family: str = "train"
  repeat: int = 0
  mask_config: str | None = None
  source_id: str | None = None
  source_method: str | None = None

  def masks(self) -> Params:
    """The full bool masks at `width`, biases included."""
    if self.mask is not None:
      return tuple(Layer(np.asarray(l.weight, bool), np.asarray(l.bias, bool)) for l in self.mask)
    widths = self.widths if self.widths is not None else (self.width,) * 3
    return mask_ops.structured_masks(widths, self.width)

  def num_weights(self) -> int:
    """N: the number of weights its starting mask allows (what pruning counts refer to)."""
    return int(sum(np.asarray(layer.weight).sum() for layer in self.masks()))

  def hidden_widths(self) -> tuple[int, int, int]:
    """(d1, d2, d3): the number of used hidden units per layer (masks.used_units)."""
    if self.mask is None:
      return self.widths if self.widths is not None else (self.width,) * 3
    return tuple(int(used.sum()) for used in mask_ops.used_units(self.masks()))

  def init_id(self) -> str:
    """ "random", or the npz file's content hash (what identifies a fixed init)."""
    return init_id(self.init)

  def method_static(self) -> MethodStatic:
    """The MethodStatic of this run (what its method's compiled program depends on)."""
    static = MethodStatic(
      count_mode=self.count_mode,
      random_init=self.init == RANDOM_INIT,
      epochs=self.epochs,
      batches_per_epoch=data.NUM_POINTS // self.batch_size,
      batch_size=self.batch_size,
    )
    return dataclasses.replace(static, **dict(self.method_options))

  def to_dict(self) -> dict:
    """Every field as JSON-ready values; the mask as packed bits and shapes."""
    fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
    fields["widths"] = None if self.widths is None else [int(v) for v in self.widths]
    fields["method_options"] = [list(pair) for pair in self.method_options]
    if self.mask is not None:
      blob, shapes = mask_ops.pack_masks(self.masks())
      fields["mask"] = {"bits": base64.b64encode(blob).decode(), "shapes": json.loads(shapes)}
    return fields

  def to_json(self) -> str:
    return json.dumps(self.to_dict(), sort_keys=True)

  @classmethod
  def from_dict(cls, fields: dict) -> "ExperimentSpec":
    """Inverse of `to_dict`; a one-line ValueError names an unknown field."""
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(fields) - known)
    if unknown:
      raise ValueError(f"unknown spec field(s) {unknown}; known: {sorted(known)}")
    fields = dict(fields)
    if fields.get("widths") is not None:
      fields["widths"] = tuple(int(v) for v in fields["widths"])
    fields["method_options"] = tuple(tuple(pair) for pair in fields.get("method_options", ()))
    if fields.get("mask") is not None:
      packed = fields["mask"]
      fields["mask"] = mask_ops.unpack_masks(
        base64.b64decode(packed["bits"]), json.dumps(packed["shapes"])
      )
    return cls(**fields)

  @classmethod
  def from_json(cls, text: str) -> "ExperimentSpec":
    return cls.from_dict(json.loads(text))

  def exp_id(self) -> str:
    """Stable hash of what the run is: every field, the mask bits, the init's contents."""
    fields = self.to_dict()
    fields.pop("mask")
    fields["init"] = self.init_id()
    digest = hashlib.sha1(json.dumps(fields, sort_keys=True).encode())
    if self.mask is not None:
      digest.update(mask_ops.pack_masks(self.masks())[0])
    return digest.hexdigest()[:20]


def init_id(init: str) -> str:
  """ "random", or "sha256:<16 hex>" of an init file's bytes (cached per path and mtime)."""
  if init == RANDOM_INIT:
    return RANDOM_INIT
  try:
    stat = os.stat(init)
  except OSError as error:
    raise ValueError(f"init file {init!r} cannot be read: {error.strerror}") from None
  return _content_hash(os.path.realpath(init), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=64)
def _content_hash(path: str, mtime_ns: int, size: int) -> str:
  del mtime_ns, size  # cache keys: a changed file is hashed again
  digest = hashlib.sha256()
  try:
    with open(path, "rb") as file:
      for block in iter(lambda: file.read(1 << 20), b""):
        digest.update(block)
  except OSError as error:
    raise ValueError(f"init file {path!r} cannot be read: {error.strerror}") from None
  return "sha256:" + digest.hexdigest()[:16]


def init_label(init: str) -> str:
  """What the store shows for an init: 'random' or the npz file's name."""
  return init if init == RANDOM_INIT else os.path.basename(init)


def run_seed(*parts) -> int:
  """A stable 31-bit seed from what a run is (e.g. family, candidate, setting, repeat)."""
  return int(hashlib.sha1("|".join(map(str, parts)).encode()).hexdigest()[:8], 16) & 0x7FFFFFFF


def run_keys(seed: int) -> tuple[jax.Array, jax.Array]:
  """(init_key, order_key): the two independent streams of an experiment's seed."""
  key = jax.random.PRNGKey(seed)
  return jax.random.fold_in(key, 0), jax.random.fold_in(key, 1)


def method_key(seed: int) -> jax.Array:
  """The method's own PRNG stream of a seed (streams 0 and 1 are init and data order)."""
  return jax.random.fold_in(jax.random.PRNGKey(seed), 2)


# --- Validation ---------------------------------------------------------------


def validate(spec: ExperimentSpec, methods: MethodLookup = plain_only) -> None:
  """One-line ValueError naming the offending field, before anything compiles."""
  if not isinstance(spec.width, (int, np.integer)) or spec.width < 1:
    raise ValueError(f"width={spec.width} must be an integer >= 1")
  if not (np.isfinite(spec.lr) and spec.lr > 0):
    raise ValueError(f"lr={spec.lr} must be finite and > 0")
  schedules.schedule_id(spec.schedule)
  if spec.data_order not in order.ORDER_METHODS:
    raise ValueError(f"data_order={spec.data_order!r} is unknown; known: {order.ORDER_METHODS}")
  if spec.epochs < 1:
    raise ValueError(f"epochs={spec.epochs} must be >= 1")
  if not 1 <= spec.batch_size <= data.NUM_POINTS:
    raise ValueError(f"batch_size={spec.batch_size} must be in 1..{data.NUM_POINTS}")
  if spec.repeat < 0:
    raise ValueError(f"repeat={spec.repeat} must be >= 0")
  if spec.widths is not None:
    mask_ops.validate_widths(spec.widths, spec.width)
  if spec.mask is not None:
    mask_ops.validate_masks(spec.mask, spec.width)
  if spec.init != RANDOM_INIT:
    mlp.load_init(spec.init, spec.width)  # raises for a missing file, keys or shapes
  validate_method(spec, methods(spec.method))


def validate_method(spec: ExperimentSpec, method: Method) -> None:
  """The method settings of a spec: target, count mode, strength, options."""
  if spec.count_mode not in COUNT_MODES:
    raise ValueError(f"count_mode={spec.count_mode!r} is unknown; known: {COUNT_MODES}")
  for name, _ in spec.method_options:
    if name not in SETTABLE_OPTIONS:
      raise ValueError(
        f"method_options: {name!r} is not a settable option; known: {list(SETTABLE_OPTIONS)}"
      )
  if not (np.isfinite(spec.strength) and spec.strength >= 0):
    raise ValueError(f"strength={spec.strength} must be finite and >= 0")
  if method.is_plain:
    return
  num_weights = spec.num_weights()
  if method.uses_strength and spec.target_nnz is None:
    return  # VD, L0: the sparsity emerges from the strength
  if spec.target_nnz is None or not 1 <= spec.target_nnz < num_weights:
    raise ValueError(
      f"target_nnz={spec.target_nnz} must be in 1..{num_weights - 1} "
      f"(the {num_weights} weights of width {spec.width})"
    )


def validate_all(specs, methods: MethodLookup = plain_only) -> None:
  """Validate every spec; the error names the first bad spec's position."""
  checked_inits = set()
  for index, spec in enumerate(specs):
    try:
      if spec.init != RANDOM_INIT and (spec.init, spec.width) in checked_inits:
        spec = dataclasses.replace(spec, init=RANDOM_INIT)  # file already checked
      validate(spec, methods)
    except ValueError as error:
      raise ValueError(f"spec {index}: {error}") from None
    if spec.init != RANDOM_INIT:
      checked_inits.add((spec.init, spec.width))


def sweep_fingerprint(specs) -> str:
  """A hash of the whole sweep (its sorted exp_ids) under this code's training semantics."""
  digest = hashlib.sha1(f"semantics {SEMANTICS_VERSION}".encode())
  for exp_id in sorted(spec.exp_id() for spec in specs):
    digest.update(exp_id.encode())
  return digest.hexdigest()
