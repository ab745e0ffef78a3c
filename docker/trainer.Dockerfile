# syntax=docker/dockerfile:1
# semirl-trainer: the DeepSpeed trainer on NVIDIA GPUs (skaffold artifact `semirl-trainer`).
# Two stages. build: compilers plus the CUDA 13 compiler from NVIDIA's wheels (the same cuda-toolkit release torch 2.13
# pins, installed into the venv's nvidia/cu13 tree next to torch's CUDA libraries) prebuild DeepSpeed's FusedAdam op
# (DS_BUILD_FUSED_ADAM=1), then nvcc and the headers-only wheels are uninstalled again. final: the python base plus
# the venv, with no compiler, no CUDA toolkit and no caches. torch's wheels carry the CUDA user-space libraries, so
# the base needs no CUDA of its own; the driver comes from the node (NVIDIA container toolkit / device plugin).
# Build from the repository root:  docker build -f docker/trainer.Dockerfile .
# Index settings: --build-arg PIP_INDEX_URL / PIP_EXTRA_INDEX_URL (empty by default), --secret id=pipca / id=pipconf.
ARG BASE_IMAGE=python:3.11-slim-bookworm

# ---- build: /opt/venv with torch, DeepSpeed (FusedAdam prebuilt), transformers and semirl ----
FROM ${BASE_IMAGE} AS build
ARG GCC_VERSION=12.2.0-14+deb12u1
ARG LIBC_DEV_VERSION=2.36-9+deb12u14
ARG SETUPTOOLS_VERSION=78.1.1
ARG TORCH_VERSION=2.13.0
ARG CUDA_TOOLKIT_VERSION=13.0.3
ARG DEEPSPEED_VERSION=0.19.8
ARG TRANSFORMERS_VERSION=5.19.0
ARG SAFETENSORS_VERSION=0.8.0
# GPU architectures the op is compiled for (no GPU at build time): A100, A10/L4/L40, H100/H200, B200, RTX 50 + PTX.
ARG TORCH_CUDA_ARCH_LIST="8.0;8.6;8.9;9.0;10.0;12.0+PTX"
ARG MAX_JOBS=4
ARG PIP_INDEX_URL=
ARG PIP_EXTRA_INDEX_URL=
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/venv/bin:$PATH \
    CC=gcc-12 \
    CXX=g++-12 \
    DS_ACCELERATOR=cuda
RUN apt-get update \
    && apt-get install -y --no-install-recommends \
        "gcc-12=${GCC_VERSION}" "g++-12=${GCC_VERSION}" "libc6-dev=${LIBC_DEV_VERSION}" \
    && rm -rf /var/lib/apt/lists/*
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    python -m venv /opt/venv \
    && pip install --no-cache-dir "setuptools==${SETUPTOOLS_VERSION}" "torch==${TORCH_VERSION}" \
    && pip install --no-cache-dir "cuda-toolkit[nvcc,cccl]==${CUDA_TOOLKIT_VERSION}"
# DeepSpeed compiles against the installed torch (--no-build-isolation). The CUDA "home" is the venv's nvidia/cu13
# tree; torch's extension builder links -lcudart, which the wheels ship only as libcudart.so.13, hence the link.
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    CUDA_HOME="$(python -c 'import nvidia, os; print(os.path.join(nvidia.__path__[0], "cu13"))')" \
    && export CUDA_HOME PATH="${CUDA_HOME}/bin:${PATH}" \
    && ln -sf libcudart.so.13 "${CUDA_HOME}/lib/libcudart.so" \
    && DS_BUILD_OPS=0 DS_BUILD_FUSED_ADAM=1 pip install --no-cache-dir --no-build-isolation \
        "deepspeed==${DEEPSPEED_VERSION}" "transformers==${TRANSFORMERS_VERSION}" "safetensors==${SAFETENSORS_VERSION}" \
    && pip uninstall -y nvidia-cuda-nvcc nvidia-cuda-crt nvidia-nvvm nvidia-cuda-cccl \
    && rm -f "${CUDA_HOME}/lib/libcudart.so" \
    && python -c "from deepspeed.git_version_info import installed_ops as ops; assert ops['fused_adam'], ops"
WORKDIR /src
COPY pyproject.toml README.md ./
COPY services/ services/
RUN --mount=type=secret,id=pipca --mount=type=secret,id=pipconf \
    if [ -f /run/secrets/pipca ]; then export PIP_CERT=/run/secrets/pipca; fi; \
    if [ -f /run/secrets/pipconf ]; then export PIP_CONFIG_FILE=/run/secrets/pipconf; fi; \
    pip install --no-cache-dir --no-build-isolation . \
    && python -c "import deepspeed.ops.adam.fused_adam_op, semirl.trainer.__main__, semirl.healthcheck"

# ---- final: python + the venv; no compiler, no CUDA toolkit ----
FROM ${BASE_IMAGE}
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
RUN groupadd --system --gid 10001 semirl \
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
