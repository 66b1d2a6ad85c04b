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

demo: $(VENV)/.installed
	$(PY) -m experiments.train --config=experiments/configs/train.py:quick --workdir=/tmp/cubist_demo

test: $(VENV)/.installed
	$(PY) -m pytest -q tests

bench: $(VENV)/.installed
	$(PY) -m cubist.bench --out=bench.json

clean:
	rm -rf $(VENV) bench.json
