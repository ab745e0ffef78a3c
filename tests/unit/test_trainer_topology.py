"""The trainer's place in a DeepSpeed job, read from what the chart puts in its pod."""

from __future__ import annotations

import pytest

from semirl.trainer.topology import TopologyError, check_devices, ordinal_from_hostname, topology_from_env


def test_statefulset_identity_gives_rank_and_master() -> None:
    env = {"SEMIRL_TRAINER_REPLICAS": "2", "SEMIRL_GPUS_PER_POD": "8", "NODE_RANK": "1",
           "MASTER_ADDR": "rl-semirl-trainer-0.rl-semirl-trainer-headless.rl.svc.cluster.local", "MASTER_PORT": "29500"}
    topology = topology_from_env(env)
    assert (topology.nodes, topology.ranks_per_node, topology.node_rank, topology.world_size) == (2, 8, 1, 16)
    assert topology.master_addr.startswith("rl-semirl-trainer-0.")


def test_rank_falls_back_to_the_pod_ordinal() -> None:
    assert ordinal_from_hostname("rl-semirl-trainer-3") == 3 and ordinal_from_hostname("laptop") is None
    assert topology_from_env({"SEMIRL_TRAINER_REPLICAS": "4"}, hostname="rl-semirl-trainer-2").node_rank == 2
    assert topology_from_env({}, hostname="laptop").node_rank == 0


def test_many_ranks_are_accepted_and_a_rank_outside_the_job_is_refused() -> None:
    topology_from_env({"SEMIRL_GPUS_PER_POD": "1"}, hostname="rl-semirl-trainer-0").check_supported()
    topology_from_env({}, hostname="laptop").check_supported()  # local: no GPU, one CPU rank
    multi = topology_from_env({"SEMIRL_GPUS_PER_POD": "8", "SEMIRL_TRAINER_REPLICAS": "4"}, hostname="t-3")
    multi.check_supported()
    assert (multi.world_size, multi.node_rank) == (32, 3)
    cpu = topology_from_env({"SEMIRL_TRAINER_LOCAL_RANKS": "2"}, hostname="laptop")
    assert cpu.world_size == 2  # `semirl up --trainer-ranks 2`: two gloo ranks on the CPU
    assert topology_from_env({"SEMIRL_GPUS_PER_POD": "4", "SEMIRL_TRAINER_LOCAL_RANKS": "2"}).ranks_per_node == 4
    with pytest.raises(TopologyError, match="outside a job"):
        topology_from_env({"NODE_RANK": "2", "SEMIRL_TRAINER_REPLICAS": "2"}).check_supported()
    with pytest.raises(TopologyError, match="bad trainer topology"):
        topology_from_env({"SEMIRL_TRAINER_REPLICAS": "two"})


def test_gpus_the_pod_was_given_must_be_visible() -> None:
    one_gpu = topology_from_env({"SEMIRL_GPUS_PER_POD": "1"}, hostname="t-0")
    check_devices(one_gpu, cuda_devices=1)
    check_devices(topology_from_env({}, hostname="laptop"), cuda_devices=0)  # CPU trainer: nothing to see
    with pytest.raises(TopologyError, match="CUDA sees 0"):
        check_devices(one_gpu, cuda_devices=0)


def test_rank_environment_numbers_ranks_across_nodes() -> None:
    from semirl.trainer.launcher import rank_environment

    topology = topology_from_env({"SEMIRL_GPUS_PER_POD": "4", "SEMIRL_TRAINER_REPLICAS": "2", "NODE_RANK": "1",
                                  "MASTER_ADDR": "trainer-0.trainer", "MASTER_PORT": "29500"})
    envs = [rank_environment(topology, local) for local in range(4)]
    assert [e["RANK"] for e in envs] == ["4", "5", "6", "7"]
    assert {e["WORLD_SIZE"] for e in envs} == {"8"} and envs[2]["LOCAL_RANK"] == "2"
    assert envs[0]["MASTER_ADDR"] == "trainer-0.trainer" and envs[0]["LOCAL_WORLD_SIZE"] == "4"
