# One command each (see README):
#   make            set everything up, then open JupyterLab on chapters/   (the course)
#   make run-all    set up, then execute every chapter headless and report time and memory
#   make test       set up, then run every test (what CI runs; <= 15 min on 2 cores)
#   make quicktest  the tests that execute no notebook and train no model (<= 3 min)
#   make bench      set up, then print the performance figures quoted in the README
PYTHON ?= python3.11
VENV   ?= .venv
BIN     = $(VENV)/bin
STAMP   = $(VENV)/.course-installed

.PHONY: lab setup system-deps hub-proxy run-all test quicktest bench build clean-venv

# Learners neither author nor grade: binder/learner-jupyter (an extra config folder for this
# server only) hides nbgrader's instructor panels, as binder/postBuild does on Binder; the
# `python -m nbgrader` commands instructors use are unaffected. JupyterLab refuses to start as
# root ("Running as root is not recommended"), and containers often run as root: there the
# learner owns the whole machine anyway, so --allow-root is added only when `id -u` is 0.
# A chapters/utils.py (or utils/) of the learner's would shadow the course's utils package.
lab: setup
	@for f in chapters/utils.py chapters/utils; do if [ -e "$$f" ]; then \
	  echo "$$f shadows the course's utils package in the notebooks: rename it (e.g. my_utils.py)"; exit 1; fi; done
	JUPYTER_CONFIG_PATH="$(CURDIR)/binder/learner-jupyter$${JUPYTER_CONFIG_PATH:+:$$JUPYTER_CONFIG_PATH}" \
	  $(BIN)/jupyter lab --notebook-dir=chapters $$([ "$$(id -u)" = "0" ] && echo --allow-root)

$(STAMP): requirements.txt requirements-nodeps.txt pyproject.toml
	@$(PYTHON) -c "import sys; assert sys.version_info[:2] == (3, 11), 'the course needs Python 3.11: set PYTHON=/path/to/python3.11'"
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet pip==25.3
	$(BIN)/python -m pip install --quiet -r requirements.txt
	$(BIN)/python -m pip install --quiet --no-deps -r requirements-nodeps.txt
	$(BIN)/python -m pip install --quiet --no-deps -e .
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (course)"
	touch $(STAMP)

# Every kernel of the course's environment runs course_tools/kernel_guard.py first: it explains an
# import error caused by a learner's own utils.py hiding the course's package.
KERNEL_CONFIG = $(VENV)/etc/ipython/ipython_kernel_config.py

setup: $(STAMP)
	@mkdir -p $(dir $(KERNEL_CONFIG)) && printf 'c = get_config()  # noqa: F821\nc.IPKernelApp.exec_files = ["%s"]\n' \
	  "$(CURDIR)/course_tools/kernel_guard.py" > $(KERNEL_CONFIG)
	$(BIN)/python -m utils.smollm2 --prepare

# Sandboxed grading needs bubblewrap; the browser test needs Chromium. Installed when we can
# (root with apt); otherwise the tests that need them skip and say why.
system-deps:
	@if [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  missing=""; command -v bwrap >/dev/null || missing="$$missing bubblewrap"; \
	  command -v chromium >/dev/null || missing="$$missing chromium"; \
	  if [ -n "$$missing" ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; fi; \
	else echo "not root with apt-get: install bubblewrap (and chromium) yourself for the full test suite"; fi

# JupyterHub's proxy (configurable-http-proxy, exact version in deploy/proxy/package-lock.json)
# for tests/test_jupyterhub.py and the workshop server, installed into deploy/proxy/node_modules.
HUB_PROXY = deploy/proxy/node_modules/.bin/configurable-http-proxy
hub-proxy: $(HUB_PROXY)
$(HUB_PROXY): deploy/proxy/package.json deploy/proxy/package-lock.json
	@if command -v npm >/dev/null; then npm ci --prefix deploy/proxy --no-audit --no-fund --loglevel=error && touch $@; \
	else echo "npm not found: tests/test_jupyterhub.py will skip (install Node.js 20 + npm)"; fi

run-all: setup
	$(BIN)/python -m course_tools.execute solutions/*.ipynb

PYTEST  = $(BIN)/python -m pytest -q -p no:cacheprovider
# Both tiers run on two pytest workers (pytest-xdist); tests/conftest.py groups the work so
# each chapter's grader starts once and its grading stays on one worker. `make test` pins torch
# (and every notebook kernel and training run it starts) to one thread per worker: two workers
# of two threads each oversubscribed the 2 cores (the toy model's retrain took 698 s beside a
# notebook, 137 s alone), while two single-threaded workers keep both cores busy, with most of
# the suite's time spent in process start-up, imports and sandboxed calls.
QUICK_JOBS ?= 2
TEST_JOBS ?= 2
ONE_THREAD = OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

test: setup system-deps hub-proxy
	$(BIN)/ruff check utils course_tools tests
	$(BIN)/python -m course_tools.pins --check
	$(BIN)/python -m course_tools.build --check
	$(ONE_THREAD) $(PYTEST) -n $(TEST_JOBS) --dist loadgroup --no-loadscope-reorder --durations=25

quicktest: setup
	$(BIN)/ruff check utils course_tools tests
	$(BIN)/python -m course_tools.build --check
	$(ONE_THREAD) $(PYTEST) -n $(QUICK_JOBS) --dist loadgroup --no-loadscope-reorder -m "not slow" \
	  --durations=10

bench: setup
	$(BIN)/python -m course_tools.bench

build: $(STAMP)
	$(BIN)/python -m course_tools.build

clean-venv:
	rm -rf $(VENV)
