# syntax=docker/dockerfile:1
# semirl-reward: the reward-model service on NVIDIA GPUs (skaffold artifact `semirl-reward`): torch + transformers.
# It runs `python -m semirl.reward`, an HF sequence classifier scoring semirl:stream:to_reward; the chart runs it when
# reward.enabled is true, with the model (reward.model, SEMIRL_REWARD_MODEL) read from the checkpoint claim.
# torch 2.13 brings the CUDA 13 user-space libraries as wheels, so a Debian python base is enough; the driver comes
# from the node. Build from the repository root:  docker build -f docker/reward.Dockerfile .
# Index settings: --build-arg PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (empty by default), --secret id=pipca / id=pipconf.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: /opt/venv with torch, transformers (which pins its tokenizers minor release) and semirl ----
FROM ${BASE_IMAGE} AS build
ARG SETUPTOOLS_VERSION=78.1.1
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The dependencies first, from pyproject.toml's `reward` extra alone: a change to the sources rebuilds only the last
# layer. torch must be a CUDA build: `torch==2.13.0` is also met by a `+cpu` wheel where an index carries one.
COPY pyproject.toml ./
COPY services/semirl/deploy/requirements.py /tmp/requirements.py
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    python -m venv /opt/venv \
    && pip install --no-cache-dir "setuptools==${SETUPTOOLS_VERSION}" \
    && python /tmp/requirements.py pyproject.toml reward > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && python -c "import sys, torch; sys.exit(None if torch.version.cuda else f'torch {torch.__version__}: no CUDA')"
COPY README.md ./
COPY services/ services/
RUN pip install --no-cache-dir --no-build-isolation --no-deps . \
    && python -c "import semirl.reward.__main__, semirl.healthcheck, transformers"

# ---- final: python + the venv ----
FROM ${BASE_IMAGE}
LABEL org.opencontainers.image.title="semirl-reward" \
      org.opencontainers.image.description="semirl reward-model service (torch + transformers on NVIDIA GPUs)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility
RUN groupadd --system --gid 10001 semirl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin semirl
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
# gRPC, Prometheus metrics
EXPOSE 50051 9090
HEALTHCHECK --interval=30s --timeout=5s --start-period=10m --retries=3 \
    CMD ["python", "-m", "semirl.healthcheck", "--grpc", "127.0.0.1:50051", "--service", "readiness"]
CMD ["python", "-m", "semirl.reward"]
