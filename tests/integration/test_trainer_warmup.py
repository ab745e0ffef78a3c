"""The trainer imports what a run's engine needs when its process starts (trainer/warmup.py): building the first
TrainingEngine afterwards imports none of the heavy modules (DeepSpeed's engine and Muon optimizer, torch's
inductor, transformers' auto classes), which cost ~6-9 s between a run's start and its first step when they were
imported there. Real DeepSpeed and transformers, in a fresh interpreter (what matters is a new process's imports)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import yaml

PROBE = textwrap.dedent(
    """
    import json, sys
    from semirl.spec import parse_run_spec
    from semirl.trainer.warmup import import_training_stack
    import_training_stack()
    from semirl.trainer.engine import TrainingEngine
    before = set(sys.modules)
    engine = TrainingEngine(parse_run_spec(open(sys.argv[1]).read()))
    print(json.dumps({"new": sorted(set(sys.modules) - before), "reference": engine.ref is not None}))
    """
)

HEAVY_PREFIXES = ("deepspeed.runtime.engine", "deepspeed.runtime.zero", "torch._inductor", "torch._dynamo",
                  "transformers.models.auto", "transformers.integrations.deepspeed", "transformers.modeling_utils")


def test_a_warmed_trainer_builds_its_first_engine_without_heavy_imports(tmp_path, tiny_setup) -> None:  # noqa: ANN001
    spec = tmp_path / "grpo.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "warm", "algorithm": "grpo", "model": {"path": str(tiny_setup.model_dir)},
        "data": {"train": {"path": str(tiny_setup.train_path)}}, "train": {"steps": 1, "batch_prompts": 2},
        "grpo": {"kl_beta": 0.001},  # a reference model too
    }))
    env = {**os.environ, "DS_ACCELERATOR": "cpu", "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-c", PROBE, str(spec)], env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-4000:]
    built = json.loads(proc.stdout.strip().splitlines()[-1])
    assert built["reference"]
    late = [name for name in built["new"] if name.startswith(HEAVY_PREFIXES)]
    assert late == [], f"imported only when the engine was built: {late}"
