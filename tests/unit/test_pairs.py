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


def test_group_rule_pairs_every_correct_with_every_wrong_and_averages_per_prompt() -> None:
    """GroupDPO (paper §4.2): 2 correct x 3 wrong = 6 pairs of weight 1/6; reward-model scores: best x worst."""
    batch = build_pairs([_group("t1-0", [1.0, 0.0, 1.0, 0.0, 0.0]), _group("t1-1", [0.0, 1.0]),
                         _group("t1-2", [1.0, 1.0])], seed=0, rule="group")
    first = [p for p in batch.pairs if p.prompt_id == "t1-0"]
    assert sorted((p.chosen_index, p.rejected_index) for p in first) == [(c, r) for c in (0, 2) for r in (1, 3, 4)]
    assert all(p.weight == 1 / 6 for p in first)
    assert [(p.chosen_index, p.rejected_index, p.weight) for p in batch.pairs if p.prompt_id == "t1-1"] == [(1, 0, 1.0)]
    assert batch.skipped == {"t1-2": "all_correct"}
    scores = build_pairs([_group("t1-0", [0.2, 0.9, 0.9, 0.1], source=types_pb2.REWARD_SOURCE_REWARD_MODEL)],
                         seed=0, rule="group")
    assert sorted((p.chosen_index, p.rejected_index) for p in scores.pairs) == [(1, 3), (2, 3)]
    assert sum(p.weight for p in scores.pairs) == 1.0


def test_group_rule_weights_reach_the_loss_and_the_pairs_normalizer() -> None:
    import torch

    from semirl.spec import RunSpec
    from semirl.trainer.logprobs import SeqLogps
    from semirl.trainer.objectives import DPOObjective

    spec = RunSpec.model_validate({"name": "g", "model": {"path": "m"}, "data": {"train": {"path": "t.jsonl"}},
                                   "train": {"steps": 2}, "dpo": {"pair_rule": "group", "loss_normalizer": "pairs",
                                                                  "entropy_coef": 0.5}})
    objective = DPOObjective(spec)
    batch = objective.examples([_group("t1-0", [1.0, 0.0, 0.0]), _group("t1-1", [1.0, 0.0])])
    assert len(batch.examples) == 3 and objective.normalizer(batch) == 2.0  # two prompts gave pairs
    m = len(batch.examples)
    logps = torch.tensor([-1.0, -1.0, -2.0, -3.0, -3.0, -2.0])  # chosen rows, then rejected rows
    entropy = torch.tensor([1.0, 1.0, 1.0, 9.0, 9.0, 9.0])
    tokens = torch.full((2 * m,), 2.0)
    policy = SeqLogps(logps=logps, tokens=tokens, entropy=entropy, token_logps=torch.zeros(2 * m, 3))
    reference = SeqLogps(logps=torch.full((2 * m,), -2.0), tokens=tokens, entropy=entropy,
                         token_logps=torch.zeros(2 * m, 3))
    result = objective.loss(batch.examples, policy, reference)
    margins = 0.1 * ((logps[:m] + 2.0) - (logps[m:] + 2.0))
    per_pair = -torch.nn.functional.logsigmoid(margins) - 0.5 * entropy[:m]  # the chosen response's entropy only
    weights = torch.tensor([p.weight for p in batch.examples])
    assert torch.allclose(weights, torch.tensor([0.5, 0.5, 1.0]))
    assert torch.allclose(result.loss_sum, (per_pair * weights).sum())
