"""`python -m semirl.trainer`: the trainer service process."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from semirl.core import telemetry
from semirl.core.lifecycle import stop_on_signals
from semirl.trainer.service import TrainerService
from semirl.trainer.topology import TopologyError, check_devices, topology_from_env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="semirl.trainer", description="semirl DPO trainer (DeepSpeed)")
    parser.add_argument("--redis-url", default=os.environ.get("SEMIRL_REDIS_URL", "redis://127.0.0.1:6379/0"))
    parser.add_argument("--store", default=os.environ.get("SEMIRL_STORE"), help="checkpoint store root")
    parser.add_argument("--controller", default=os.environ.get("SEMIRL_CONTROLLER_GRPC"),
                        help="controller internal gRPC endpoint HOST:PORT")
    parser.add_argument("--grpc-port", type=int, default=int(os.environ.get("SEMIRL_GRPC_PORT", "50053")))
    parser.add_argument("--trainer-id", default=os.environ.get("SEMIRL_TRAINER_ID", "trainer-0"),
                        help="stable consumer name: a restarted trainer replays its own pending groups")
    parser.add_argument("--torch-threads", type=int, default=int(os.environ.get("SEMIRL_TORCH_THREADS", "0")),
                        help="torch intra-op threads (0 = torch's default); 1 avoids oversubscription on a shared CPU")
    parser.add_argument("--advertise-host", default=os.environ.get("SEMIRL_ADVERTISE_HOST", "127.0.0.1"),
                        help="host other services use to reach this instance's gRPC port")
    parser.add_argument("--metrics-port", type=int, default=telemetry.metrics_port_from_env(),
                        help="serve Prometheus metrics at :PORT/metrics (default SEMIRL_METRICS_PORT; 0 = off)")
    parser.add_argument("--log-level", default=os.environ.get("SEMIRL_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    if not args.store:
        parser.error("--store (or SEMIRL_STORE) is required")
    if not args.controller:
        parser.error("--controller (or SEMIRL_CONTROLLER_GRPC) is required")
    try:
        topology = topology_from_env()
        topology.check_supported()
        if topology.gpus_per_node:
            import torch

            check_devices(topology, torch.cuda.device_count())
    except TopologyError as err:
        parser.error(str(err))
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(
        stream=sys.stderr, level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s [trainer] %(message)s",
    )
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    service = TrainerService(args.redis_url, args.store, args.controller, args.grpc_port, args.trainer_id,
                             advertise_host=args.advertise_host)

    metrics = telemetry.serve_metrics(args.metrics_port, registry=service.metrics.registry)

    stop_on_signals(service.stop, "step")
    logging.getLogger(__name__).info("trainer %s serving gRPC on :%d", args.trainer_id, service.port)
    try:
        service.serve_forever()
    finally:
        if metrics is not None:
            metrics.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
