# Every target does its own set-up: a .venv with the pinned CPU torch installed first (through
# constraints.txt, so no dependency can pull a CUDA build), then this package in editable mode,
# then pgmpy 0.1.26 without its dependencies: only its bundled BIF files (bnlearn's Bayesian
# networks, tg.datasets.bayesian_network) are read, by path; its code is never imported. The same
# for recbole 1.2.1 (10 MB): only its bundled MovieLens-100k files are read
# (tg.datasets.movielens, movielens_sparse).
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
PIP    := $(PY) -m pip install --quiet --disable-pip-version-check -c constraints.txt
STAMP  := $(VENV)/.installed

.PHONY: install test demo lint bench clean

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) torch==2.13.0
	$(PIP) -e ".[dev]"
	$(PIP) --no-deps pgmpy==0.1.26 recbole==1.2.1
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest

demo: $(STAMP)
	$(VENV)/bin/taskgraph demo

lint: $(STAMP)
	$(VENV)/bin/ruff check .

bench: $(STAMP)
	$(VENV)/bin/taskgraph bench --quick

clean:
	rm -rf $(VENV) runs .pytest_cache
