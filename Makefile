# pointseg — `make help` lists the targets.
SHELL := /bin/bash
PY := .venv/bin/python
STUDY ?= experiments/studies/points-grid.yaml
TRIALS ?=
STORAGE ?=
WORKERS ?= 1
SEEDS ?= 0 1 2
SEED ?= 0
DATA ?=
FILE ?= experiments/studies/convergence.yaml
DEADLINE ?= inf
comma := ,
space := $(subst ,, )

.PHONY: help setup data test test-explore test-all demo best bench bench-predict sweep report experiments study dashboard clean
help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

# uv from PATH, else the one pip installs (run as `python3 -m uv`, wherever pip put its script)
.venv/.synced: pyproject.toml uv.lock
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || \
	  python3 -m pip install --quiet --user uv 2>/dev/null || python3 -m pip install --quiet uv
	@if command -v uv >/dev/null 2>&1; then uv sync --frozen; else python3 -m uv sync --frozen; fi
	@touch $@

setup: .venv/.synced  ## create .venv from uv.lock (bootstraps uv with pip when missing)

data:  ## make the Dubai data set available under data/ (link to ../shared, else instructions)
	@python3 pointseg/data/fetch.py

test: setup  ## set up, lint (ruff) and run the test suite (what CI runs); tests on the real data skip without it
	-@python3 pointseg/data/fetch.py
	$(PY) -m ruff check .
	$(PY) -m pytest -q

test-explore: setup  ## the property tests on new random cases (600 each) instead of CI's fixed draw
	HYPOTHESIS_PROFILE=explore $(PY) -m pytest -q tests/test_properties.py

test-all: setup data  ## also the slow end-to-end tests
	$(PY) -m pytest -q -m ""

demo: setup data  ## the main job: train from 10 points per class on Dubai, evaluate on the test tile
	$(PY) -m pointseg train --config experiments/points.yaml

best: setup data  ## the best measured points recipe, seed SEED: a 20-mixed-click teacher, then its class-balanced self-trained student (2 runs); on your data: DATA=my-scenes.yaml
	$(PY) -m pointseg best $(if $(DATA),--data $(DATA) )seed=$(SEED)

bench: setup data  ## pfCE vs cross-entropy speed, trainer vs bare loop throughput
	$(PY) -m pointseg.bench.training

bench-predict: setup  ## whole-scene predict on 16 and 100 Mpx scenes: time, Mpx/s, peak memory
	$(PY) -m pointseg.bench.predict

experiments: setup data  ## the default method at 1/2/5/10/20/50 clicks per class vs pfCE alone and full masks, seeds $(SEEDS) (resumable), with the headline and each part's gain
	$(PY) -m sweeps experiments/studies/label-efficiency-crf.yaml@$(subst $(space),$(comma),$(strip $(SEEDS)))
	$(PY) -m analysis.summarize label-efficiency-crf --headline

study: setup data  ## any study file's runs as Optuna units: FILE=… (or several) WORKERS=k STORAGE=postgresql://… DEADLINE=minutes (resumable)
	$(if $(filter-out 1,$(WORKERS)),OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} )$(PY) -m sweeps $(FILE) --workers $(WORKERS) --deadline-min $(DEADLINE)$(if $(STORAGE), --storage $(STORAGE))
	@for f in $(FILE); do p=$${f%%[:@]*}; grep -q '^search:' $$p || $(PY) -m analysis.summarize $$(basename $$p .yaml); done

dashboard: setup  ## optuna-dashboard on the studies' storage (STORAGE=…, default runs/studies/optuna.db), http://127.0.0.1:8080
	$(PY) -m sweeps.dashboard $(if $(STORAGE),--storage $(STORAGE))

sweep: setup data  ## a study file's Optuna search (STUDY=… TRIALS=… STORAGE=… WORKERS=…)
	$(PY) -m sweeps $(STUDY) $(if $(TRIALS),--trials $(TRIALS)) $(if $(STORAGE),--storage $(STORAGE)) --workers $(WORKERS)

report: setup  ## tables and plots from the stored runs and studies into report/
	$(PY) -m analysis.report

clean:  ## remove runs/ and W&B files (keeps data/ and .venv)
	rm -rf runs wandb
