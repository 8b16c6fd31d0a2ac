# kqrobust: `make demo` and `make test` work on a fresh machine with Python 3.11 and make.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
PYTEST_WORKERS ?= 2
export TF_CPP_MIN_LOG_LEVEL ?= 3

.PHONY: demo lint test test-slow bench bench-peers clean

$(VENV)/.installed-%: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[$*]"
	touch $@

# The main job, offline, on the bundled digits data.
demo: $(VENV)/.installed-all
	$(PY) examples/quickstart.py --out_dir runs/demo

# ruff's linter and formatter, configured in pyproject.toml ([tool.ruff]); changes nothing.
lint: $(VENV)/.installed-lint
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

# Every fast test, then the CI subset of the slow ones.
test: $(VENV)/.installed-test
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "not slow" -q
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m "slow and ci" -q || test $$? -eq 5  # 5: none selected

test-slow: $(VENV)/.installed-test
	$(PY) -m pytest -n $(PYTEST_WORKERS) -m slow -q

# Ratios measured inside one run each; results are recorded in benchmarks/README.md.
bench: $(VENV)/.installed-all
	for script in step_overhead robust_overhead hessian_probe tflite_latency batchnorm_mechanisms; do \
		$(PY) benchmarks/$$script.py || exit 1; done

# kqrobust against tfmot QAT, Keras' quantize and TFLite PTQ. Its own venv: tfmot forces tf_keras and
# pins absl-py, so the core .venv never gets it. `make test` does not need it.
PEER_VENV := .venv-peer
PEER_PY := $(PEER_VENV)/bin/python

$(PEER_VENV)/.installed: pyproject.toml
	test -x $(PEER_PY) || $(PYTHON) -m venv $(PEER_VENV)
	$(PEER_PY) -m pip install --quiet --upgrade pip
	$(PEER_PY) -m pip install --quiet -e ".[peer,export,data]"
	touch $@

bench-peers: $(PEER_VENV)/.installed
	$(PEER_PY) benchmarks/peers.py --require_tfmot --kq_python $(PEER_PY) --tfmot_python $(PEER_PY) \
		--out_dir runs/peers

clean:
	rm -rf $(VENV) .venv-peer runs .pytest_cache
