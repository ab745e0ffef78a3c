"""Redis key and stream names: the one place they are spelled."""

from __future__ import annotations

PREFIX = "semirl"

# Streams (global, so autoscalers watch fixed names) and their consumer groups.
PROMPTS = f"{PREFIX}:stream:prompts"
TO_VERIFY = f"{PREFIX}:stream:to_verify"
TO_REWARD = f"{PREFIX}:stream:to_reward"
SCORED = f"{PREFIX}:stream:scored"
EVAL_SCORED = f"{PREFIX}:stream:eval_scored"

GENERATORS_GROUP = "generators"
VERIFIERS_GROUP = "verifiers"
REWARDS_GROUP = "rewards"
TRAINER_GROUP = "trainer"
CONTROLLER_GROUP = "controller"

STREAM_GROUPS = {
    PROMPTS: GENERATORS_GROUP,
    TO_VERIFY: VERIFIERS_GROUP,
    TO_REWARD: REWARDS_GROUP,
    SCORED: TRAINER_GROUP,
    EVAL_SCORED: CONTROLLER_GROUP,
}

# Run state (written by the controller, read by everyone).
RUN_INDEX = f"{PREFIX}:runs"              # list of run ids, oldest first
RUN_QUEUE = f"{PREFIX}:runs:queue"        # list of queued run ids
ACTIVE_RUN = f"{PREFIX}:runs:active"      # string: the running run id
RELOAD_CHANNEL = f"{PREFIX}:reload"       # pub/sub: a ReloadRequest was fanned out


def run_key(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}"


def run_metrics_key(run_id: str) -> str:
    return f"{PREFIX}:run:{run_id}:metrics"


def run_steps_key(run_id: str) -> str:
    """List of StepReport JSON documents (metrics plus the groups each step used)."""
    return f"{PREFIX}:run:{run_id}:steps"


def run_syncs_key(run_id: str) -> str:
    """List of the run's weight syncs (controller.views.WeightSync JSON), one per sync, oldest first."""
    return f"{PREFIX}:run:{run_id}:syncs"


def run_eval_key(run_id: str) -> str:
    """Hash of the run's released eval rounds."""
    return f"{PREFIX}:run:{run_id}:eval"


def run_eval_results_key(run_id: str) -> str:
    """Hash of the run's scored eval prompts (per-prompt state, dropped when the run ends)."""
    return f"{PREFIX}:run:{run_id}:eval:results"


def run_trainer_attempts_key(run_id: str) -> str:
    """Hash of the trainer's consecutive failed attempts at a run (`count`, `last_error`): kept in Redis so that a
    trainer job that restarts (a lost rank, a crashed pod) goes on counting (trainer/attempts.py)."""
    return f"{PREFIX}:run:{run_id}:trainer:attempts"


DONE_STAGES = ("generate", "verify", "reward")  # the stages that keep an idempotency record per run


def done_key(run_id: str, stage: str) -> str:
    """Set of prompt ids a stage has already forwarded: the idempotency record of that stage."""
    return f"{PREFIX}:run:{run_id}:done:{stage}"


SERVICES = ("generator", "verifier", "reward", "trainer")


def service_registration_key(service: str, instance_id: str) -> str:
    """String key holding a live instance's gRPC endpoint; expires unless the instance refreshes it."""
    return f"{PREFIX}:service:{service}:{instance_id}"
