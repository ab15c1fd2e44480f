# Two commands for a newcomer: `make demo` (set up and run) and `make test` (set up and test).
# Each builds its own virtual environment from a clean checkout.
PYTHON ?= python3.11
VENV ?= .venv
BIN = $(VENV)/bin

.PHONY: setup setup-test demo test clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch and torchvision are pinned in pyproject.toml; pip takes them from the local disk.
setup: $(BIN)/python
	$(BIN)/pip install -q -e .

setup-test: $(BIN)/python
	$(BIN)/pip install -q -e '.[test]'

# The main job: `archlab compare` runs the quick-tour protocol (seven families and a classical
# baseline on Fashion-MNIST, about ten minutes on two CPU cores) and writes its report.
# Fashion-MNIST comes from Debian when it can be installed.
demo: setup
	@[ -e /usr/share/datasets/fashion-mnist ] || [ -n "$$ARCHLAB_DATA" ] || \
	  { [ "$$(id -u)" = 0 ] && apt-get install -y -qq dataset-fashion-mnist; } || \
	  sudo apt-get install -y -qq dataset-fashion-mnist || \
	  echo "Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist, or set ARCHLAB_DATA to a folder of its idx files (online, archlab downloads it)."
	$(BIN)/archlab compare

# The layers and the absence of import circles first (pyproject.toml's import-linter
# contracts), then the tests, a test file per core (pytest-xdist).
test: setup-test
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -n auto --dist loadfile tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
