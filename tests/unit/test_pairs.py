"""DPO pair selection: correct vs incorrect, skips with reasons, reproducible seeded randomness."""

from __future__ import annotations

from semirl.proto import types_pb2
from semirl.trainer.pairs import build_pairs, select_pair

VERIFIER = types_pb2.REWARD_SOURCE_VERIFIER

def _group(prompt_id: str, rewards: list[float], source: int = VERIFIER) -> types_pb2.ScoredGroup:
    samples = [types_pb2.Sample(token_ids=[10 + i, 20 + i]) for i in range(len(rewards))]
    task = types_pb2.PromptTask(run_id="r", prompt_id=prompt_id, reward_source=source)
    group = types_pb2.SampleGroup(task=task, prompt_token_ids=[1, 2, 3], samples=samples, policy_version=4)
    return types_pb2.ScoredGroup(group=group, rewards=rewards)


def test_chosen_is_correct_and_rejected_incorrect() -> None:
    rewards = [0.0, 1.0, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0]
    for i in range(50):
        pair, reason = select_pair(_group(f"t1-{i}", rewards), seed=0)
        assert pair is not None and reason == ""
        assert rewards[pair.chosen_index] == 1.0 and rewards[pair.rejected_index] == 0.0
        assert pair.chosen_token_ids == (10 + pair.chosen_index, 20 + pair.chosen_index)
        assert pair.prompt_token_ids == (1, 2, 3) and pair.policy_version == 4


def test_all_same_groups_are_skipped_with_reasons() -> None:
    groups = [
        _group("t1-0", [1.0, 1.0, 1.0]),
        _group("t1-1", [0.0, 0.0, 0.0]),
        _group("t1-2", [1.0, 0.0, 0.0]),
        _group("t1-3", [0.0, 0.0]),
    ]
    batch = build_pairs(groups, seed=3)
    assert [p.prompt_id for p in batch.pairs] == ["t1-2"]
    assert batch.skipped == {"t1-0": "all_correct", "t1-1": "all_wrong", "t1-3": "all_wrong"}
    assert batch.num_skipped == 3


def test_randomness_is_seeded_by_seed_and_prompt() -> None:
    rewards = [1.0, 0.0] * 8
    picks = lambda seed, pid: select_pair(_group(pid, rewards), seed)[0]  # noqa: E731
    same = [(picks(7, f"t2-{i}").chosen_index, picks(7, f"t2-{i}").rejected_index) for i in range(20)]
    again = [(picks(7, f"t2-{i}").chosen_index, picks(7, f"t2-{i}").rejected_index) for i in range(20)]
    assert same == again
    assert len(set(same)) > 1  # different prompts draw different pairs
    other_seed = [(picks(8, f"t2-{i}").chosen_index, picks(8, f"t2-{i}").rejected_index) for i in range(20)]
    assert other_seed != same


def test_reward_model_scores_pick_extremes_and_skip_ties() -> None:
    rm = types_pb2.REWARD_SOURCE_REWARD_MODEL
    pair, _ = select_pair(_group("c-1", [0.3, 2.5, -1.0, 0.7], rm), seed=0)
    assert (pair.chosen_index, pair.rejected_index) == (1, 2)
    pair, reason = select_pair(_group("c-2", [0.5, 0.5, 0.5], rm), seed=0)
    assert pair is None and reason == "all_tied"


def test_empty_responses_and_malformed_groups_form_no_pair() -> None:
    group = _group("t1-0", [1.0, 0.0])
    del group.group.samples[1].token_ids[:]
    assert select_pair(group, 0) == (None, "too_few_samples")
    bad = _group("t1-1", [1.0, 0.0])
    del bad.rewards[:]
    assert select_pair(bad, 0) == (None, "malformed")
