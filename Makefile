# Every target sets itself up on a fresh machine: a venv, torch (CPU wheel) only if it is missing,
# then this project with its dev, zoo, sweep, images and docs extras (the rl-zoo3, sweep and MNIST-5k
# tests and the documentation build run in CI too).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

.PHONY: install demo pretrain test test-fast lint clean results results-quick docs

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -c "import torch" 2>/dev/null || $(PY) -m pip install -q "$(TORCH_SPEC)"
	$(PY) -m pip install -q -e ".[dev,zoo,sweep,images,docs,video]"
	touch $(STAMP)

install: $(STAMP)

## The main job, end to end on the embedded default dataset (MNIST-1D).
demo: $(STAMP)
	$(PY) train_agent.py demo --run-dir runs/demo

pretrain: $(STAMP)
	$(PY) train_agent.py pretrain --dataset mnist1d --run-dir runs/pretrain

## The whole suite, slow tests included.
test: $(STAMP)
	$(PY) -m pytest -q

## Day-to-day subset: everything but the slow end-to-end tests.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow"

## Every CPU number and figure of the README's results sections, into benchmarks/results/, then the
## README's generated blocks (resumable: current parts are skipped; see benchmarks/reproduce.py).
results: $(STAMP)
	$(PY) benchmarks/reproduce.py
	$(PY) benchmarks/reproduce.py --readme

## The same pipeline with fewer steps and seeds, into benchmarks/results/quick/ (ignored by git).
results-quick: $(STAMP)
	$(PY) benchmarks/reproduce.py --quick

## The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken reference or a docstring
## griffe cannot parse fails the build. The env variables hide MkDocs 2 / Material notices, not warnings.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(PY) -m mkdocs build --strict --site-dir site

lint: $(STAMP)
	$(VENV)/bin/ruff check .

clean:
	rm -rf $(VENV) runs .pytest_cache site
