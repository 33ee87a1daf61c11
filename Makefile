# Two commands do everything on a fresh machine (see README):
#   make md     set up .venv, then run the main job on the shipped Bi clusters
#   make test   set up .venv, then run the test suite (tests marked slow: make test-slow)
VENV ?= .venv
BIN := $(VENV)/bin
ARGS ?=

.PHONY: md test test-slow setup setup-cfd thermofluid lint typecheck bench clean

setup:
	@PAL_VENV=$(VENV) bash scripts/setup.sh

# OpenFOAM (Debian package, root) for the thermo-fluid surrogate; nothing atomistic needs it.
setup-cfd: setup
	bash scripts/openfoam.sh up

thermofluid: setup-cfd
	$(BIN)/python examples/thermofluid/run.py --out runs/thermofluid $(ARGS)

md: setup
	$(BIN)/pal-atoms md --system examples/bi_cluster.xyz $(ARGS)

# The suite without the tests marked slow (each over ~20 s on 2 cores: MPI jobs, CLI runs,
# Slurm, the examples); CI (.ci/run) runs both targets.
test: setup
	$(BIN)/pytest -m "not slow" $(ARGS)

test-slow: setup
	$(BIN)/pytest -m slow $(ARGS)

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	cd "$$(mktemp -d)" && $(CURDIR)/$(BIN)/mypy --config-file $(CURDIR)/pyproject.toml -p pal_atoms

clean:
	rm -rf build *.egg-info .pytest_cache .mypy_cache .ruff_cache
