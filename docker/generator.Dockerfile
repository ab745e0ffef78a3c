# syntax=docker/dockerfile:1
# semirl-generator: the vLLM generator on NVIDIA GPUs (skaffold artifact `semirl-generator`).
# The regular `vllm` distribution from the package index. It pins torch, and torch 2.13 brings the CUDA 13 user-space
# libraries as wheels (cuda-toolkit, cuDNN, NCCL), so the base needs no CUDA of its own: a Debian python base keeps the
# image small and its apt packages pinnable. The GPU driver comes from the node (NVIDIA container toolkit / device
# plugin). Any base with python 3.11 at /usr/local/bin works, e.g. a pinned nvidia/cuda runtime image with python.
# The base is pinned by tag (resolve it to a digest with your registry and pass BASE_IMAGE=<tag>@sha256:... for a
# reproducible build); the apt packages do not depend on an exact version of it: libc6-dev is pinned to the libc6 the
# base image carries (read at build time), the compilers to Debian's bookworm meta packages.
# nvcc: the CUDA 13 compiler from NVIDIA's wheels (the cuda-toolkit release torch pins) stays in the venv, with
# CUDA_HOME=/opt/venv/cuda and nvcc on PATH, for kernels compiled at run time (FlashInfer's JIT, Triton).
# Build from the repository root:  docker build -f docker/generator.Dockerfile .
# Index settings: --build-arg PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (empty by default), --secret id=pipca / id=pipconf.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: /opt/venv with vLLM and semirl ----
FROM ${BASE_IMAGE} AS build
ARG SETUPTOOLS_VERSION=78.1.1
ARG CUDA_TOOLKIT_VERSION=13.0.3
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /src
# The packages are pyproject.toml's `generator` extra (vLLM, which brings its CUDA torch), installed before the
# sources are copied; nvcc (cuda-toolkit, the release torch pins) is the image's own need: kernels JIT-compiled at run
# time (FlashInfer).
COPY pyproject.toml ./
COPY services/semirl/deploy/requirements.py /tmp/requirements.py
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    python -m venv /opt/venv \
    && pip install --no-cache-dir "setuptools==${SETUPTOOLS_VERSION}" \
    && python /tmp/requirements.py pyproject.toml generator > /tmp/requirements.txt \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && pip install --no-cache-dir "cuda-toolkit[nvcc,cccl]==${CUDA_TOOLKIT_VERSION}" \
    && python -c "import sys, torch; sys.exit(None if torch.version.cuda else f'torch {torch.__version__}: no CUDA')"
RUN cuda="$(python -c 'import nvidia, os; print(os.path.relpath(os.path.join(nvidia.__path__[0], "cu13"), "/opt/venv"))')" \
    && ln -s "${cuda}" /opt/venv/cuda \
    && { [ -e /opt/venv/cuda/lib64 ] || ln -s lib /opt/venv/cuda/lib64; } \
    && ln -sf libcudart.so.13 /opt/venv/cuda/lib/libcudart.so \
    && /opt/venv/cuda/bin/nvcc --version
COPY README.md ./
COPY services/ services/
RUN pip install --no-cache-dir --no-build-isolation --no-deps . \
    && python -m semirl.imagecheck generator

# ---- final ----
FROM ${BASE_IMAGE}
# A C/C++ compiler and libc headers are kept on purpose: Triton (used by vLLM's kernels) compiles its small C
# launcher stubs with the system C compiler at run time ("Failed to find C compiler" otherwise), and nvcc needs a host
# compiler for FlashInfer's JIT kernels; the upstream vLLM images ship both. `gcc`/`g++` are bookworm's meta packages
# (fixed for the release), which also give the default names (gcc, g++, cc, c++) those tools look for.
ARG GCC_DEFAULTS_VERSION=4:12.2.0-3
LABEL org.opencontainers.image.title="semirl-generator" \
      org.opencontainers.image.description="semirl generator: vLLM on NVIDIA GPUs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    CUDA_HOME=/opt/venv/cuda \
    PATH=/opt/venv/cuda/bin:/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    CC=gcc \
    CXX=g++ \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    PYTORCH_NVML_BASED_CUDA_CHECK=1 \
    VLLM_WORKER_MULTIPROC_METHOD=spawn \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
# PYTORCH_NVML_BASED_CUDA_CHECK=1: torch counts GPUs through NVML without initializing CUDA, and spawned (not forked)
# vLLM workers: a CUDA context in the parent can never break vLLM's engine and worker processes.
# libc6-dev must be the exact version of the base image's libc6: read it from dpkg rather than writing it here.
RUN LIBC_VERSION="$(dpkg-query --show --showformat='${Version}' libc6)" \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        "gcc=${GCC_DEFAULTS_VERSION}" "g++=${GCC_DEFAULTS_VERSION}" "libc6-dev=${LIBC_VERSION}" \
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
