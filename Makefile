# The two commands a newcomer needs: `make serve` and `make test`.
# Each sets up its own virtual environment in .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8500

.PHONY: serve test test-slow lint protos docker docker-gpu docker-base base-image clean FORCE \
	device-check

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.serve-installed: $(BIN)/python pyproject.toml setup.py
	$(BIN)/python -m pip install --quiet -e '.[cpu]'
	touch $@

$(VENV)/.test-installed: $(BIN)/python pyproject.toml setup.py
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@ $(VENV)/.serve-installed

# Serves the bundled example models (half_plus_two, half_plus_three): gRPC on port 8500,
# REST on 8501.
REST_PORT ?= 8501
serve: $(VENV)/.serve-installed
	$(BIN)/onnx-serving serve --port=$(PORT) --rest_api_port=$(REST_PORT) \
		--model_config_file=examples/models.config

test: $(VENV)/.test-installed lint
	$(BIN)/python -m pytest

test-slow: $(VENV)/.test-installed
	$(BIN)/python -m pytest -m slow

# mypy and import-linter see the installed names (onnx_serving.server, ...) through a tree
# of links, with no install: lint-imports checks the contracts in pyproject.toml
# (docs/architecture.md), import circles included.
lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	mkdir -p $(VENV)/typecheck/onnx_serving
	for d in server client codec protos migration tune; do ln -sfn ../../../$$d $(VENV)/typecheck/onnx_serving/$$d; done
	cd $(VENV)/typecheck && MYPYPATH=. ../bin/mypy --config-file ../../pyproject.toml \
		-p onnx_serving.server -p onnx_serving.client -p onnx_serving.codec \
		-p onnx_serving.migration -p onnx_serving.tune
	cd $(VENV)/typecheck && ../bin/lint-imports --config ../../pyproject.toml

# Every GPU and many-core check at once, for the device machine (docs/performance.md,
# "Device check"): there, `make device-check PYTHON=python3 DEVICE_OUT=$OUT`. It uses
# the wheels bench/device_wheels.sh put in .whl/device and onnxruntime-gpu's parts in
# /tmp/ortgpu where they are.
DEVICE_OUT ?= build/device-check
device-check:
	$(PYTHON) bench/device.py --out $(DEVICE_OUT) $(if $(wildcard .whl/device),--wheels .whl/device) \
		$(if $(wildcard /tmp/ortgpu),--parts /tmp/ortgpu)

# After editing a .proto file.
protos: $(VENV)/.test-installed
	$(BIN)/python protos/generate.py

# Container images (docs/deployment.md). The wheelhouse is built here, so the build itself
# needs no network. BASE_IMAGE is any image with python3 (the host's minor version, for
# the wheels) and its venv module; the default is made here from Debian's packages
# (`make docker-base`, when absent), so no registry is needed: air-gapped CI included.
IMAGE ?= onnx-serving
GPU_IMAGE ?= onnx-serving-gpu
DEBIAN_BASE := onnx-serving-base:bookworm
BASE_IMAGE ?= $(DEBIAN_BASE)
TENSORRT ?= 1
# Images serve whatever `onnx-serving convert` writes: decoded-image inputs and string ops.
SERVE_EXTRAS := images,strings
DOCKER_BUILD = docker build --network host --build-arg BASE_IMAGE=$(BASE_IMAGE) \
	--label onnx-serving.image=1

.whl/%/.built: $(BIN)/python pyproject.toml setup.py Makefile docker/requirements-gpu.txt \
		docker/requirements-tensorrt.txt
	rm -rf .whl/$* && mkdir -p .whl/$*/wheels
	cp docker/tf_serving_entrypoint.sh docker/tensorflow_model_server docker/monitoring.config .whl/$*/
	$(if $(filter gpu,$*),cp docker/requirements-gpu.txt \
		$(if $(filter 1,$(TENSORRT)),docker/requirements-tensorrt.txt) .whl/$*/wheels/)
	$(BIN)/python -m pip wheel --quiet --wheel-dir .whl/$*/wheels '.[$*,$(SERVE_EXTRAS)]' \
		$$(for f in .whl/$*/wheels/requirements-*.txt; do [ -e $$f ] && echo -r $$f; done)
	rm -f .whl/$*/wheels/onnx_serving-*.whl .whl/$*/wheels/requirements-*.txt
	touch $@

# onnx-serving's own wheel, rebuilt each time.
.whl/%/project: .whl/%/.built FORCE
	rm -rf $@ && $(BIN)/python -m pip wheel --quiet --no-deps --wheel-dir $@ .
FORCE:
.PRECIOUS: .whl/%/.built

# What a rebuild leaves behind: the replaced image, and install stages but the newest (the
# dependencies' layer, the cache, stays under it). Only our labelled images are touched.
define prune_images
	docker image prune --force --filter label=onnx-serving.image >/dev/null
	docker images --quiet --filter label=onnx-serving.stage=install-$(1) | tail -n +2 \
		| xargs -r docker rmi >/dev/null 2>&1 || true
endef

# The default base image is made when absent; any other is the engine's to find (or pull).
base-image:
	@docker image inspect $(BASE_IMAGE) >/dev/null 2>&1 || [ "$(BASE_IMAGE)" != "$(DEBIAN_BASE)" ] \
		|| $(MAKE) --no-print-directory docker-base

docker: .whl/cpu/project base-image
	$(DOCKER_BUILD) --build-arg SERVE_EXTRAS=$(SERVE_EXTRAS) -f Dockerfile -t $(IMAGE) .whl/cpu
	$(call prune_images,cpu)

docker-gpu: .whl/gpu/project base-image
	$(DOCKER_BUILD) --build-arg EXTRA=gpu --build-arg SERVE_EXTRAS=$(SERVE_EXTRAS) --label onnx-serving.tensorrt=$(TENSORRT) \
		-f Dockerfile -t $(GPU_IMAGE) .whl/gpu
	$(call prune_images,gpu)

# A python3 base image from Debian's packages (Debian's mirror or the host's apt proxy,
# no container registry). Written to a file first: a failed mmdebstrap imports nothing.
docker-base:
	rm -f .whl/base.tar && mkdir -p .whl
	mmdebstrap --quiet --variant=minbase --include=python3,python3-venv,ca-certificates \
		bookworm .whl/base.tar
	docker import .whl/base.tar $(DEBIAN_BASE) && rm -f .whl/base.tar

clean:
	rm -rf $(VENV) build *.egg-info
