"""Train a grid of structured networks on the Cubist Spiral.

Command (paper settings, 2 x 3 x 3 x 3 = 54 runs of 50 epochs):

  python -m experiments.train --config=experiments/configs/train.py --workdir=/tmp/cubist_train

Expected runtime: about a minute on a 2-core CPU (54 runs; compiling the three
width buckets is a good part of it), seconds on a GPU. Expected result: accuracy
grows with width; (3,3,3) networks land between 50% and ~80% (the best of six
settings in our phase-1 search was 79.7%), the wider ones higher.

Quick variant (2 epochs, a few seconds after compilation):

  python -m experiments.train --config=experiments/configs/train.py:quick --workdir=/tmp/cubist_quick

Override any field from the command line, e.g. `--config.seeds='(0,1,2,3)'`.
"""

import ml_collections

from experiments.configs.common import parse_options
from search import grids


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  options = parse_options(arg, {"quick"}, "train")
  config = ml_collections.ConfigDict()
  config.name = "train"
  config.width = 16  # full width the networks live in
  config.widths = ((16, 16, 16), (8, 8, 8), (3, 3, 3))  # (d1, d2, d3) structured masks
  config.seeds = (0, 1)
  config.lrs = grids.SEARCH_LRS
  config.schedules = grids.SCHEDULES
  config.epochs = 50
  config.batch_size = 128
  config.init = "random"  # or the path of an npz such as ../shared/data/bench95_init.npz
  config.shared_order = False
  if "quick" in options:
    config.name = "train-quick"
    config.widths = ((8, 8, 8), (4, 4, 4), (3, 3, 3))
    config.epochs = 2
  return config
