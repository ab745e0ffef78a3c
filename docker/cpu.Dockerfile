# syntax=docker/dockerfile:1
# semirl-cpu: the lean CPU image of the controller and the verifier (skaffold artifact `semirl-cpu`).
# semirl with its base dependencies plus the `controller` (run tracking) and `verifier` (math-verify) extras; no torch,
# no vLLM, no DeepSpeed.
# The packages are pyproject.toml's (services/semirl/deploy/requirements.py reads them): the image has no list of its own.
# The chart picks the component with the container's `command`; the default is the controller.
# Build from the repository root:  docker build -f docker/cpu.Dockerfile .
# Package index settings come only from build args (empty by default) or BuildKit secrets:
#   --build-arg PIP_INDEX_URL=... --build-arg PIP_EXTRA_INDEX_URL=...
#   --secret id=pipca,src=<CA bundle>   --secret id=pipconf,src=<pip.conf>
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: a virtual environment at /opt/venv, copied whole into the final stage ----
FROM ${BASE_IMAGE} AS build
ARG SETUPTOOLS_VERSION=78.1.1
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies first, from pyproject.toml alone: a change to the sources rebuilds only the last layer.
COPY pyproject.toml ./
COPY services/semirl/deploy/requirements.py /tmp/requirements.py
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    python -m venv /opt/venv \
    && pip install --no-cache-dir "setuptools==${SETUPTOOLS_VERSION}" \
    && python /tmp/requirements.py pyproject.toml controller verifier > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt
COPY README.md ./
COPY services/ services/
RUN pip install --no-cache-dir --no-build-isolation --no-deps . \
    && python -m semirl.imagecheck controller verifier

# ---- final: python + the venv, nothing else ----
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="semirl-cpu" \
      org.opencontainers.image.description="semirl controller and verifier (CPU only)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp
RUN groupadd --system --gid 10001 semirl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin semirl
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
# controller REST, gRPC (every service), Prometheus metrics
EXPOSE 8080 50051 9090
# Docker/Podman only (Kubernetes ignores HEALTHCHECK and uses the chart's probes). The verifier runs this image too:
# there, override it, e.g. --health-cmd "python -m semirl.healthcheck --grpc 127.0.0.1:50051 --service readiness".
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
    CMD ["python", "-m", "semirl.healthcheck", "--http", "http://127.0.0.1:8080/readyz"]
CMD ["python", "-m", "semirl.controller"]
