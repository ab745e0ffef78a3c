"""The trainer's end of an in-memory weight sync (docs/architecture.md, weight transfer).

For a broadcast plan from the controller: rank 0 hosts the transfer group's rendezvous on the transfer port, asks
each member to join (`ReceiveWeights`, from one thread per member), and every trainer rank gathers the policy a
bucket at a time; rank 0 packs each bucket as it is gathered and broadcasts it while the next one is gathered and
packed (one bucket in flight). A member that dies or freezes mid-transfer never hangs the trainer: the group's
deadline fails the broadcast, and the members that answered ABORTED (alive, their transfer cut short) are sent the
version again in a new group without the missing one. Whoever did not get it loads the version's export, which the
trainer writes after the commit.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field

import grpc
import torch

from semirl.core.grpc_server import channel
from semirl.core.weight_transfer import (
    DEFAULT_BUCKET_BYTES,
    ParamSpec,
    PendingBroadcast,
    TransferError,
    TransferGroup,
    bucket_bytes_of,
    pack,
)
from semirl.proto import controller_pb2, generator_pb2, generator_pb2_grpc
from semirl.trainer.ranks import RankDriver

log = logging.getLogger(__name__)

DEFAULT_TRANSFER_PORT = 50055
RPC_MARGIN_S = 10.0   # a member's RPC outlives the group's deadline by this much, so it reports ABORTED itself
MAX_ATTEMPTS = 2
ABORT_GRACE_S = 3.0


def transfer_device() -> torch.device:
    """NCCL between GPUs, gloo between CPUs: the device the buckets are packed on."""
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")


@dataclass
class SyncResult:
    outcomes: list[controller_pb2.TransferOutcome] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def delivered(self) -> list[str]:
        return [o.generator_id for o in self.outcomes if o.ok]


@dataclass
class _Answer:
    code: grpc.StatusCode | None = grpc.StatusCode.DEADLINE_EXCEEDED   # None: it worked
    detail: str = "no answer"
    seconds: float = 0.0


class WeightSender:
    def __init__(self, driver: RankDriver, *, advertise_host: str, port: int = DEFAULT_TRANSFER_PORT,
                 bucket_bytes: int = DEFAULT_BUCKET_BYTES) -> None:
        self.driver = driver
        self.advertise_host = advertise_host
        self.port = port
        self.bucket_bytes = bucket_bytes

    def send(self, run_id: str, version: int, plan: controller_pb2.WeightSyncPlan) -> SyncResult:
        engine = self.driver.worker.engine
        assert engine is not None, "a run is started"
        buckets = engine.policy_plan(self.bucket_bytes)
        total = sum(bucket_bytes_of(b) for b in buckets)
        started = time.monotonic()
        members = list(plan.members)
        outcomes: dict[str, controller_pb2.TransferOutcome] = {}
        for attempt in range(MAX_ATTEMPTS):
            if not members:
                break
            answers = self._attempt(run_id, version, members, buckets, plan.timeout_s, f"{run_id}/v{version}/{attempt}")
            retry = []
            for member, answer in zip(members, answers, strict=True):
                outcomes[member.generator_id] = controller_pb2.TransferOutcome(
                    generator_id=member.generator_id, ok=answer.code is None, bytes=total if answer.code is None else 0,
                    seconds=answer.seconds, error="" if answer.code is None else f"{answer.code.name}: {answer.detail}")
                if answer.code is grpc.StatusCode.ABORTED:
                    retry.append(member)
            if len(retry) == len(members):  # everyone alive and aborted: the trainer's side failed; no retry
                break
            members = retry
        result = SyncResult(outcomes=[outcomes[m.generator_id] for m in plan.members if m.generator_id in outcomes],
                            seconds=time.monotonic() - started)
        failed = [o for o in result.outcomes if not o.ok]
        log.info("run %s: v%d sent in memory to %d of %d generators (%.1f MB, %.2f s)%s", run_id, version,
                 len(result.delivered), len(plan.members), total / 1e6, result.seconds,
                 "; not to " + ", ".join(f"{o.generator_id} ({o.error})" for o in failed) if failed else "")
        return result

    def _attempt(self, run_id: str, version: int, members: list[controller_pb2.SyncMember],
                 buckets: list[list[ParamSpec]], timeout_s: float, name: str) -> list[_Answer]:
        answers = [_Answer() for _ in members]
        log.info("run %s: sending v%d to %s (group %s)", run_id, version, ", ".join(m.generator_id for m in members),
                 name)
        request_buckets = [generator_pb2.TransferBucket(
            params=[generator_pb2.TransferParam(name=p.name, dtype=p.dtype, shape=list(p.shape), offset=p.offset)
                    for p in bucket], bytes=bucket_bytes_of(bucket)) for bucket in buckets]
        threads = []
        for rank, member in enumerate(members, start=1):
            request = generator_pb2.ReceiveWeightsRequest(
                run_id=run_id, version=version, master_address=self.advertise_host, master_port=self.port,
                rank=rank, world_size=len(members) + 1, buckets=request_buckets, timeout_s=timeout_s,
                group_name=name)
            thread = threading.Thread(target=self._ask, args=(member, request, timeout_s, answers[rank - 1]),
                                      name=f"send-{member.generator_id}", daemon=True)
            thread.start()
            threads.append(thread)
        device = transfer_device()
        group: TransferGroup | None = None
        failure: list[str] = []  # messages, not exceptions: a traceback would keep the group's store alive
        try:
            group = TransferGroup(host=self.advertise_host, port=self.port, rank=0, world_size=len(members) + 1,
                                  name=name, timeout_s=timeout_s, device=device)
        except Exception as err:  # noqa: BLE001 - a member never joined: its answer says why
            log.warning("run %s: transfer group for v%d not formed: %s", run_id, version, err)
            failure.append(str(err))

        in_flight: list[PendingBroadcast] = []  # the previous bucket: on the wire while this one is packed

        def settle() -> None:
            try:
                while in_flight:
                    in_flight.pop(0).wait()
            except TransferError as err:
                log.warning("run %s: broadcast of v%d failed: %s", run_id, version, err)
                failure.append(str(err))
                in_flight.clear()

        def send(bucket: list[ParamSpec], tensors: dict[str, torch.Tensor]) -> None:
            if failure or group is None:
                return  # keep taking part in the gathers: the other trainer ranks are in them too
            try:
                packed = pack(bucket, tensors, device)
            except Exception as err:  # noqa: BLE001
                failure.append(f"packing failed: {err}")
                return
            settle()
            if not failure:
                try:
                    in_flight.append(group.start_broadcast(packed))
                except TransferError as err:
                    failure.append(str(err))

        if group is not None:
            try:
                self.driver.send_policy(version, self.bucket_bytes, send)
                settle()
            finally:
                group.close()
        # After a failure, the live members answer ABORTED within moments (their own deadline matched the group's);
        # one that is frozen would hold the retry for its whole RPC deadline, so it is not waited for.
        deadline = time.monotonic() + (ABORT_GRACE_S if failure else timeout_s + 2 * RPC_MARGIN_S)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return answers

    @staticmethod
    def _ask(member: controller_pb2.SyncMember, request: generator_pb2.ReceiveWeightsRequest, timeout_s: float,
             answer: _Answer) -> None:
        started = time.monotonic()
        rpc_channel = channel(member.address)
        try:
            generator_pb2_grpc.GeneratorServiceStub(rpc_channel).ReceiveWeights(request,
                                                                                timeout=timeout_s + RPC_MARGIN_S)
            answer.code, answer.detail = None, ""
        except grpc.RpcError as err:
            answer.code = err.code() if hasattr(err, "code") else grpc.StatusCode.UNKNOWN
            answer.detail = err.details() if hasattr(err, "details") else str(err)
        finally:
            answer.seconds = time.monotonic() - started
            rpc_channel.close()
