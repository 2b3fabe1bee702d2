# Two commands matter: `make bench` (main job) and `make test` (test suite).
VENV ?= .venv
PY := $(VENV)/bin/python

.PHONY: env bench test clean
env:
	@bash tools/install.sh

bench: env
	$(PY) -m scl_plugin.cli bench configs/suites/default.yaml

test: env
	$(PY) -m pytest -q tests

clean:
	rm -rf runs .pytest_cache
