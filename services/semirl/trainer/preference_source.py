"""Rank 0's source of step groups in an offline DPO run on a static preference dataset (spec.static_preferences).

It replaces the intake: step t's groups are rows (t−1)·B … t·B−1 of the dataset in a seeded order reshuffled
every epoch (the same `ProblemSchedule` the controller uses for problems), each turned into a two-sample scored
group (data/preferences.py). A step depends only on t, so a resumed trainer retrains exactly the same pairs;
nothing is read from Redis and no generator is involved.
"""

from __future__ import annotations

from typing import Any

from semirl.core.wire import train_prompt_id
from semirl.data.preferences import Preference, preference_group, read_preferences
from semirl.data.problems import ProblemSchedule
from semirl.proto import types_pb2
from semirl.spec import RunSpec


class PreferenceSource:
    def __init__(self, spec: RunSpec, run_id: str, tokenizer: Any | None = None) -> None:
        if tokenizer is None:
            from transformers import AutoTokenizer

            tokenizer = AutoTokenizer.from_pretrained(spec.model.path)
        self.spec = spec
        self.run_id = run_id
        self.tokenizer = tokenizer
        self.rows = read_preferences(spec.data.train)
        self.schedule: ProblemSchedule[Preference] = ProblemSchedule(
            self.rows, spec.train.batch_prompts, spec.data.shuffle_seed)

    def groups(self, step: int) -> list[types_pb2.ScoredGroup]:
        groups = []
        for slot in range(self.spec.train.batch_prompts):
            group = preference_group(
                self.schedule.problem_for(step, slot), self.tokenizer, prompt_id=train_prompt_id(step, slot),
                chat=self.spec.data.prompt_format == "chat", max_model_len=self.spec.model.max_model_len)
            group.group.task.run_id = self.run_id
            group.group.task.train_step = step
            groups.append(group)
        return groups
