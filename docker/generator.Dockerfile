# syntax=docker/dockerfile:1
# semirl-generator: the vLLM generator on NVIDIA GPUs (skaffold artifact `semirl-generator`).
# The regular `vllm` distribution from the package index. It pins torch, and torch 2.13 brings the CUDA 13 user-space
# libraries as wheels (cuda-toolkit, cuDNN, NCCL), so the base needs no CUDA of its own: a Debian python base keeps the
# image small and its apt packages pinnable. The GPU driver comes from the node (NVIDIA container toolkit / device
# plugin). Any base with python 3.11 at /usr/local/bin works, e.g. a pinned nvidia/cuda runtime image with python.
# Build from the repository root:  docker build -f docker/generator.Dockerfile .
# Index settings: --build-arg PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (empty by default), --secret id=pipca / id=pipconf.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: /opt/venv with vLLM and semirl ----
FROM ${BASE_IMAGE} AS build
ARG SETUPTOOLS_VERSION=78.1.1
ARG VLLM_VERSION=0.32.0
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
# vLLM first (the big, rarely changing layer); it pins torch and transformers.
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    python -m venv /opt/venv \
    && pip install --no-cache-dir "setuptools==${SETUPTOOLS_VERSION}" "vllm==${VLLM_VERSION}"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services/ services/
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    pip install --no-cache-dir --no-build-isolation . \
    && python -c "import semirl.generator.__main__, semirl.healthcheck"

# ---- final ----
FROM ${BASE_IMAGE}
# gcc + libc headers are kept on purpose: Triton (used by vLLM's kernels) compiles its small C launcher stubs with
# the system C compiler at run time ("Failed to find C compiler" otherwise); the upstream vLLM images ship one too.
ARG GCC_VERSION=12.2.0-14+deb12u1
ARG LIBC_DEV_VERSION=2.36-9+deb12u14
LABEL org.opencontainers.image.title="semirl-generator" \
      org.opencontainers.image.description="semirl generator: vLLM on NVIDIA GPUs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    CC=gcc-12 \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
RUN apt-get update \
    && apt-get install -y --no-install-recommends "gcc-12=${GCC_VERSION}" "libc6-dev=${LIBC_DEV_VERSION}" \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 semirl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin semirl
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
# gRPC, Prometheus metrics
EXPOSE 50051 9090
# Docker/Podman only; Kubernetes uses the chart's probes. Model loading can take many minutes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20m --retries=3 \
    CMD ["python", "-m", "semirl.healthcheck", "--grpc", "127.0.0.1:50051", "--service", "readiness"]
CMD ["python", "-m", "semirl.generator"]
