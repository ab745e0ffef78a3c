"""Start this node's trainer ranks as child processes (what torchrun does, minus its process sessions).

`python -m semirl.trainer` on a node of a job with more than one rank per node (GPUs per pod, or
SEMIRL_TRAINER_LOCAL_RANKS on CPU) re-runs itself once per local rank with torchrun's variables (RANK,
LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR, MASTER_PORT). Unlike torchrun, the ranks stay in the
launcher's process group and die with it (PR_SET_PDEATHSIG), so a stopped or killed trainer never leaves
orphaned ranks holding a GPU or a port. When one rank exits, the others are stopped and the launcher exits with
its code: the job restarts as a whole and resumes from its last checkpoint. The other ranks are killed, not
asked: they may sit in a collective that will never complete.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import signal
import subprocess
import sys
import time
from types import FrameType

from semirl.trainer.topology import TrainerTopology

log = logging.getLogger(__name__)

PR_SET_PDEATHSIG = 1
STOP_GRACE_S = 30.0


def _die_with_parent() -> None:
    with contextlib.suppress(OSError):  # not Linux: the launcher's handlers still stop the ranks
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def rank_environment(topology: TrainerTopology, local_rank: int) -> dict[str, str]:
    per_node = topology.ranks_per_node
    env = {
        "RANK": str(topology.node_rank * per_node + local_rank),
        "LOCAL_RANK": str(local_rank),
        "WORLD_SIZE": str(topology.world_size),
        "LOCAL_WORLD_SIZE": str(per_node),
        "MASTER_ADDR": topology.master_addr,
        "MASTER_PORT": str(topology.master_port),
    }
    if "OMP_NUM_THREADS" not in os.environ:
        env["OMP_NUM_THREADS"] = "1"  # as torchrun: one thread per rank unless told otherwise
    return env


def launch_local_ranks(topology: TrainerTopology, argv: list[str]) -> int:
    children = [
        subprocess.Popen([sys.executable, "-m", "semirl.trainer", *argv],
                         env={**os.environ, **rank_environment(topology, local)}, preexec_fn=_die_with_parent)
        for local in range(topology.ranks_per_node)
    ]

    # On the driver's node only rank 0 hears the signal: it finishes its step and tells the others to shut down.
    receivers = children[:1] if topology.node_rank == 0 else children

    def forward(signum: int, frame: FrameType | None) -> None:
        for child in receivers:
            if child.poll() is None:
                child.send_signal(signum)

    signal.signal(signal.SIGTERM, forward)
    signal.signal(signal.SIGINT, forward)
    log.info("started %d trainer ranks (node %d of %d, world size %d)", len(children), topology.node_rank,
             topology.nodes, topology.world_size)
    while True:
        exited = [child for child in children if child.poll() is not None]
        if exited:
            code = exited[0].returncode
            break
        time.sleep(0.2)
    # A clean exit of rank 0 told the others to shut down: give them time to do so before stopping them.
    deadline = time.monotonic() + (STOP_GRACE_S if code == 0 else 0.0)
    for child in children:
        try:
            child.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
    codes = [child.returncode for child in children]
    log.info("trainer ranks exited with codes %s", codes)
    if code == 0 and any(codes):
        return 1
    return abs(code)
