# Two commands do everything on a fresh machine (see README):
#   make demo   -> set up .venv, train a blurring diffusion model on embedded digits, write runs/demo/
#   make test   -> set up .venv, run the test suite
VENV ?= .venv
PY := $(VENV)/bin/python
# torch is pinned to the CPU build that installs from local disk; change it for a GPU machine.
TORCH ?= torch==2.13.0

.PHONY: demo test test-slow setup bench
setup: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install --quiet $(TORCH)
	$(PY) -m pip install --quiet -e '.[test]'
	touch $@

demo: setup
	$(VENV)/bin/difflab demo

test: setup
	$(PY) -m pytest

test-slow: setup
	$(PY) -m pytest -m slow

bench: setup
	$(PY) -m pip install --quiet -e '.[test,bench]'
