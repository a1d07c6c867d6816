# DeadNet-Caffe. Every target is a thin call of the `deadnet` command line (see README).
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
DEADNET := $(VENV)/bin/deadnet
PY := $(VENV)/bin/python

# Paths of the pipeline (override on the command line, e.g. make dataset-A EXPERIMENT=my_exp).
RUNS ?= runs
EXPERIMENT ?= $(RUNS)/experiments/demo
DATASET ?= A
DATASET_DIR ?= $(RUNS)/datasets/$(DATASET)
RUN ?= snapshots/dataset_$(DATASET)
SOLVER ?= prototxt/dataset_$(shell echo $(DATASET) | tr AB ab)/solver.prototxt
WEIGHTS ?= $(RUN)/latest.caffemodel
PYTEST_ARGS ?=
CAFFE_FLAGS ?=

.PHONY: help setup test lint demo demo-b simulate dataset-A dataset-B train evaluate heatmap \
        gradcam classmodel figures annotate report bench docker docker-base docker-check test-gpu \
        cuda-build clean

help:
	@echo "make setup | test | demo | demo-b | simulate | dataset-A | dataset-B | train | evaluate"
	@echo "     heatmap | gradcam | classmodel | figures | annotate | report | bench | test-gpu"
	@echo "     docker | docker-base | docker-check | cuda-build"

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.deps: pyproject.toml constraints.txt | $(VENV)/bin/python
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev]'
	touch $@

setup: $(VENV)/.deps
	third_party/caffe/build.sh --venv $(VENV) $(CAFFE_FLAGS)

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	tests/install-test-deps.sh
	tests/run.sh $(PYTEST_ARGS)

demo: setup
	$(DEADNET) demo --out $(RUNS)/demo

demo-b: setup
	$(DEADNET) demo --dataset B --out $(RUNS)/demo-b

simulate: setup
	$(DEADNET) simulate --preset demo --out $(EXPERIMENT)

dataset-A: setup
	$(DEADNET) dataset A --experiment $(EXPERIMENT) --out $(RUNS)/datasets/A

dataset-B: setup
	$(DEADNET) dataset B --experiment $(EXPERIMENT) --out $(RUNS)/datasets/B

train: setup
	$(DEADNET) train --dataset $(DATASET_DIR) --solver $(SOLVER) --run $(RUN)

evaluate: setup
	$(DEADNET) evaluate --weights $(WEIGHTS) --dataset $(DATASET_DIR) --out $(RUN)/evaluation

heatmap: setup
	$(DEADNET) heatmap --weights $(WEIGHTS) --experiment $(EXPERIMENT) --out $(RUN)/heatmaps

gradcam: setup
	$(DEADNET) gradcam --weights $(WEIGHTS) --dataset $(DATASET_DIR) --out $(RUN)/gradcam

classmodel: setup
	$(DEADNET) classmodel --weights $(WEIGHTS) --out $(RUN)/classmodel

figures: setup
	$(DEADNET) figures --run $(RUN)

report: setup
	$(DEADNET) report --weights $(WEIGHTS) --experiment $(EXPERIMENT) --out $(RUN)/report

annotate: setup
	mkdir -p $(RUNS)
	$(DEADNET) annotate serve --experiment $(EXPERIMENT) --db sqlite:///$(RUNS)/annotations.sqlite

bench: setup
	$(VENV)/bin/pip install -q -c constraints.txt -e '.[dev,bench]'
	$(DEADNET) bench --out $(RUNS)/bench

# The GPU smoke test (tests/gpu): on a GPU host with the CUDA build (make setup
# CAFFE_FLAGS=--cuda, or inside the image); a missing GPU fails here instead of skipping.
test-gpu: setup
	DEADNET_REQUIRE_GPU=1 tests/run.sh tests/gpu $(PYTEST_ARGS)

# The GPU image, with docker or podman (docker/image.sh; docs/gpu.md). docker-base provides
# and pins the base image (pulled, or bootstrapped from this machine's apt configuration);
# docker-check builds through the self-test stage.
docker-base:
	docker/image.sh base

docker:
	docker/image.sh image

docker-check:
	docker/image.sh check

# Compiles (does not run) the CUDA build on a machine without a GPU; not part of make test.
cuda-build: $(VENV)/.deps
	third_party/caffe/build.sh --venv $(VENV) --cuda --no-link

clean:
	rm -rf $(RUNS) .pytest_cache
