# Each target bootstraps .venv on a fresh machine, then runs.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# The CPU build of torch for the parity oracle (a plain `torch` would pull CUDA wheels).
TORCH_SPEC ?= torch==2.13.0

.PHONY: demo test bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[test]"
	touch $@

# The main job: a quick combinatorial search (widths 1..3, 10 epochs) that prints
# the sparsest model it finds, then its HTML report (the path is printed).
# DEMO_DIR keeps its store, so a rerun resumes.
DEMO_DIR ?= /tmp/cubist_demo

demo: $(VENV)/.installed
	$(PY) -m experiments.search --config=experiments/configs/search.py:quick --workdir=$(DEMO_DIR)
	$(PY) -m experiments.report --workdir=$(DEMO_DIR)

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

# The trainer (bench.json, about 9 minutes on a 2-core CPU; `python -m experiments.bench --helpfull`
# lists the sweeps), then what portable bits cost against semantics v4, measured in one run
# (bench.json's "portable": v5's plan against the last v4 commit's source, in a subprocess), then the pruning methods (bench_pruning.json: runs/s per method, the
# narrow widths before/after one trainer, the at-init methods compacted at every width of the
# family, the projected time of the overparameterisation family), then a binary end to end,
# first and second invocation (bench_binary.json: compilation paid once), then one epoch of the
# headline programs split into its parts against the machine's matmul peak (profile_step.json).
BENCH_FLAGS ?= --dense_chunks=128,256 --sparse_chunks=128,256,512 --sharded=true --per_width_widths=4,6,8

bench: $(VENV)/.installed
	$(PY) -m experiments.bench --out=bench.json $(BENCH_FLAGS)
	$(PY) -m experiments.bench_portable --out=bench.json
	$(PY) -m experiments.bench_pruning --out=bench_pruning.json $(PRUNE_BENCH_FLAGS)
	$(PY) -m experiments.bench_binary --out=bench_binary.json
	$(PY) -m experiments.profile_step --out=profile_step.json

clean:
	rm -rf $(VENV) bench.json bench_pruning.json bench_binary.json profile_step.json
