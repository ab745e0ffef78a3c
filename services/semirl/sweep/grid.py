"""The sweep's grid: settings (named sets of dotted-key overrides of one base spec) times seeds.

`--set key=v1,v2` gives one setting per value (several such keys: their product); `--set key=v` with one value
applies to every setting. With no multi-valued `--set`, the grid is `DEFAULT_GRID`, the toy counterpart of the
paper's Table 1 (arXiv 2506.21495: offline DPO < semi-online DPO ≈ online DPO ≈ GRPO on verifiable math).
"""

from __future__ import annotations

import copy
import itertools
import re
from typing import Any

import yaml
from pydantic import BaseModel, Field, ValidationError

from semirl.spec import RunSpec, parse_run_spec

# Every setting of the default grid trains the same number of steps and evaluates at the same steps, so curves
# and final accuracies compare like for like.
DEFAULT_CONSTANTS: dict[str, Any] = {"train.steps": 40, "eval.every": 10}


class Setting(BaseModel):
    name: str = Field(description="Row label of the table and legend of the plots.")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Dotted spec keys -> values.")

    @property
    def slug(self) -> str:
        return re.sub(r"[^a-z0-9]+", "-", self.name.lower()).strip("-") or "base"


DEFAULT_GRID: list[Setting] = [
    Setting(name="offline DPO", overrides={"algorithm": "dpo", "sync.interval": "offline"}),
    Setting(name="semi-online DPO s=10", overrides={"algorithm": "dpo", "sync.interval": 10}),
    Setting(name="semi-online DPO s=5", overrides={"algorithm": "dpo", "sync.interval": 5}),
    Setting(name="online DPO s=1", overrides={"algorithm": "dpo", "sync.interval": 1}),
    Setting(name="GRPO s=1", overrides={"algorithm": "grpo", "sync.interval": 1}),
]


class Cell(BaseModel):
    """One run of the sweep: a setting at a seed."""

    setting: Setting
    seed: int

    @property
    def key(self) -> str:
        return f"{self.setting.slug}-seed{self.seed}"


def split_values(text: str) -> list[str]:
    """`1,4,offline` -> ['1', '4', 'offline']; commas inside brackets or braces stay (`[0.9,0.95],[0.9,0.99]`)."""
    values, depth, current = [], 0, ""
    for char in text:
        if char in "[{":
            depth += 1
        elif char in "]}":
            depth -= 1
        if char == "," and depth == 0:
            values.append(current)
            current = ""
        else:
            current += char
    values.append(current)
    return [v.strip() for v in values]


def parse_assignment(text: str) -> tuple[str, list[Any]]:
    """`sync.interval=1,4,16` -> ('sync.interval', [1, 4, 16]); each value is read as YAML."""
    key, sep, raw = text.partition("=")
    key = key.strip()
    if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", key):
        raise ValueError(f"--set wants KEY=VALUE[,VALUE...] with a dotted spec key, got {text!r}")
    try:
        values = [yaml.safe_load(v) if v else None for v in split_values(raw)]
    except yaml.YAMLError as err:
        raise ValueError(f"--set {key}: {raw!r} is not a YAML value ({err.problem if hasattr(err, 'problem') else err})"
                         ) from err
    if any(v is None for v in values):
        raise ValueError(f"--set {key}: an empty value in {raw!r}")
    return key, values


def build_grid(assignments: list[str], seeds: int) -> tuple[list[Setting], dict[str, Any]]:
    """The settings and the overrides every setting shares."""
    if seeds < 1:
        raise ValueError("--seeds must be at least 1")
    parsed = [parse_assignment(a) for a in assignments]
    constants = {key: values[0] for key, values in parsed if len(values) == 1}
    varied = [(key, values) for key, values in parsed if len(values) > 1]
    if not varied:
        clashes = sorted({key for s in DEFAULT_GRID for key in s.overrides} & set(constants))
        if clashes:
            raise ValueError(f"--set {', '.join(clashes)}: the default grid varies this key; give several values to "
                             "sweep it yourself")
        return [s.model_copy(deep=True) for s in DEFAULT_GRID], {**DEFAULT_CONSTANTS, **constants}
    settings = []
    for combo in itertools.product(*(values for _, values in varied)):
        overrides = {key: value for (key, _), value in zip(varied, combo, strict=True)}
        settings.append(Setting(name=" ".join(f"{k}={v}" for k, v in overrides.items()), overrides=overrides))
    names = [s.slug for s in settings]
    if len(set(names)) != len(names):
        raise ValueError(f"--set values give settings with the same name: {names}")
    return settings, constants


def set_dotted(data: dict[str, Any], key: str, value: Any) -> None:
    node = data
    *parents, leaf = key.split(".")
    for part in parents:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ValueError(f"--set {key}: {part} is not a mapping in the spec")
        node = child
    node[leaf] = value


def cell_spec(base: dict[str, Any], constants: dict[str, Any], cell: Cell, name: str) -> dict[str, Any]:
    """The spec a cell submits as run `name`: the base, the shared overrides, the setting's, then the seed (the
    trainer's seed and the prompt order)."""
    spec = copy.deepcopy(base)
    for key, value in {**constants, **cell.setting.overrides}.items():
        set_dotted(spec, key, value)
    set_dotted(spec, "train.seed", cell.seed)
    set_dotted(spec, "data.shuffle_seed", cell.seed)
    spec["name"] = name
    return spec


def validated(spec: dict[str, Any], cell: Cell) -> RunSpec:
    """The cell's spec as the controller will read it; a bad override fails here, before anything runs."""
    try:
        return parse_run_spec(spec)
    except ValidationError as err:
        problems = "; ".join(f"{'.'.join(str(p) for p in e['loc']) or 'spec'}: {e['msg']}" for e in err.errors())
        raise ValueError(f"setting {cell.setting.name!r}, seed {cell.seed}: {problems}") from err
    except ValueError as err:
        raise ValueError(f"setting {cell.setting.name!r}, seed {cell.seed}: {err}") from err
