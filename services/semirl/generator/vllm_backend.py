"""vLLM weight-transfer backend "semirl": runs inside vLLM's worker (docs/architecture.md, weight transfer).

vLLM 0.32's worker runs the four-phase API for any backend in its `WeightTransferEngineFactory` registry
(init_weight_transfer_engine -> start_weight_update -> update_weights -> finish_weight_update), on CPU workers as
on GPU ones. This backend joins the trainer's `TransferGroup` (gloo on CPU, NCCL on CUDA), receives the planned
buckets one at a time and gives each bucket's views to the model's `load_weights`, inside vLLM's layerwise-reload
lifecycle: the same path as an in-place `reload_weights` from storage, so fused (qkv, gate_up) and tied weights go
through vLLM's own loaders, as in its `nccl` backend.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import torch
from vllm.distributed.weight_transfer.base import WeightTransferEngine

from semirl.core.weight_transfer import PendingBroadcast, TransferGroup, bucket_bytes_of, unpack
from semirl.generator.weight_receiver import SemirlInitInfo, SemirlUpdateInfo, bucket_specs

log = logging.getLogger(__name__)


class SemirlWeightTransferEngine(WeightTransferEngine[SemirlInitInfo, SemirlUpdateInfo]):
    init_info_cls = SemirlInitInfo
    update_info_cls = SemirlUpdateInfo
    supports_draft_weight_update = False

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.group: TransferGroup | None = None

    def init_transfer_engine(self, init_info: SemirlInitInfo) -> None:
        if self.parallel_config.world_size != 1:
            raise RuntimeError("in-memory weight sync needs a single-worker engine (tensor_parallel_size 1)")
        self.shutdown()
        self.group = TransferGroup(host=init_info.host, port=init_info.port, rank=init_info.rank,
                                   world_size=init_info.world_size, name=init_info.name,
                                   timeout_s=init_info.timeout_s, device=self.device)

    def start_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import initialize_layerwise_reload

        initialize_layerwise_reload(self.model)

    def finish_weight_update(self) -> None:
        from vllm.model_executor.model_loader.reload import finalize_layerwise_reload

        finalize_layerwise_reload(self.model, self.model_config)

    def receive_weights(self, update_info: SemirlUpdateInfo) -> None:
        if self.group is None:
            raise RuntimeError("receive_weights before init_transfer_engine")
        buckets = [bucket_specs(b) for b in update_info.buckets]
        wire = load = 0.0

        def receive(bucket: list[Any]) -> PendingBroadcast:
            # A fresh buffer per bucket: the layerwise loader keeps the views of a layer's first tensors until its
            # last one arrives, possibly in the next bucket. Finished layers drop theirs (~3 buckets alive at most).
            return self.group.start_broadcast(torch.empty(bucket_bytes_of(bucket), dtype=torch.uint8,
                                                          device=self.device))

        pending = receive(buckets[0]) if buckets else None
        for index, bucket in enumerate(buckets):
            started = time.perf_counter()
            flat = pending.wait()
            received = time.perf_counter()
            # The next bucket comes over the wire while this one loads.
            pending = receive(buckets[index + 1]) if index + 1 < len(buckets) else None
            self.model.load_weights(list(unpack(bucket, flat)))
            wire, load = wire + received - started, load + time.perf_counter() - received
        log.info("%d buckets: %.2f s waiting for the wire, %.2f s in load_weights", len(buckets), wire, load)

    def shutdown(self) -> None:
        group, self.group = self.group, None
        if group is not None:
            group.close()
