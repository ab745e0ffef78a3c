"""The generator's gRPC servicer: Generate (the direct path), Reload, Status and ReceiveWeights (an in-memory sync),
all on the shared engine."""

from __future__ import annotations

import logging
import time

import grpc

from semirl.core.chat import PromptError
from semirl.core.checkpoint_store import CheckpointError
from semirl.generator.engine import Policy
from semirl.generator.messages import prompt_of, sample_group, sampling_from_proto
from semirl.generator.shared_engine import NotInGroup, SharedEngine
from semirl.generator.weight_receiver import SemirlInitInfo, SemirlUpdateInfo
from semirl.proto import generator_pb2, generator_pb2_grpc, types_pb2

log = logging.getLogger(__name__)

DEFAULT_TRANSFER_TIMEOUT_S = 120.0


class GeneratorServicer(generator_pb2_grpc.GeneratorServiceServicer):
    def __init__(self, engine: SharedEngine, generator_id: str) -> None:
        self.engine = engine
        self.generator_id = generator_id

    def Generate(self, request: generator_pb2.GenerateRequest, context: grpc.ServicerContext):  # noqa: N802
        engine = self.engine
        sampling = sampling_from_proto(request.sampling)
        # GenerateRequest has no prompt format: its prompts are raw text (PromptTask's UNSPECIFIED).
        tasks = [types_pb2.PromptTask(prompt=prompt, sampling=request.sampling) for prompt in request.prompts]
        started = time.perf_counter()
        with engine.lock:
            try:
                if request.policy.path:
                    engine.load(Policy(request.policy.version, request.policy.path))
                version, results = engine.generate([prompt_of(task) for task in tasks], [sampling] * len(tasks))
            except CheckpointError as err:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot load policy: {err}")
            except PromptError as err:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(err))
            except RuntimeError as err:
                context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        seconds = time.perf_counter() - started
        response = generator_pb2.GenerateResponse()
        for task, (prompt_token_ids, samples) in zip(tasks, results, strict=True):
            task.policy.version = version
            response.groups.append(sample_group(task, prompt_token_ids, samples, version, self.generator_id, seconds))
        return response

    def Reload(self, request: generator_pb2.ReloadRequest, context: grpc.ServicerContext):  # noqa: N802
        if not request.policy.path:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "policy.path is required")
        try:
            result = self.engine.load(Policy(request.policy.version, request.policy.path), request.run_id)
        except CheckpointError as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, f"cannot load policy: {err}")
        except Exception as err:  # noqa: BLE001
            log.exception("Reload failed")
            context.abort(grpc.StatusCode.INTERNAL, f"reload failed: {err}")
        log.info("Reload v%d: %s in %.2f s", result.version, result.mode, result.seconds)
        return generator_pb2.ReloadResponse(
            policy_version=result.version, seconds=result.seconds, reloaded=result.reloaded,
            load_seconds=self.engine.engine.load_seconds,
        )

    def Status(self, request: generator_pb2.GeneratorStatusRequest, context: grpc.ServicerContext):  # noqa: N802
        return self.engine.status(self.generator_id, weights_digest=request.weights_digest)

    def ReceiveWeights(self, request: generator_pb2.ReceiveWeightsRequest,  # noqa: N802
                       context: grpc.ServicerContext):
        if not (request.run_id and request.version and request.master_address and request.master_port
                and 0 < request.rank < request.world_size and request.buckets and request.group_name):
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, "run_id, version, master, rank < world_size, buckets and "
                          "group_name are required")
        init = SemirlInitInfo(host=request.master_address, port=request.master_port, rank=request.rank,
                              world_size=request.world_size, name=request.group_name,
                              timeout_s=request.timeout_s or DEFAULT_TRANSFER_TIMEOUT_S)
        update = SemirlUpdateInfo(buckets=[[[p.name, p.dtype, list(p.shape), p.offset] for p in bucket.params]
                                           for bucket in request.buckets])
        try:
            seconds = self.engine.receive(request.run_id, request.version, init, update,
                                          still_wanted=context.is_active)
        except NotInGroup as err:
            context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(err))
        except Exception as err:  # noqa: BLE001 - a peer that died, a deadline: the trainer may retry
            log.warning("receiving v%d of %s failed: %s", request.version, request.run_id, err)
            context.abort(grpc.StatusCode.ABORTED, f"transfer failed: {err}")
        log.info("ReceiveWeights v%d of %s: %.2f s", request.version, request.run_id, seconds)
        return generator_pb2.ReceiveWeightsResponse(
            policy_version=request.version, bytes=sum(b.bytes for b in request.buckets), seconds=seconds)
