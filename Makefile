# `make demo` and `make test` set everything up on a fresh machine: they create .venv and install into it.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
BASE := $(VENV)/.installed-base
TEST := $(VENV)/.installed-test
# One pytest-xdist worker per core, each test file kept on one worker (its module fixtures are built once); the
# workers split the threads between them (tests/conftest.py). On two cores this halves the suite's time.
PARALLEL := -n auto --dist loadfile

.PHONY: demo test test-cpu-kinds lint format clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(BASE): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e .
	touch $@

# Tests also install the peer frameworks (timm, Keras with TensorFlow, PaddlePaddle) that they check against.
$(TEST): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e ".[dev,peers]"
	touch $@ $(BASE)

demo: $(BASE)
	$(PY) -m resnets.demo

test: $(TEST)
	$(PY) -m ruff check src tests benchmarks
	$(PY) -m ruff format --check src tests benchmarks
	$(PY) -m pytest -q $(PARALLEL)

# The suite as each CPU kind we run on would see it (resnets.hardware reports that kind's flags; the kernels still
# run on this CPU): what would fail on another machine fails here first.
test-cpu-kinds: $(TEST)
	for kind in avx2 avx512-bf16 amx; do $(PY) -m pytest -q $(PARALLEL) --cpu-kind $$kind || exit 1; done

lint: $(TEST)
	$(PY) -m ruff check src tests benchmarks

format: $(TEST)
	$(PY) -m ruff format src tests benchmarks
	$(PY) -m ruff check --fix src tests benchmarks

clean:
	rm -rf $(VENV) build *.egg-info src/*.egg-info .pytest_cache .ruff_cache
