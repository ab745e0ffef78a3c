"""`semirl up | run | status | sweep | demo | tiny-model`."""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING

from semirl.client import ControllerClient, eval_table_lines, status_lines, summary_lines
from semirl.spec import parse_run_spec

if TYPE_CHECKING:
    from semirl.local.stack import LocalStack

DEFAULT_URL = os.environ.get("SEMIRL_CONTROLLER_URL", "http://127.0.0.1:8080")
STATE_DIR = Path(".semirl")
DEMO_SPEC = Path("examples/tiny-math-dpo.yaml")


def _raise_interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


def _stack(args: argparse.Namespace, generator_args: list[str] | None = None,
           reward_args: list[str] | None = None, *, metrics: bool = False):  # noqa: ANN202
    from semirl.local.stack import LocalStack

    if not reward_args and getattr(args, "reward_model", None):
        reward_args = ["--model", str(Path(args.reward_model).resolve())]
    return LocalStack(
        workdir=args.state_dir / "local",
        store=(args.state_dir / "store").resolve(),
        http_port=args.port,
        generators=args.generators,
        verifiers=args.verifiers,
        trainer_ranks=args.trainer_ranks,
        generator_args=generator_args or [],
        reward_args=reward_args or [],
        metrics=metrics,
    )


def reward_args_for(spec_path: Path) -> list[str]:
    """The local reward service a spec needs (its `reward_model` section), or none."""
    spec = parse_run_spec(spec_path.read_text())
    rm = spec.reward_model
    if rm is None:
        return []
    args = ["--model", str(Path(rm.path).resolve()), "--dtype", rm.dtype, "--max-length", str(rm.max_length),
            "--prompt-format", rm.prompt_format]
    return [*args, "--score-token", rm.score_token] if rm.score_token else args


def preload_args(spec_path: Path) -> list[str]:
    """Generator arguments that build its engine for `spec_path`'s seed model while the stack starts (the run's
    first tasks then find it loaded instead of waiting for the build)."""
    spec = parse_run_spec(spec_path.read_text())
    return ["--model", str(Path(spec.model.path).resolve()), "--dtype", spec.model.dtype,
            "--max-model-len", str(spec.model.max_model_len)]


def cmd_up(args: argparse.Namespace) -> int:
    signal.signal(signal.SIGTERM, _raise_interrupt)
    stack = _stack(args)
    try:
        stack.start()
        print(f"semirl is up: controller at {stack.url} (API docs at {stack.url}/docs)")
        print(f"logs in {stack.logs}/, checkpoints in {stack.store}/ — Ctrl-C to stop")
        while True:
            for name, service in stack.services.items():
                if not service.alive:
                    print(f"{name} exited; see {service.log_path}", file=sys.stderr)
                    return 1
            time.sleep(1)
    except KeyboardInterrupt:
        print("stopping…")
        return 0
    finally:
        stack.stop()


def cmd_run(args: argparse.Namespace) -> int:
    client = ControllerClient(args.url)
    started = time.monotonic()
    try:
        created = client.submit(Path(args.spec))
    except (ValueError, PermissionError) as err:
        print(err, file=sys.stderr)
        return 2
    if args.detach:
        print(json.dumps(created) if args.json else f"submitted run {created['id']}")
        return 0
    if not args.json:
        print(f"submitted run {created['id']}")
    record = client.wait(created["id"], progress=not args.json)
    if args.json:
        print(json.dumps(record, indent=2))
    else:
        print("\n".join([*summary_lines(record, time.monotonic() - started), "", *eval_table_lines(record)]))
    return 0 if record["state"] == "succeeded" else 1


def cmd_status(args: argparse.Namespace) -> int:
    client = ControllerClient(args.url)
    if args.run:
        record = client.run(args.run)
        if args.json:
            print(json.dumps(record, indent=2))
        else:
            print("\n".join(eval_table_lines(record) if args.evals else status_lines(record)))
        return 0
    runs = client.runs()
    if args.json:
        print(json.dumps(runs, indent=2))
        return 0
    for run in runs:
        step, version = run.get("step", 0), run.get("policy_version", 0)
        print(f"{run['id']:<32} {run['state']:<10} step {step:>5}  policy v{version}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    import yaml

    from semirl.sweep.grid import build_grid
    from semirl.sweep.runner import SweepDirectory, SweepPlan, prepare

    try:
        settings, constants = build_grid(args.set or [], args.seeds)
        base = yaml.safe_load(Path(args.spec).read_text())
        if not isinstance(base, dict):
            raise ValueError(f"{args.spec} is not a run spec (a YAML mapping)")
        plan = SweepPlan(base_spec=base, constants=constants, settings=settings, seeds=args.seeds)
        specs = prepare(plan, SweepDirectory(args.out))
    except (OSError, ValueError, yaml.YAMLError) as err:
        print(f"semirl sweep: {err}", file=sys.stderr)
        return 2
    print(f"sweep: {len(settings)} settings x {args.seeds} seeds = {len(plan.cells())} runs into {args.out}/",
          flush=True)
    if args.url:
        return _sweep_on(plan, specs, args, ControllerClient(args.url), args.generator_metrics)
    try:
        with _tiny_local_stack(args, Path(args.spec), metrics=True) as stack:
            return _sweep_on(plan, specs, args, ControllerClient(stack.url), stack.metrics_urls("generator-"))
    except KeyboardInterrupt:
        print(f"interrupted; run `semirl sweep` again with the same options to resume {args.out}/", file=sys.stderr)
        return 130


def _sweep_on(plan, specs: dict[str, dict], args: argparse.Namespace, client: ControllerClient,  # noqa: ANN001
              generator_metrics: list[str]) -> int:
    import httpx

    try:
        return _sweep_cells(plan, specs, args, client, generator_metrics)
    except (httpx.HTTPError, TimeoutError) as err:
        print(f"semirl sweep: {err}; what finished is kept: run the same command again to resume {args.out}/",
              file=sys.stderr)
        return 1


def _sweep_cells(plan, specs: dict[str, dict], args: argparse.Namespace, client: ControllerClient,  # noqa: ANN001
                 generator_metrics: list[str]) -> int:
    from semirl.sweep.report import write_report
    from semirl.sweep.results import CellResult, GeneratorClock
    from semirl.sweep.runner import SweepDirectory, run_sweep

    started = time.monotonic()
    cells = len(plan.cells())
    directory = SweepDirectory(args.out)
    finished = {r.key for r in directory.results()}

    def report(result: CellResult) -> None:
        finished.add(result.key)
        done = len(finished)
        accuracy = "; ".join(f"{e.eval_set} {100 * e.accuracy:.1f}%" for e in result.evals if e.step == result.steps)
        print(f"[{done}/{cells}] {result.setting}, seed {result.seed}: {result.state}, {accuracy or 'no evaluation'}"
              f", {result.wall_s:.0f}s", flush=True)

    results = run_sweep(plan, specs, directory, client, GeneratorClock(generator_metrics),
                        generators=len(generator_metrics), progress=not args.quiet, on_result=report)
    paths = write_report(args.out, plan.settings, results)
    print((args.out / "table.md").read_text())
    print(f"sweep done in {time.monotonic() - started:.0f}s: " + ", ".join(str(p) for p in paths))
    return 0 if all(r.state == "succeeded" for r in results) else 1


def cmd_tiny_model(args: argparse.Namespace) -> int:
    from semirl.tinymodel.assets import ensure_reward_task
    from semirl.tinymodel.build import build_tiny_setup

    setup = build_tiny_setup(args.out, seed=args.seed)
    print(f"model: {setup.model_dir}\ntrain: {setup.train_path}\neval:  {setup.eval_path}")
    if args.reward_model:
        reward_model = ensure_reward_task(setup, args.out, seed=args.seed)
        print(f"reward model: {reward_model.model_dir}")
    return 0


@contextlib.contextmanager
def _tiny_local_stack(args: argparse.Namespace, spec_path: Path, *, metrics: bool = False) -> Iterator[LocalStack]:
    """Build the tiny model and task (and the tiny reward model when the spec has a `reward_model` section), start a
    local stack for `spec_path` (its engine built at start-up), and stop it on the way out."""
    from semirl.tinymodel.build import build_tiny_setup

    signal.signal(signal.SIGTERM, _raise_interrupt)
    print("building the tiny seed model and synthetic task (cached after the first run)…", flush=True)
    setup = build_tiny_setup(args.state_dir / "tiny", seed=0)
    if parse_run_spec(spec_path.read_text()).reward_model is not None:
        from semirl.tinymodel.assets import ensure_reward_task

        print("building the tiny reward model and its task (cached after the first run)…", flush=True)
        ensure_reward_task(setup, args.state_dir / "tiny")
    stack = _stack(args, preload_args(spec_path), reward_args_for(spec_path), metrics=metrics)
    try:
        print("starting redis, controller, generator(s), verifier, trainer…", flush=True)
        stack.start()
        print(f"controller at {stack.url}; logs in {stack.logs}/", flush=True)
        yield stack
    finally:
        stack.stop()


def cmd_demo(args: argparse.Namespace) -> int:
    """Build the tiny model and task, start the stack, run the demo spec, print a summary, stop."""
    started = time.monotonic()
    try:
        with _tiny_local_stack(args, Path(args.spec)) as stack:
            client = ControllerClient(stack.url)
            created = client.submit(Path(args.spec))
            print(f"submitted {args.spec} as run {created['id']}", flush=True)
            record = client.wait(created["id"], progress=True)
    except KeyboardInterrupt:
        print("interrupted; stopping the stack", file=sys.stderr)
        return 130
    print("\n".join(summary_lines(record, time.monotonic() - started)))
    return 0 if record["state"] == "succeeded" else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="semirl", description="Semi-online RL (DPO, GRPO) for LLMs.")
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    def stack_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("--port", type=int, default=8080, help="controller REST port")
        p.add_argument("--generators", type=int, default=1)
        p.add_argument("--verifiers", type=int, default=1)
        p.add_argument("--trainer-ranks", type=int, default=1,
                       help="DeepSpeed ranks of the trainer (processes on this machine; gloo on CPU)")
        p.add_argument("--state-dir", type=Path, default=STATE_DIR, help="logs, Redis data, checkpoint store")
        p.add_argument("--reward-model", help="also start a reward service with this HF sequence-classification "
                       "model (demo: the spec's reward_model section does it)")

    up = sub.add_parser("up", help="start the whole stack locally (Ctrl-C stops it)")
    stack_options(up)
    up.set_defaults(func=cmd_up)

    run = sub.add_parser("run", help="submit a run spec and follow it")
    run.add_argument("spec")
    run.add_argument("--url", default=DEFAULT_URL, help="controller URL (the API token comes from $SEMIRL_API_TOKEN)")
    run.add_argument("--detach", action="store_true", help="submit and return")
    run.add_argument("--json", action="store_true", help="no progress bar; print the finished run's record as JSON")
    run.set_defaults(func=cmd_run)

    status = sub.add_parser("status", help="list runs, or show one")
    status.add_argument("run", nargs="?")
    status.add_argument("--evals", action="store_true",
                        help="with a run: its evaluations as a table (accuracy ± standard error per set and step)")
    status.add_argument("--json", action="store_true", help="the run's record (or the run list) as JSON")
    status.add_argument("--url", default=DEFAULT_URL)
    status.set_defaults(func=cmd_status)

    from semirl.sweep.grid import DEFAULT_CONSTANTS, DEFAULT_GRID

    sweep = sub.add_parser(
        "sweep", help="run a spec at several settings and seeds; write a table and plots (resumable)",
        description="Without a multi-valued --set, the default grid: "
        + "; ".join(s.name for s in DEFAULT_GRID) + ", each with "
        + ", ".join(f"{k}={v}" for k, v in DEFAULT_CONSTANTS.items()) + ". Without --url, a local stack is started.")
    stack_options(sweep)
    sweep.add_argument("--spec", default=str(DEMO_SPEC), help="the base spec every setting overrides")
    sweep.add_argument("--set", action="append", metavar="KEY=V1[,V2...]",
                       help="a dotted spec key and its values: several values make settings (several such keys: "
                       "their product); one value applies to every setting (e.g. --set train.steps=20)")
    sweep.add_argument("--seeds", type=int, default=3, help="seeds per setting (train.seed and data.shuffle_seed)")
    sweep.add_argument("--out", type=Path, default=Path("sweep-results"),
                       help="results directory (a re-run with the same options resumes it)")
    sweep.add_argument("--url", help="a running controller to submit to, instead of starting a local stack")
    sweep.add_argument("--generator-metrics", action="append", default=[], metavar="URL",
                       help="with --url: each generator's /metrics URL, for the generator idle fraction")
    sweep.add_argument("--quiet", action="store_true", help="no progress bar per run")
    sweep.set_defaults(func=cmd_sweep)

    demo = sub.add_parser("demo", help="tiny model + synthetic task, semi-online DPO end to end")
    stack_options(demo)
    demo.add_argument("--spec", default=str(DEMO_SPEC))
    demo.set_defaults(func=cmd_demo)

    tiny = sub.add_parser("tiny-model", help="build the tiny seed model and synthetic task data")
    tiny.add_argument("--out", type=Path, default=STATE_DIR / "tiny")
    tiny.add_argument("--seed", type=int, default=0)
    tiny.add_argument("--reward-model", action="store_true",
                      help="also the tiny reward model, its non-verifiable task and the mixed task")
    tiny.set_defaults(func=cmd_tiny_model)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
