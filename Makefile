SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
export AGENTRUN_CACHE ?= $(HOME)/.cache/agentrun

.PHONY: venv test unit lint typecheck crds cluster-up cluster-down demo clean image node-bin

venv: $(VENV)/.stamp
$(VENV)/.stamp: pyproject.toml
	bash tests/setup/venv.sh $(VENV)
	touch $@

# ---- quality and tests (`make test` is what CI runs) ----
# ruff; the layers (import-linter, [tool.importlinter]); every imported package declared
# (deptry: the package against the runtime dependencies, tests and benchmarks against all).
lint: venv
	$(VENV)/bin/ruff check operator tests benchmarks
	$(VENV)/bin/ruff format --check operator tests benchmarks
	$(VENV)/bin/lint-imports
	$(VENV)/bin/deptry operator
	$(VENV)/bin/deptry tests benchmarks --ignore DEP002,DEP004

typecheck: venv
	$(VENV)/bin/mypy

crds: venv
	$(PY) -m agentrun.api.crdgen

crds-check: venv
	$(PY) -m agentrun.api.crdgen --check

unit: venv
	$(VENV)/bin/pytest tests/unit -q

cluster-bin:
	bash tests/cluster/build.sh

# The real node (tests/cluster/realnode.py): Debian's containerd, runc, CNI plugins, iptables;
# kubelet and kube-proxy built from the control plane's source tree.
node-bin:
	bash tests/setup/realnode-deps.sh
	bash tests/cluster/build.sh node

# The project's image from the Dockerfile (buildah, on a Debian-built base) and a pause image,
# as OCI archives cached by content in $(AGENTRUN_CACHE)/images (see tests/image/build.sh).
image:
	bash tests/image/build.sh

test: venv lint typecheck crds-check cluster-bin node-bin image tools-bin test-deps
	$(VENV)/bin/pytest tests -q

# The real node when it is built (root; packages, kubelet, the image of this tree, helm: all
# cached), else the stand-in; the output's first lines say which. NODE=real builds what is
# missing first and insists on it; NODE=standin never tries (tests/demo/__main__.py).
demo: venv cluster-bin tools-bin $(if $(filter real,$(NODE)),node-bin image)
	$(PY) -m tests.demo $(if $(NODE),--node $(NODE))

# ---- local control plane (see docs/local-cluster.md) ----
# `make cluster-up NODE=real`: a real kubelet node (containerd, the built image) instead of
# the Python stand-in; needs root.
cluster-up: venv $(if $(filter real,$(NODE)),cluster-bin node-bin image)
	$(PY) -m tests.cluster up $(if $(NODE),--node $(NODE))

cluster-down: venv
	$(PY) -m tests.cluster down

# ---- benchmarks (see docs/benchmarks.md) ----
.PHONY: bench-step
bench-step: venv cluster-bin
	$(PY) -m benchmarks.step_overhead $(BENCH_ARGS)

# ---- helm 4.3.1 and kubectl 1.37.1 for the chart tests (into $(AGENTRUN_CACHE)/tools) ----
.PHONY: tools-bin chart-sync
tools-bin:
	bash tests/setup/helm.sh

# Copies the single sources (crds/, prompts/, tools/) into the chart; tests/chart fails on drift.
chart-sync:
	rm -rf charts/agentrun/files
	mkdir -p charts/agentrun/files/crds charts/agentrun/files/prompts charts/agentrun/files/tools
	cp crds/*.yaml charts/agentrun/files/crds/
	find prompts -maxdepth 1 -type f -exec cp {} charts/agentrun/files/prompts/ \;
	cp tools/*.yaml charts/agentrun/files/tools/

# ---- Debian packages the integration tests start themselves (Prometheus, Alertmanager) ----
.PHONY: test-deps
test-deps:
	bash tests/setup/prometheus.sh

# ---- eval: the regression suite of real alerts (see docs/eval.md) ----
# Replay (deterministic; also collected by `make test`), then live when OPENAI_API_KEY is set.
.PHONY: eval eval-refresh
eval: venv
	$(PY) -m tests.eval.run $(EVAL_ARGS)

# Re-records tests/eval/cases/*/requests.json after an intended prompt/context change.
eval-refresh: venv
	$(PY) -m tests.eval.run --refresh $(EVAL_ARGS)

# ---- scale benchmark: 100, 200 and 500 runs in flight, then the incident benchmark ----
# (see docs/benchmarks.md; about an hour on 2 cores), and the same on a real kubelet where
# this machine can run one
.PHONY: bench bench-incident bench-incident-real
bench: venv cluster-bin
	$(PY) -m benchmarks.scale --sizes 100,200,500 $(BENCH_ARGS)
	$(MAKE) bench-incident
	@why=$$($(PY) -c "from tests.cluster.realnode import unsupported; print(unsupported() or '')"); \
	if [ -z "$$why" ]; then $(MAKE) bench-incident-real; \
	else echo "bench-incident-real skipped: $$why"; fi

# Alert -> first model request and -> write proposed with a four-call prefetch, at 1, 100, 500
# and 2,000 incidents, as Job round trips; operator memory per run in flight (500 -> 2,000).
# Then the shipped tools (agentrun-tool, ~1 CPU-second a call here) at 1 and 100.
bench-incident: venv cluster-bin
	$(PY) -m benchmarks.incident --sizes 1,100,500,2000 $(INCIDENT_ARGS)
	$(PY) -m benchmarks.incident --sizes 1,100 --tools builtin \
		--workdir .local/bench-incident-builtin $(INCIDENT_ARGS)

# The same on a real kubelet (containerd, runc, the image; root): the unit is what a user's
# cluster pays for a Job, not the stand-in's local process.
bench-incident-real: venv cluster-bin node-bin image
	$(PY) -m benchmarks.incident --sizes 1,100 --node real --single-rounds 30 \
		--workdir .local/bench-incident-real $(INCIDENT_ARGS)

# Prompt tokens per step, compacted vs naive (pure; see docs/benchmarks.md).
.PHONY: bench-context
bench-context: venv
	$(PY) -m benchmarks.context_tokens
