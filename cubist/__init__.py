"""cubist: train thousands of small masked networks on the Cubist Spiral at once.

The names a researcher needs (see the README's "Use it from Python"):

    import cubist
    x, y = cubist.cubist_spiral()                       # the data set, bit-exact
    spec = cubist.ExperimentSpec(seed=0, lr=0.1, widths=(3, 3, 3))
    store = cubist.run([spec], "/tmp/w")                # train into a results store
    rows = store.rows()                                 # spec, metrics, trained weights

A pruning method is a `Method` of pure hooks (cubist.method); hand the engine a
`MethodRegistry` holding it (`methods=registry.get`). `make_train` compiles the
one trainer for a chunk of experiments directly.
"""

from cubist.data import cubist_spiral
from cubist.engine import ChunkPlan, run
from cubist.method import (
  PLAIN_METHOD,
  Hyper,
  Method,
  MethodRegistry,
  MethodStatic,
  RunState,
)
from cubist.specs import ExperimentSpec
from cubist.store import merge_stores, row_masks, row_params, row_spec
from cubist.train import TrainInputs, TrainResult, TrainStatic, make_train

__all__ = [
  "ChunkPlan",
  "ExperimentSpec",
  "Hyper",
  "Method",
  "MethodRegistry",
  "MethodStatic",
  "PLAIN_METHOD",
  "RunState",
  "TrainInputs",
  "TrainResult",
  "TrainStatic",
  "cubist_spiral",
  "make_train",
  "merge_stores",
  "row_masks",
  "row_params",
  "row_spec",
  "run",
]
