"""The training-semantics version: which bits a given spec trains to.

A store row is only meaningful together with the code that trained it. Every
change that alters any run's bits (data order, the layouts' arithmetic, count
formulas, which units are trained, init) bumps `SEMANTICS_VERSION`; the store
records it, sweep fingerprints include it, and a workdir holding runs of
another version is refused rather than merged (ARCHITECTURE principle 7).

History:
  1  stores before the version existed (schema v1; no weights, no spec JSON).
  2  one trainer for every method: pruning runs at widths <= 4 train in the
     per-unit layout (other bits than the old pruning trainer's batched
     matmuls); init files enter seeds by content hash, not path; `repeat`,
     `source_id` and `source_method` enter exp_id.
  3  train only the live units (cubist.compaction): fixed-mask runs and the
     at-init methods train at the compact width of their live units (other
     widths and layouts than before, hence other float sums).
  4  LTH's last round (the final ticket, a fixed mask) trains its live units
     only ("rounds_then_compact"); compact widths are 1-4 then powers of two
     (no longer 5, 6, 7, 12, 24, ...), never wider than the network.
  5  portable bits (cubist.portable): every sum of the forward pass, the loss,
     the gradients and the evaluation in an order written into the program
     (units summed left to right, the batch pairwise), no library matmul or
     reduction, so a run trains to the same bits on every x86-64 CPU with FMA;
     widths <= 16 train in the experiment-leading "dot" layout (the same bits
     as "unit"), wider ones in "gemm" (library matmuls, machine-specific bits,
     marked per row). The at-init methods score with the same arithmetic.
     ProsPr's first inner momentum buffer is detached, as in the reference.
"""

SEMANTICS_VERSION = 5
