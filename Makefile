# Quick start: `make demo` runs the end-to-end demo, `make test` runs the whole test suite.
# Both create or refresh the local virtual environment .venv first.
# For a CUDA machine override torch, e.g. `make demo TORCH_SPEC="torch==2.13.0+cu128 --index-url ..."`.

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PYTEST_ARGS ?=

BIN := $(VENV)/bin
STAMP := $(VENV)/.unim2-installed

.PHONY: venv demo test lint clean

venv: $(STAMP)

$(STAMP): setup.py setup.cfg package.xml Makefile
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check --upgrade pip
	$(BIN)/python -m pip install -q --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[ros,train,test]"
	touch $@

demo: $(STAMP)
	$(BIN)/unim2_demo

test: $(STAMP)
	ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST $(BIN)/python -m pytest $(PYTEST_ARGS)

lint: $(STAMP)
	$(BIN)/ruff check unim2_core unim2_ros unim2_demo train test launch benchmarks
	$(BIN)/mypy unim2_core unim2_ros unim2_demo train benchmarks

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
