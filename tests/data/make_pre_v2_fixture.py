"""One-off: record runs of the engine before the one-trainer rewrite (issue 9).

Run at commit eebc67f (two trainers, store schema v1) with
`python tests/data/make_pre_v2_fixture.py`; it wrote pre_v2_runs.json, which
tests/test_one_trainer.py replays through the new single trainer and compares
bit for bit. The script is kept in the history only (it needs the old API).
"""

import base64
import io
import json
import tempfile

import jax
import numpy as np

from cubist import engine, masks as mask_ops, mlp
from cubist.specs import ExperimentSpec
from search import combinatorial as comb

EPOCHS = 2


def encode(tree):
  return base64.b64encode(b"".join(np.asarray(a, np.float32).tobytes()
                                   for layer in tree for a in layer)).decode()


def main():
  specs = []
  # Structured: unit layout (w <= 4) and dot layout (w = 8, 16).
  for seed, widths, lr, schedule in ((1, (3, 3, 3), 0.1, "cosine"), (2, (2, 3, 1), 0.05, "step"),
                                     (3, (4, 2, 4), 0.1, "constant"),
                                     (4, (8, 8, 8), 0.1, "cosine"), (5, (16, 16, 16), 0.05, "step")):
    specs.append(dict(seed=seed, lr=lr, schedule=schedule, width=16, widths=widths,
                      epochs=EPOCHS))
  # A phase-2 mask (unit layout) and the BENCH-95 init, structured.
  specs.append(dict(seed=6, lr=0.1, schedule="cosine", width=16, epochs=EPOCHS,
                    mask_triple=[[8, 0], [5, 0], [5, 1]], mask_widths=[4, 2, 4]))
  specs.append(dict(seed=7, lr=0.05, schedule="cosine", width=16, widths=(3, 2, 2),
                    epochs=EPOCHS, init="../shared/data/bench95_init.npz"))
  # Pruning runs (old trainer: always the dot layout).
  for seed, method, width, target in ((8, "snip", 4, 20), (9, "imp", 16, 40),
                                      (10, "synflow", 6, 30), (11, "lth", 4, 20),
                                      (12, "rigl", 8, 40), (13, "grasp", 3, 15)):
    specs.append(dict(seed=seed, lr=0.1, schedule="cosine", width=width, epochs=EPOCHS,
                      family="prune", method=method, target_nnz=target))
  specs.append(dict(seed=14, lr=0.1, schedule="cosine", width=8, epochs=EPOCHS, family="prune",
                    method="vd", strength=30 / 49_982))

  built = []
  for kwargs in specs:
    kwargs = dict(kwargs)
    triple, widths = kwargs.pop("mask_triple", None), kwargs.pop("mask_widths", None)
    if triple is not None:
      kwargs["mask"] = comb.network_masks(tuple(widths), tuple(map(tuple, triple)), 16)
    built.append(ExperimentSpec(**kwargs))

  records = {}

  def keep(chunk, inputs, result):
    for index, spec in enumerate(chunk):
      params = jax.tree.map(lambda a: np.asarray(a[index]), result.params)
      records[spec.exp_id()] = dict(params=encode(params),
                                    accuracy=float(np.asarray(result.accuracy)[index]),
                                    loss=float(np.asarray(result.loss)[index]),
                                    epoch_loss=[float(v) for v in
                                                np.asarray(result.epoch_loss)[index]])

  plan = engine.ChunkPlan()
  with tempfile.TemporaryDirectory() as workdir:
    for spec in built:  # one at a time: chunk-independent anyway
      engine.run([spec], workdir + f"/{spec.exp_id()}", plan=plan, on_chunk=keep,
                 progress_stream=io.StringIO()).close()
  out = []
  for kwargs, spec in zip(specs, built):
    padded = mask_ops.occupied_width(spec.masks())
    out.append(dict(spec=kwargs, occupied_width=padded,
                    formulation=plan.formulation(padded) if spec.family != "prune" else "dot",
                    **records[spec.exp_id()]))
  with open("tests/data/pre_v2_runs.json", "w") as f:
    json.dump({"made_at_commit": "eebc67f", "epochs": EPOCHS, "runs": out}, f, indent=1)


if __name__ == "__main__":
  main()
