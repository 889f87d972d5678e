# Every target sets itself up on a fresh machine: a venv, torch (CPU wheel) only if it is missing,
# then this project with its dev, zoo, sweep, images, docs and video extras (the rl-zoo3, sweep, MNIST-5k
# and RecordVideo tests and the documentation build run in CI too; RLlib has a venv of its own).
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_SPEC ?= torch==2.13.0
STAMP := $(VENV)/.installed

# Tests run in one process per core (pytest-xdist), a whole test file per process (module fixtures and
# per-process caches stay shared within a file); every test is single-threaded (tests/conftest.py).
# PYTEST_PARALLEL= (empty) runs them in one process.
PYTEST_PARALLEL ?= -n 2 --dist loadfile

.PHONY: install demo pretrain test test-fast test-kernels test-rllib lint lint-imports clean results results-quick docs

MAIN_EXTRAS := dev,zoo,sweep,images,docs,video

# $(call make_venv,VENV,EXTRAS): the venv, torch (CPU wheel) only if missing, this project with EXTRAS.
define make_venv
	test -x $(1)/bin/python || $(PYTHON) -m venv $(1)
	$(1)/bin/python -m pip install -q --upgrade pip
	$(1)/bin/python -c "import torch" 2>/dev/null || $(1)/bin/python -m pip install -q "$(TORCH_SPEC)"
	$(1)/bin/python -m pip install -q -e ".[$(2)]"
	touch $(1)/.installed
endef

$(STAMP): pyproject.toml
	$(call make_venv,$(VENV),$(MAIN_EXTRAS))

install: $(STAMP)

# Ray RLlib lives in a venv of its own: ray 2.60's rllib extra pins gymnasium==1.2.2, and the main
# venv stays on the newest gymnasium.
RLLIB_VENV ?= .venv-rllib
RLLIB_PY := $(RLLIB_VENV)/bin/python
RLLIB_STAMP := $(RLLIB_VENV)/.installed

RLLIB_EXTRAS := dev,rllib

$(RLLIB_STAMP): pyproject.toml
	$(call make_venv,$(RLLIB_VENV),$(RLLIB_EXTRAS))

## The main job, end to end on the embedded default dataset (MNIST-1D).
demo: $(STAMP)
	$(PY) train_agent.py demo --run-dir runs/demo

pretrain: $(STAMP)
	$(PY) train_agent.py pretrain --dataset mnist1d --run-dir runs/pretrain

## The whole suite, slow tests included, after the import contracts (pyproject.toml [tool.importlinter]).
test: $(STAMP) lint-imports
	$(PY) -m pytest -q $(PYTEST_PARALLEL)

## Day-to-day subset: everything but the slow end-to-end tests.
test-fast: $(STAMP)
	$(PY) -m pytest -q -m "not slow" $(PYTEST_PARALLEL)

## The learning tests again under another CPU's kernels: MKL's conditional-numerical-reproducibility
## mode changes the last bits of float32 results as another CPU would, so the pre-trained models and
## the policies learned on them differ. A result tuned to one machine fails here before it lands.
KERNELS_ENV ?= MKL_CBWR=COMPATIBLE
test-kernels: $(STAMP)
	$(KERNELS_ENV) $(PY) -m pytest -q -m learning $(PYTEST_PARALLEL)

## The RLlib backend (PPO, DQN: train, resume, evaluate, beat random) and the env's own tests, in
## .venv-rllib: the project on gymnasium 1.2.2.
test-rllib: $(RLLIB_STAMP)
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(RLLIB_PY) -m pytest -q tests/test_rllib.py \
		tests/test_vector_env.py

## Every CPU number and figure of the README's results sections, into benchmarks/results/, then the
## README's generated blocks (resumable: current parts are skipped; see benchmarks/reproduce.py).
results: $(STAMP)
	$(PY) -m benchmarks reproduce
	$(PY) -m benchmarks reproduce --readme

## The same pipeline with fewer steps and seeds, into benchmarks/results/quick/ (ignored by git).
results-quick: $(STAMP)
	$(PY) -m benchmarks reproduce --quick

## The documentation site (mkdocs.yml, docs/) into site/; --strict: a broken reference or a docstring
## griffe cannot parse fails the build. The env variables hide MkDocs 2 / Material notices, not warnings.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 DISABLE_MKDOCS_2_WARNING=true $(PY) -m mkdocs build --strict --site-dir site

lint: $(STAMP) lint-imports
	$(VENV)/bin/ruff check .

## The import contracts: train_agent -> agents -> dynalay_env, no cycle inside a package, dynalay_env
## free of agents, SB3, Ray and Optuna (pyproject.toml [tool.importlinter]).
lint-imports: $(STAMP)
	$(VENV)/bin/lint-imports

clean:
	rm -rf $(VENV) $(RLLIB_VENV) $(PEERS_VENV) runs .pytest_cache site

.PHONY: models wheel-test

## The default main models shipped in the wheel (mnist1d, digits, synthetic, mnist5k, mnist5k_noisy_labels,
## mnist5k_corrupted, and experts-mnist5k: the expert model of DynaLay-MNIST5k-Experts-v0): pre-trained by
## the project's own recipes through the user cache (a cached model is reused), copied into
## dynalay_env/models/ with a manifest of their provenance (dynalay_env/cache.py).
models: $(STAMP)
	$(PY) -m dynalay_env.cache mnist1d digits synthetic mnist5k mnist5k_noisy_labels mnist5k_corrupted experts-mnist5k
	$(PY) -c "from dynalay_env.datasets import ship_mnist1d; print(ship_mnist1d())"

## The wheel outside the repository: build it, install it non-editable into a fresh venv, and from an
## empty folder with an empty model cache run gym.make + a step (under 5 s), `dynalay train`,
## `dynalay evaluate` and `python -m train_agent` (python -m benchmarks wheel_first_use).
wheel-test: $(STAMP)
	$(PY) -m benchmarks wheel_first_use

# Other RL libraries as their users call them (TorchRL, skrl, Tianshou; Minari datasets and offline RL)
# live in a venv of their own: the main venv and `make test` stay free of them.
PEERS_VENV ?= .venv-peers
PEERS_PY := $(PEERS_VENV)/bin/python
PEERS_STAMP := $(PEERS_VENV)/.installed

PEERS_EXTRAS := dev,peers

$(PEERS_STAMP): pyproject.toml
	$(call make_venv,$(PEERS_VENV),$(PEERS_EXTRAS))

## The env under TorchRL, skrl, Tianshou and Minari (tests/test_peers_*.py), in .venv-peers; a missing
## library fails these tests here instead of skipping them.
.PHONY: test-peers
test-peers: $(PEERS_STAMP)
	DYNALAY_REQUIRE_PEERS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PEERS_PY) -m pytest -q $(PYTEST_PARALLEL) \
		tests/test_peers_*.py
	# ... and their learning tests again under another CPU's kernels, as make test-kernels does.
	DYNALAY_REQUIRE_PEERS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(KERNELS_ENV) $(PEERS_PY) -m pytest -q \
		$(PYTEST_PARALLEL) -m learning tests/test_peers_*.py
