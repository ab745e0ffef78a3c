# syntax=docker/dockerfile:1
# semirl-trainer: the DeepSpeed trainer on NVIDIA GPUs (skaffold artifact `semirl-trainer`).
# Two stages. build: the venv with torch (whose wheels carry the CUDA 13 user-space libraries), DeepSpeed,
# transformers and semirl. final: the python base plus the venv, with no compiler, no CUDA toolkit and no caches; the
# driver comes from the node (NVIDIA container toolkit / device plugin).
# No DeepSpeed op is prebuilt (DS_BUILD_OPS=0) and no nvcc is installed: the trainer's optimizer is torch.optim.AdamW
# (services/semirl/trainer/engine.py; DeepSpeed's ZeRO partitions it, zero_allow_untested_optimizer), so a prebuilt
# FusedAdam would never run. Moving to DeepSpeed's FusedAdam or CPU Adam (optimizer offload) means prebuilding that op
# here again (DS_BUILD_FUSED_ADAM=1 / DS_BUILD_CPU_ADAM=1 with nvcc from the cuda-toolkit wheels and gcc); the image
# tests check the two stay consistent.
# Build from the repository root:  docker build -f docker/trainer.Dockerfile .
# Index settings: --build-arg PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (empty by default), --secret id=pipca / id=pipconf.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: /opt/venv with torch, DeepSpeed (no prebuilt ops), transformers and semirl ----
FROM ${BASE_IMAGE} AS build
ARG SETUPTOOLS_VERSION=78.1.1
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    DS_ACCELERATOR=cuda
WORKDIR /src
# The packages are pyproject.toml's `trainer` extra (accelerate included: transformers' ZeRO-3 loading needs it),
# installed before the sources are copied. torch first, asserted a CUDA build (`torch==2.13.0` is also met by a
# `+cpu` wheel where an index carries one).
COPY pyproject.toml ./
COPY services/semirl/deploy/requirements.py /tmp/requirements.py
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    python -m venv /opt/venv \
    && pip install --no-cache-dir "setuptools==${SETUPTOOLS_VERSION}" \
    && python /tmp/requirements.py pyproject.toml trainer --only torch > /tmp/torch.txt \
    && pip install --no-cache-dir -r /tmp/torch.txt \
    && python -c "import sys, torch; sys.exit(None if torch.version.cuda else f'torch {torch.__version__}: no CUDA')"
# DeepSpeed's sdist builds against the installed torch (--no-build-isolation); with DS_BUILD_OPS=0 it compiles nothing.
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    python /tmp/requirements.py pyproject.toml trainer > /tmp/requirements.txt \
    && DS_BUILD_OPS=0 pip install --no-cache-dir --no-build-isolation -r /tmp/requirements.txt
COPY README.md ./
COPY services/ services/
RUN pip install --no-cache-dir --no-build-isolation --no-deps . \
    && python -c "import accelerate, deepspeed, semirl.trainer.__main__, semirl.healthcheck"
# An NCCL network plugin wheel (a cloud's fabric plugin), pip requirements given at build time; empty = none.
ARG NCCL_NET_PLUGIN_PIP=
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    printf '%s\n' ${NCCL_NET_PLUGIN_PIP} > /tmp/nccl-plugin.txt \
    && pip install --no-cache-dir --no-deps --requirement /tmp/nccl-plugin.txt

# ---- final: python + the venv; no compiler, no CUDA toolkit ----
FROM ${BASE_IMAGE}
# FABRIC=rdma: the RDMA userspace (rdma-core's verbs and RDMA-CM libraries and providers) for NCCL over InfiniBand /
# RoCE; NCCL's own IB transport is in the nvidia-nccl wheel. NCCL_NET_PLUGIN_PIP: pip requirements of an NCCL
# network plugin wheel to add (a cloud's fabric plugin); its library is found through NCCL_NET_PLUGIN (the chart's
# trainer.fabric.ncclNetPlugin). docs/deploy.md, "multi-node fabric".
ARG FABRIC=tcp
ARG RDMA_CORE_VERSION=44.0-2
LABEL org.opencontainers.image.title="semirl-trainer" \
      org.opencontainers.image.description="semirl trainer: DeepSpeed on NVIDIA GPUs" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    TMPDIR=/tmp \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    DS_ACCELERATOR=cuda
RUN case "${FABRIC}" in tcp|rdma) ;; *) echo "FABRIC must be tcp or rdma, not ${FABRIC}" >&2; exit 1 ;; esac \
    && apt-get update \
    && if [ "${FABRIC}" = rdma ]; then \
        apt-get install -y --no-install-recommends "rdma-core=${RDMA_CORE_VERSION}" \
            "libibverbs1=${RDMA_CORE_VERSION}" "ibverbs-providers=${RDMA_CORE_VERSION}" \
            "librdmacm1=${RDMA_CORE_VERSION}"; \
    fi \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 semirl \
    && useradd --system --uid 10001 --gid 10001 --home-dir /tmp --no-create-home --shell /usr/sbin/nologin semirl
COPY --from=build /opt/venv /opt/venv
WORKDIR /tmp
USER 10001:10001
# gRPC, Prometheus metrics, torch.distributed rendezvous (MASTER_PORT)
EXPOSE 50051 9090 29500
# Docker/Podman only; Kubernetes uses the chart's probes. Loading the policy can take many minutes.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20m --retries=3 \
    CMD ["python", "-m", "semirl.healthcheck", "--grpc", "127.0.0.1:50051", "--service", "readiness"]
CMD ["python", "-m", "semirl.trainer"]
