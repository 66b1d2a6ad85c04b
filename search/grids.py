"""The experiment grids of the two studies, in one place (METHODS §C.3, §D, §E.0, §F, §G).

Configs (experiments/configs/), the pruning families, the study plan and the
benchmarks' projections all read these, so a grid is written once.
"""

from __future__ import annotations

# Combinatorial search (§C.3, §D): every candidate trained with each lr x schedule.
SEARCH_LRS = (0.05, 0.1)
SCHEDULES = ("cosine", "step", "constant")
SEARCH_TARGETS = (0.95, 0.995)
# The released 99.5% phase-2 restrictions (§D.3): n1 + n2 + n3 < cap_sum and the
# first cap_w2 W2 masks per n2; (random init, fixed init).
CAP_SUM = {"random": 33, "fixed": 31}
CAP_W2 = {"random": 3, "fixed": 6}

# Pruning (§E.0, §G.2, §G.3).
PRUNING_LRS = (0.05, 0.1, 0.2)
OVERPARAM_WIDTHS = (3, 4, 5, 6, 7, 8, 16, 32, 64, 128, 256)
OVERPARAM_TARGETS = tuple(range(15, 27)) + (30, 33, 37, 40, 44, 50, 53, 55, 57, 60, 65)
FIXED_TARGETS = {
  0.95: tuple(range(15, 27)),
  0.995: (16, 18, 20, 22, 24, 25, 26, 27, 28, 29, 30, 32, 34, 36),
}
FIXED_REPEATS = 5

# State of Sparsity at width 16 (§F): weight targets from 95% to 50% sparse.
SOS_TARGETS = (28, 40, 56, 84, 112, 168, 224, 280)
