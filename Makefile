# Two commands do everything on a fresh machine:
#   make run    create .venv, install, and serve the app on http://127.0.0.1:7860
#   make test   create .venv, install (and Debian's chromium for the browser tests), run the tests
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# llama-cpp-python builds from source (PyPI has no wheel): only the libraries the app loads (no multimodal
# library, no llama.cpp "common" library: configs/llama-cpp-build.cmake), on every core. Your own CMAKE_ARGS
# (e.g. -DGGML_CUDA=on, see README "GPU") are added after these.
LLAMA_PIN := $(shell grep -o 'llama-cpp-python==[0-9.]*' pyproject.toml)
LLAMA_CMAKE_ARGS := -DLLAVA_BUILD=OFF -DCMAKE_PROJECT_llama_cpp_INCLUDE=$(CURDIR)/configs/llama-cpp-build.cmake

export HF_HUB_OFFLINE := 1
export TRANSFORMERS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false

.PHONY: setup run test test-fast browser-deps bench eval clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	# torch first, pinned: this is the CPU build. GPU users: see README "GPU".
	$(PIP) install -q torch==2.13.0
	CMAKE_ARGS="$(LLAMA_CMAKE_ARGS) $${CMAKE_ARGS:-}" CMAKE_BUILD_PARALLEL_LEVEL="$${CMAKE_BUILD_PARALLEL_LEVEL:-$$(nproc)}" \
	  $(PIP) install -q "$(LLAMA_PIN)"
	$(PIP) install -q -e '.[test]'
	touch $(STAMP)

run: setup
	$(VENV)/bin/hybrid-rag serve

# Debian packages the tests use: chromium (browser tests) and postgresql (the state database on PostgreSQL)
browser-deps:
	@if [ ! -x /usr/bin/chromium ] || ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then \
	  if [ "$$(id -u)" = 0 ]; then apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null; \
	  else sudo apt-get update -qq && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium postgresql >/dev/null; fi; \
	fi

test: setup browser-deps
	$(PY) -m pytest -q

test-fast: setup
	$(PY) -m pytest -q -m "not slow and not browser"

bench: setup
	$(PY) -m bench

eval: setup
	$(VENV)/bin/hybrid-rag ingest --collection scifact ../shared/eval/scifact/corpus.jsonl.gz
	$(VENV)/bin/hybrid-rag eval --collection scifact --queries ../shared/eval/scifact/queries.jsonl --qrels ../shared/eval/scifact/qrels.tsv

clean:
	rm -rf $(VENV) .pytest_cache
