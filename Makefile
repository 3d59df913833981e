# make demo : create .venv if missing, install pinned deps, run the offline demo end to end
# make test : same environment, lint, then run the test suite (CI runs this via .ci/run)
# make lint : ruff (rules in pyproject.toml [tool.ruff]) on src/ tests/ benchmarks/ + snakemake --lint
VENV   ?= .venv
PYTHON ?= python3
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.langtail-installed
CORES  ?= 2
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)
export PYTHONUNBUFFERED := 1

.PHONY: demo test test-all lint dryrun clean-demo install

install: $(STAMP)

$(STAMP): pyproject.toml requirements.lock
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q --disable-pip-version-check -r requirements.lock
	$(PY) -m pip install -q --disable-pip-version-check --no-deps -e .
	@touch $(STAMP)

demo: $(STAMP)
	snakemake --cores $(CORES) results/demo/report.md
	@echo "report: results/demo/report.md"

# pytest-xdist: one file per worker at a time (module fixtures built once); one more worker than
# cores, since the SLURM test spends most of its minutes waiting on the scheduler
TEST_WORKERS ?= $(shell echo $$(($(CORES) + 1)))
PYTEST := $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test: lint
	$(PYTEST)

test-all: $(STAMP)
	$(PYTEST) -m "slow or not slow"

lint: $(STAMP)
	$(VENV)/bin/ruff check src tests benchmarks
	snakemake --lint

dryrun: $(STAMP)
	snakemake -n results/demo/report.md

clean-demo:
	rm -rf results/demo
