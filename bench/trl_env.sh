#!/usr/bin/env bash
# The TRL peer benchmark's own environment (bench/trl_peer.py runs in it): .venv-trl with CPU torch, a pinned
# TRL (the newest that installs with semirl's torch) and math-verify; nothing of semirl's stack (no vLLM, no
# DeepSpeed, no semirl package). Idempotent: re-running only checks the pins.
#
#     bash bench/trl_env.sh            # PYTHON=python3.11 bash bench/trl_env.sh to pick the interpreter
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
VENV=.venv-trl
TORCH_VERSION=2.13.0
TRL_VERSION=1.16.0
MATH_VERIFY_VERSION=0.9.0

test -x "$VENV/bin/python" || "$PYTHON" -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch first, so TRL's requirements resolve against this build and never replace it.
"$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION"
"$VENV/bin/python" -m pip install -q "torch==$TORCH_VERSION" "trl==$TRL_VERSION" "math-verify==$MATH_VERIFY_VERSION" pyyaml
"$VENV/bin/python" - <<'PY'
import importlib.util, sys
import torch, transformers, trl, math_verify  # noqa: F401
heavy = [name for name in ("vllm", "deepspeed", "semirl") if importlib.util.find_spec(name)]
if heavy:
    sys.exit(f".venv-trl must not hold semirl's stack, found: {heavy}")
print(f"TRL environment ready: trl {trl.__version__}, transformers {transformers.__version__}, torch {torch.__version__}")
PY
