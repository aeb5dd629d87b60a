# The two commands a newcomer needs: `make serve` and `make test`.
# Each sets up its own virtual environment in .venv/ first.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 8500

.PHONY: serve test test-slow lint protos docker clean

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

# mypy sees the installed names (onnx_serving.server, ...) through a tree of links.
lint: $(VENV)/.test-installed
	$(BIN)/ruff check .
	mkdir -p $(VENV)/typecheck/onnx_serving
	for d in server client codec protos migration tune; do ln -sfn ../../../$$d $(VENV)/typecheck/onnx_serving/$$d; done
	cd $(VENV)/typecheck && MYPYPATH=. ../bin/mypy --config-file ../../pyproject.toml \
		-p onnx_serving.server -p onnx_serving.client -p onnx_serving.codec \
		-p onnx_serving.migration -p onnx_serving.tune

# After editing a .proto file.
protos: $(VENV)/.test-installed
	$(BIN)/python protos/generate.py

docker:
	docker build -t onnx-serving .

clean:
	rm -rf $(VENV) build *.egg-info
