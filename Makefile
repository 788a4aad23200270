SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export AGENTRUN_CACHE ?= $(HOME)/.cache/agentrun

.PHONY: venv test unit lint typecheck crds cluster-up cluster-down demo clean

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	bash tests/setup/venv.sh $(VENV)
	touch $@

