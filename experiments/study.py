r"""Run the whole study (the authors' three launchers) as one resumable plan, or dry-run it.

  python -m experiments.study --config=experiments/configs/study.py:reference --workdir=DIR --dry_run
  python -m experiments.study --config=experiments/configs/study.py:reference --workdir=DIR

`--dry_run` prints the experiments per family and launcher, how many are done
in DIR (its stores read, nothing created) and the projected time of the rest
from bench.json / bench_pruning.json at the repository root (and on a GPU from
bench_gpu.json / bench_pruning_gpu.json when they exist). Without it every
family trains into DIR/<family>, phase 1s first; the same command resumes.

Scale out: `--num_shards=N --shard_index=i` on N nodes sharing DIR (every
family split by exp_id, one store file per shard; the searches wait for the
other shards at their level boundaries). `--distributed` joins the processes
with jax.distributed.initialize (cluster auto-detection, or
--coordinator_address/--num_processes/--process_id) and makes each process one
shard. Bad input is one line `error: ...` on stderr and exit status 2
(experiments/cli.py), before the workdir is created or changed.
"""

import json
from pathlib import Path

import jax
from absl import flags
from ml_collections import config_flags

from cubist import engine
from cubist import store as store_ops
from experiments import cli
from search import study, study_cost, study_runner, study_stores

_CONFIG = config_flags.DEFINE_config_file(
  "config", None, "Config file (experiments/configs/study.py).", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
  "workdir", None, "Directory of the study (one sub-workdir per family)."
)
_DRY_RUN = flags.DEFINE_bool(
  "dry_run", False, "Print counts, done runs and projections; train nothing."
)
_NUM_SHARDS = flags.DEFINE_integer("num_shards", 1, "Split every family into this many shards.")
_SHARD_INDEX = flags.DEFINE_integer("shard_index", 0, "Which shard this process runs.")
_DISTRIBUTED = flags.DEFINE_bool(
  "distributed", False, "Join hosts with jax.distributed; each process is one shard."
)
_COORDINATOR = flags.DEFINE_string(
  "coordinator_address", None, "jax.distributed coordinator host:port (default: auto-detect)."
)
_NUM_PROCESSES = flags.DEFINE_integer("num_processes", None, "jax.distributed process count.")
_PROCESS_ID = flags.DEFINE_integer("process_id", None, "jax.distributed id of this process.")
_POLL_SECONDS = flags.DEFINE_float(
  "poll_seconds",
  5.0,
  "How often a sharded search checks whether the other shards finished a level.",
)
flags.mark_flags_as_required(["config", "workdir"])
flags.adopt_module_key_flags(cli)  # --help lists --debug too

# (label, trainer bench, pruning bench) at the repository root, as `make bench` writes them.
BENCH_FILES = (
  ("this machine", "bench.json", "bench_pruning.json"),
  ("GPU", "bench_gpu.json", "bench_pruning_gpu.json"),
)


def _read_json(path: Path):
  if not path.is_file():
    return None
  try:
    return json.loads(path.read_text())
  except ValueError as error:
    raise ValueError(f"{path} is not JSON ({error}); run `make bench` again") from None


def measured_rates(root: Path = cli.ROOT) -> tuple:
  """Rates per machine with a bench file: this machine if measured, the GPU only when
  bench_gpu.json exists."""
  out = []
  for label, trainer, pruning in BENCH_FILES:
    bench, pruning_bench = _read_json(root / trainer), _read_json(root / pruning)
    if (label == "GPU" and bench is None) or (bench is None and pruning_bench is None):
      continue
    files = " + ".join(
      name for name, data in ((trainer, bench), (pruning, pruning_bench)) if data is not None
    )
    out.append(study_cost.rates_from_bench(label, bench, pruning_bench, files))
  return tuple(out)


def _shard() -> tuple[int, int]:
  """(shard_index, num_shards): the flags', or this jax process's with --distributed."""
  if not _DISTRIBUTED.value:
    return cli.check_shards(_SHARD_INDEX.value, _NUM_SHARDS.value)
  if _NUM_SHARDS.value != 1 or _SHARD_INDEX.value != 0:
    raise cli.UserError(
      "flag",
      "--distributed",
      "makes each jax process one shard",
      "drop --num_shards/--shard_index",
    )
  arguments = {
    name: value
    for name, value in (
      ("coordinator_address", _COORDINATOR.value),
      ("num_processes", _NUM_PROCESSES.value),
      ("process_id", _PROCESS_ID.value),
    )
    if value is not None
  }
  jax.distributed.initialize(**arguments)
  return cli.check_shards(jax.process_index(), jax.process_count())


def main(argv):
  cli.no_arguments(argv)
  config = study.StudyConfig.from_dict(_CONFIG.value.to_dict())
  config.validate()
  if _DRY_RUN.value:
    rates = measured_rates()
    plans = study_cost.plan(config, _WORKDIR.value, rates)
    print(study_cost.format_plan(config, _WORKDIR.value, plans, rates))
    return
  shard_index, num_shards = _shard()
  workdir = cli.check_workdir(_WORKDIR.value)
  for target in study_stores.store_targets(config, workdir, shard_index, num_shards):
    store_ops.check_layout(target.path)
    store_ops.check_writable(target.path, target.sweep_name, target.fingerprint)
  stop = cli.StopRequest().install()  # Ctrl-C / SIGTERM: stop after the committed chunk
  created = not workdir.exists()
  try:
    summaries = study_runner.run(
      config,
      workdir,
      shard_index=shard_index,
      num_shards=num_shards,
      poll_seconds=_POLL_SECONDS.value,
      stop=stop,
    )
  except engine.Interrupted:
    cli.interrupted(f"every finished run in {workdir} is kept")
  except KeyboardInterrupt:  # a second Ctrl-C: the chunk in flight was never committed
    cli.interrupted(f"the chunk in flight was abandoned; every finished run in {workdir} is kept")
  except BaseException:
    if created:
      cli.remove_if_empty(workdir)
    raise
  print(study_runner.format_results(summaries))


if __name__ == "__main__":
  cli.run(main)
