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

# The tour: what exists and what it costs, then a small ResNet trained on Fashion-MNIST
# (installed from Debian when possible), evaluated and explained.
demo: setup
	@[ -e /usr/share/datasets/fashion-mnist ] || [ -n "$$ARCHLAB_DATA" ] || \
	  { [ "$$(id -u)" = 0 ] && apt-get install -y -qq dataset-fashion-mnist; } || \
	  sudo apt-get install -y -qq dataset-fashion-mnist || \
	  echo "Fashion-MNIST is not installed: apt-get install dataset-fashion-mnist, or set ARCHLAB_DATA to a folder of its idx files (online, archlab downloads it)."
	$(BIN)/archlab models
	$(BIN)/archlab info vgg16 --layers --depth 2
	$(BIN)/archlab calc stack --kernel 3 --layers 3 --channels 64
	$(BIN)/archlab train --model resnet20 --data fashion-mnist --epochs 2 --threads 1 --out runs/demo-resnet20
	$(BIN)/archlab eval runs/demo-resnet20
	$(BIN)/archlab explain runs/demo-resnet20 --method filters,gradcam,errors --out runs/demo-resnet20/explain

test: setup-test
	$(BIN)/python -m pytest -q tests

clean:
	rm -rf $(VENV) build dist src/*.egg-info .pytest_cache
