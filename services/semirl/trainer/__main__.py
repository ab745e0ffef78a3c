"""`python -m semirl.trainer`: the trainer service process."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from semirl.core.lifecycle import add_worker_arguments, configure_logging, serve_until_stopped
from semirl.trainer.service import TrainerService
from semirl.trainer.topology import TopologyError, check_devices, topology_from_env


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="semirl.trainer", description="semirl DPO trainer (DeepSpeed)")
    add_worker_arguments(parser, grpc_port=50053)
    parser.add_argument("--store", default=os.environ.get("SEMIRL_STORE"), help="checkpoint store root")
    parser.add_argument("--controller", default=os.environ.get("SEMIRL_CONTROLLER_GRPC"),
                        help="controller internal gRPC endpoint HOST:PORT")
    parser.add_argument("--trainer-id", default=os.environ.get("SEMIRL_TRAINER_ID", "trainer-0"),
                        help="stable consumer name: a restarted trainer replays its own pending groups")
    parser.add_argument("--torch-threads", type=int, default=int(os.environ.get("SEMIRL_TORCH_THREADS", "0")),
                        help="torch intra-op threads (0 = torch's default); 1 avoids oversubscription on a shared CPU")
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
    configure_logging(args.log_level, "trainer")
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    service = TrainerService(args.redis_url, args.store, args.controller, args.grpc_port, args.trainer_id,
                             advertise_host=args.advertise_host)

    logging.getLogger(__name__).info("trainer %s serving gRPC on :%d", args.trainer_id, service.port)
    return serve_until_stopped(service, args.metrics_port, "step")


if __name__ == "__main__":
    sys.exit(main())
