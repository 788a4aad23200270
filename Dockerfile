# The agentrun image: the operator (`agentrun-operator`, the entrypoint) and the tool runner
# (`agentrun-tool`, which tool Jobs run as their command) from one installed package.
#   docker build -t ghcr.io/agentrun/agentrun:0.1.0 .
# `make image` builds this same file with buildah, without Docker or a registry, on a base
# made from Debian's python3 (PYTHON_IMAGE=localhost/agentrun-base:..., tests/image/build.sh).
# The Helm chart's default image (charts/agentrun, image.repository) points at it.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# Only what the package needs to build (see .dockerignore).
COPY pyproject.toml README.md ./
COPY operator ./operator
# The optional build secret `build-ca` is a CA bundle for pip (make image passes the host's,
# where outbound TLS is re-signed by a local CA); a secret is never stored in a layer.
# Without it pip uses its own bundle.
RUN --mount=type=secret,id=build-ca \
    if [ -s /run/secrets/build-ca ]; then export PIP_CERT=/run/secrets/build-ca; fi \
 && python -m venv /opt/agentrun/venv \
 && /opt/agentrun/venv/bin/pip install --no-compile ".[mcp]" \
 && /opt/agentrun/venv/bin/agentrun-operator --help >/dev/null \
 && test -x /opt/agentrun/venv/bin/agentrun-tool \
 && /opt/agentrun/venv/bin/python -c "import agentrun.operator.handlers, agentrun.tool.runner, agentrun.tool.mcp_client, mcp"

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="agentrun" \
      org.opencontainers.image.description="Kubernetes operator running LLM agents as custom resources" \
      org.opencontainers.image.source="https://github.com/agentrun/agentrun" \
      org.opencontainers.image.licenses="Apache-2.0"
# A fixed non-root user (the chart's securityContext runs as 65532 too).
RUN groupadd --system --gid 65532 agentrun \
 && useradd --system --uid 65532 --gid 65532 --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin agentrun
COPY --from=build /opt/agentrun/venv /opt/agentrun/venv
# Defaults for a plain `docker run`; the chart mounts the prompts ConfigMap over
# AGENTRUN_PROMPTS_DIR. Runbooks are read by the `runbook` tool in tool Jobs.
COPY prompts /opt/agentrun/prompts
COPY tools/runbooks /opt/agentrun/runbooks
ENV PATH=/opt/agentrun/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    AGENTRUN_PROMPTS_DIR=/opt/agentrun/prompts \
    AGENTRUN_RUNBOOKS_DIR=/opt/agentrun/runbooks
USER 65532:65532
WORKDIR /tmp
# 8080: kopf health endpoint (/healthz); 9090: Prometheus /metrics.
EXPOSE 8080 9090
ENTRYPOINT ["agentrun-operator"]
