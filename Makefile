# make train / make test install what they need into .venv first.
VENV ?= .venv
PY := $(VENV)/bin/python
ARGS ?=
PYTEST_ARGS ?=

# The offline datasets beside this checkout, when they are there (see README "Data").
SHARED_DATA := $(abspath ../shared/datasets)
ifneq ($(wildcard $(SHARED_DATA)),)
export CNNSTUDY_DATA_DIR ?= $(SHARED_DATA)
endif

.PHONY: setup train sweep report test check lint tensorboard screenshots bench gpu-check clean slurm-up slurm-down

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

setup: $(VENV)/.installed

train: setup
	$(PY) -m cnnstudy.train $(ARGS)

sweep: setup  # the project's standard study: BN vs no BN x 3 learning rates x 3 seeds
	$(PY) -m cnnstudy.train -m experiment=bn_vs_nobn $(ARGS)

report: setup  # tables and plots of the newest sweep under multirun/
	$(PY) -m cnnstudy.report --latest

test: setup  # the full suite, as CI runs it
	$(PY) -m pytest $(PYTEST_ARGS)

# The fast loop: leaves out the tests marked by what makes them slow (pyproject.toml's markers).
FAST_TESTS := not slow and not subprocess and not slurm and not wheel

check: setup
	$(PY) -m pytest -m "$(FAST_TESTS)" $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check src tests
	$(VENV)/bin/ruff format --check src tests

bench: setup
	$(PY) -m cnnstudy.bench $(ARGS)

gpu-check: setup  # GPU runs and the bench on CUDA -> gpu-check.json/.md; one line and exit 0 without CUDA
	$(PY) -m cnnstudy.gpu_check $(ARGS)

tensorboard: setup
	$(VENV)/bin/tensorboard --logdir multirun --host 127.0.0.1

# The README's screenshots (needs chromium): the bn_vs_nobn archive's overlay, and the HPARAMS table of a small
# real sweep (8 jobs, minutes on a CPU; a second call reuses its completed jobs).
SHOTS_SWEEP := multirun/screenshots
screenshots: setup
	$(PY) -m cnnstudy.report docs/results/bn_vs_nobn >/dev/null
	$(PY) -m cnnstudy.report.screenshots docs/results/bn_vs_nobn --views custom_scalars --out docs/screenshots
	$(PY) -m cnnstudy.train -m model=bn,nobn optim.lr=1e-3,1e-2 seed=0,1 trainer.max_epochs=3 \
		trainer.limit_train_batches=40 trainer.limit_val_batches=10 trainer.limit_test_batches=10 \
		hydra.sweep.dir=$(SHOTS_SWEEP)
	$(PY) -m cnnstudy.report $(SHOTS_SWEEP) >/dev/null
	$(PY) -m cnnstudy.report.screenshots $(SHOTS_SWEEP) --views hparams --out docs/screenshots

slurm-up:  # a one-node SLURM cluster on this host, for hydra/launcher=slurm and tests/test_slurm.py (root)
	scripts/slurm-local.sh up

slurm-down:
	scripts/slurm-local.sh down

clean:
	rm -rf outputs lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -prune -exec rm -rf {} +
