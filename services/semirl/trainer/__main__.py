"""`python -m semirl.trainer`: the trainer service process."""

from __future__ import annotations

import argparse
import os
import signal
import sys

from semirl.core.grpc_server import ServiceServer
from semirl.core.worker import add_worker_arguments, configure_logging, serve_until_stopped
from semirl.proto import trainer_pb2_grpc
from semirl.trainer.distributed import RankGroup, join_trainer_group
from semirl.trainer.grpc_api import StatusServicer
from semirl.trainer.launcher import launch_local_ranks
from semirl.trainer.loop import TrainerWorker
from semirl.trainer.ranks import follow
from semirl.trainer.topology import TopologyError, check_devices, topology_from_env
from semirl.trainer.warmup import import_training_stack
from semirl.trainer.weight_sender import DEFAULT_TRANSFER_PORT


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="semirl.trainer", description="semirl DPO trainer (DeepSpeed)")
    add_worker_arguments(parser, grpc_port=50053)
    parser.add_argument("--store", default=os.environ.get("SEMIRL_STORE"), help="checkpoint store root")
    parser.add_argument("--controller", default=os.environ.get("SEMIRL_CONTROLLER_GRPC"),
                        help="controller internal gRPC endpoint HOST:PORT")
    parser.add_argument("--trainer-id", default=os.environ.get("SEMIRL_TRAINER_ID", "trainer-0"),
                        help="stable consumer name: a restarted trainer replays its own pending groups")
    parser.add_argument("--transfer-port", type=int,
                        default=int(os.environ.get("SEMIRL_TRANSFER_PORT", str(DEFAULT_TRANSFER_PORT))),
                        help="port of the in-memory weight transfer's rendezvous (rank 0; generators connect to it)")
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


def build_trainer(redis_url: str, store: str, controller: str, grpc_port: int, trainer_id: str, *,
                  poll_s: float = 1.0, retry_s: float = 10.0, advertise_host: str = "127.0.0.1",
                  ranks: RankGroup | None = None, transfer_port: int = DEFAULT_TRANSFER_PORT) -> TrainerWorker:
    """Rank 0's worker with its Status servicer."""
    worker = TrainerWorker(redis_url, store, controller, grpc_port, trainer_id, poll_s=poll_s, retry_s=retry_s,
                           advertise_host=advertise_host, ranks=ranks, transfer_port=transfer_port)
    worker.server.add(trainer_pb2_grpc.add_TrainerServiceServicer_to_server, StatusServicer(worker.status))
    return worker


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    topology = topology_from_env()
    if topology.world_size > 1 and "RANK" not in os.environ:
        configure_logging(args.log_level, "trainer-launcher")
        return launch_local_ranks(topology, sys.argv[1:] if argv is None else argv)
    rank = int(os.environ.get("RANK", "0"))
    configure_logging(args.log_level, "trainer" if rank == 0 else f"trainer-rank{rank}")
    if args.torch_threads > 0:
        import torch

        torch.set_num_threads(args.torch_threads)
    import_training_stack()
    ranks = join_trainer_group()
    if not ranks.is_driver:
        return _follow(ranks, args.grpc_port if os.environ.get("LOCAL_RANK", "0") == "0" else None)
    worker = build_trainer(args.redis_url, args.store, args.controller, args.grpc_port, args.trainer_id,
                           advertise_host=args.advertise_host, ranks=ranks, transfer_port=args.transfer_port)
    return serve_until_stopped(worker, args.metrics_port)


def _follow(ranks: RankGroup, health_port: int | None) -> int:
    """A rank other than 0; the first rank of another node answers the pod's health probes."""
    if os.environ.get("RANK") == os.environ.get("LOCAL_RANK"):
        # On rank 0's node SIGTERM goes to rank 0 alone (trainer/launcher.py); a stack stopping its process group
        # reaches this rank too, but it must stay in step with rank 0, which tells it to shut down.
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        signal.signal(signal.SIGINT, signal.SIG_IGN)
    server = None
    if health_port is not None:
        server = ServiceServer(f"0.0.0.0:{health_port}", "semirl.v1.TrainerService")
        server.start()
        server.set_serving(True)
    try:
        follow(ranks)
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
