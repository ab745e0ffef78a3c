"""The chart's Grafana dashboard against the metrics semirl's services export (tests/chart/test_grafana_dashboard.py,
tests/integration/test_metrics_endpoints.py; tests/ is on sys.path).

- `dashboard_queries`: every PromQL expression of the dashboard (panel targets, annotations) and the expression
  inside each templating query (`label_values(expr, label)`, `query_result(expr)`).
- `selectors`: the vector selectors of one expression (metric name and label matchers), from a small PromQL
  scanner: strings, ranges and subqueries, durations, numbers, Grafana variables, grouping clauses, functions and
  keywords are not metric names. An unknown function raises, so a typo cannot hide a selector.
- `exported_names`: the sample names one registry exposes, read back from prometheus_client's text exposition
  (what /metrics serves), so `_total`, `_bucket`, `_sum`, `_count` are the real ones. A labelled family with no
  child yet (no sample) counts with the sample names its type gives it.
- `service_registries`: the real registries of the five services, built as their entry points build them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

DASHBOARD = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "semirl" / "dashboards" / "semirl.json"

# Series Prometheus writes itself for every target; the dashboard may query them although no service exports them.
PROMETHEUS_SERIES = frozenset({"up"})

AGGREGATORS = frozenset({
    "sum", "min", "max", "avg", "group", "stddev", "stdvar", "count", "count_values", "bottomk", "topk",
    "quantile", "limitk", "limit_ratio",
})
FUNCTIONS = frozenset({
    "abs", "absent", "absent_over_time", "acos", "acosh", "asin", "asinh", "atan", "atanh", "avg_over_time",
    "ceil", "changes", "clamp", "clamp_max", "clamp_min", "cos", "cosh", "count_over_time", "day_of_month",
    "day_of_week", "day_of_year", "days_in_month", "deg", "delta", "deriv", "exp", "floor",
    "histogram_avg", "histogram_count", "histogram_fraction", "histogram_quantile", "histogram_stddev",
    "histogram_stdvar", "histogram_sum", "hour", "idelta", "increase", "irate", "label_join", "label_replace",
    "last_over_time", "ln", "log10", "log2", "mad_over_time", "max_over_time", "min_over_time", "minute", "month",
    "pi", "predict_linear", "present_over_time", "quantile_over_time", "rad", "rate", "resets", "round", "scalar",
    "sgn", "sin", "sinh", "sort", "sort_by_label", "sort_by_label_desc", "sort_desc", "sqrt", "stddev_over_time",
    "stdvar_over_time", "sum_over_time", "tan", "tanh", "time", "timestamp", "vector", "year",
})
# Keywords that take a parenthesised label list (skipped whole) and the other non-metric words.
GROUPING = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right"})
KEYWORDS = frozenset({"bool", "and", "or", "unless", "offset", "atan2", "inf", "nan", "start", "end"})

_STRING = r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`'
_STRING_RE = re.compile(_STRING)
_TOKEN = re.compile(rf"""
    (?P<string>{_STRING})
  | (?P<range>\[[^\]]*\])                                        # [5m], [$__rate_interval], subqueries [1h:1m]
  | (?P<variable>\$(?:\{{[^}}]*\}}|\w+))                          # Grafana variables outside strings
  | (?P<number>0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?(?:ms|[smhdwy])*)
  | (?P<ident>[A-Za-z_:][A-Za-z0-9_:]*)
  | (?P<brace>\{{)
  | (?P<space>\s+)
  | (?P<other>.)
""", re.VERBOSE | re.DOTALL)
_MATCHER = re.compile(rf"\s*([A-Za-z_][A-Za-z0-9_]*)\s*(=~|!=|!~|=)\s*({_STRING})\s*(?:,|$)")
_LABEL_VALUES = re.compile(r"^\s*label_values\s*\((?P<expr>.*),\s*[A-Za-z_][A-Za-z0-9_]*\s*\)\s*$", re.DOTALL)
_QUERY_RESULT = re.compile(r"^\s*query_result\s*\((?P<expr>.*)\)\s*$", re.DOTALL)


@dataclass(frozen=True)
class Selector:
    """One vector selector: the metric name and its label matchers {label: (operator, value)}."""

    name: str
    matchers: tuple[tuple[str, str, str], ...]

    def matcher(self, label: str) -> tuple[str, str] | None:
        found = [(op, value) for name, op, value in self.matchers if name == label]
        return found[0] if found else None


def _unquote(text: str) -> str:
    if text[0] == "`":
        return text[1:-1]
    return re.sub(r"\\(.)", r"\1", text[1:-1])


def _matchers(body: str) -> tuple[tuple[str, str, str], ...]:
    found, position = [], 0
    while position < len(body.strip()):
        match = _MATCHER.match(body, position)
        if match is None:
            raise ValueError(f"unparsable label matchers {{{body}}}")
        found.append((match[1], match[2], _unquote(match[3])))
        position = match.end()
    return tuple(found)


def _closing(expr: str, start: int, opening: str, closing: str) -> int:
    """Index just past the bracket that closes the one at `start` (strings inside are skipped)."""
    depth, position = 0, start
    while position < len(expr):
        string = _STRING_RE.match(expr, position)
        if string:
            position = string.end()
            continue
        char = expr[position]
        depth += (char == opening) - (char == closing)
        position += 1
        if depth == 0:
            return position
    raise ValueError(f"unbalanced {opening!r} in {expr!r}")


def _next_char(expr: str, position: int) -> str:
    rest = expr[position:].lstrip()
    return rest[:1]


def selectors(expr: str) -> list[Selector]:
    """The vector selectors of a PromQL expression, in order."""
    found: list[Selector] = []
    position = 0
    while position < len(expr):
        token = _TOKEN.match(expr, position)
        assert token is not None  # `other` matches any character
        kind, text, position = token.lastgroup, token[0], token.end()
        if kind == "brace":  # a selector without a name: {__name__="..."}
            end = _closing(expr, token.start(), "{", "}")
            matchers = _matchers(expr[token.start() + 1:end - 1])
            names = [value for label, op, value in matchers if label == "__name__" and op == "="]
            if not names:
                raise ValueError(f"a selector without a metric name in {expr!r}")
            found.append(Selector(names[0], matchers))
            position = end
        elif kind == "ident":
            following = _next_char(expr, position)
            if text in GROUPING:
                if following == "(":
                    position = _closing(expr, expr.index("(", position), "(", ")")
            elif text in AGGREGATORS or text in KEYWORDS:
                continue
            elif following == "(":
                if text not in FUNCTIONS:
                    raise ValueError(f"unknown PromQL function {text!r} in {expr!r}")
            elif following == "{":
                opening = expr.index("{", position)
                end = _closing(expr, opening, "{", "}")
                found.append(Selector(text, _matchers(expr[opening + 1:end - 1])))
                position = end
            else:
                found.append(Selector(text, ()))
    return found


_RELEASE_SERVICE = re.compile(r"^\$release-(?:(?P<one>[a-z]+)|\((?P<many>[a-z]+(?:\|[a-z]+)*)\))$")


def selected_components(selector: Selector) -> tuple[str, ...]:
    """The semirl services a selector's `service` matcher picks: service="$release-<component>" or
    service=~"$release-(<component>|...)"; () for anything else."""
    matcher = selector.matcher("service")
    match = _RELEASE_SERVICE.match(matcher[1]) if matcher else None
    if matcher is None or match is None:
        return ()
    if matcher[0] == "=" and match["one"]:
        return (match["one"],)
    if matcher[0] == "=~" and match["many"]:
        return tuple(match["many"].split("|"))
    return ()


def metric_names(expr: str) -> set[str]:
    return {selector.name for selector in selectors(expr)}


def _exprs(node: Any) -> Iterator[str]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "expr" and isinstance(value, str) and value.strip():
                yield value
            else:
                yield from _exprs(value)
    elif isinstance(node, list):
        for value in node:
            yield from _exprs(value)


def templating_exprs(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL inside the dashboard's query variables."""
    found = []
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") != "query":
            continue
        query = variable.get("query")
        query = query.get("query", "") if isinstance(query, dict) else query or ""
        for pattern in (_LABEL_VALUES, _QUERY_RESULT):
            match = pattern.match(query)
            if match:
                found.append(match["expr"])
                break
        else:
            if query.strip() and not query.strip().startswith(("label_values(", "label_names(", "metrics(")):
                raise ValueError(f"variable {variable.get('name')}: unknown query {query!r}")
    return found


def panel_exprs(dashboard: dict[str, Any]) -> list[str]:
    """The PromQL of every panel target and annotation."""
    return list(_exprs({key: value for key, value in dashboard.items() if key != "templating"}))


def dashboard_queries(dashboard: dict[str, Any]) -> list[str]:
    return [*panel_exprs(dashboard), *templating_exprs(dashboard)]


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def queried_metrics(dashboard: dict[str, Any]) -> set[str]:
    return {name for expr in dashboard_queries(dashboard) for name in metric_names(expr)}


def unexported(dashboard: dict[str, Any], exported: set[str]) -> set[str]:
    """Metrics the dashboard queries that no service exports (and Prometheus does not write itself)."""
    return queried_metrics(dashboard) - exported - PROMETHEUS_SERIES


# --- what the services export ------------------------------------------------------------------------------

_TYPE_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def exported_names(registry: CollectorRegistry) -> set[str]:
    """The sample names of the registry's /metrics page."""
    names: set[str] = set()
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        if family.samples:
            names.update(sample.name for sample in family.samples)
        else:
            names.update(family.name + suffix for suffix in _TYPE_SUFFIXES.get(family.type, ("",)))
    return names


def service_registries(client: redis.Redis, store: Path) -> dict[str, CollectorRegistry]:
    """Each service's registry as its entry point serves it, the controller's with an active run that has an
    evaluation (so that every run family is present)."""
    from semirl.controller.controller import Controller
    from semirl.controller.metrics import ControllerCollector
    from semirl.core import keys, telemetry
    from semirl.core.runstate import EvalResult, RunRecord, save_run
    from semirl.generator.metrics import GeneratorMetrics
    from semirl.reward.metrics import RewardMetrics
    from semirl.spec import parse_run_spec
    from semirl.trainer.metrics import StatusCollector, TrainerMetrics, TrainerStatus
    from semirl.verifier.engine import Scorer
    from semirl.verifier.metrics import VerifierMetrics

    spec = parse_run_spec({"name": "dashboard", "model": {"path": "m"}, "data": {"train": {"path": "t.jsonl"}},
                           "train": {"steps": 4}})
    evaluation = EvalResult(step=0, eval_set="math", policy_version=0, accuracy=0.5, stderr=None, prompts=1,
                            samples_per_prompt=1, samples_expected=1, samples_scored=1, failed_prompts=0,
                            mean_response_tokens=3.0)
    record = RunRecord(id="r-dashboard", name="dashboard", state="running", spec=spec, run_dir=str(store / "run"),
                       evals=[evaluation])
    save_run(client, record)
    client.rpush(keys.RUN_INDEX, record.id)
    client.set(keys.ACTIVE_RUN, record.id)
    controller = telemetry.new_registry()
    controller.register(ControllerCollector(Controller(client, store)))

    trainer = TrainerMetrics()
    trainer.registry.register(StatusCollector(TrainerStatus(trainer_id="t0")))
    return {
        "controller": controller,
        "generator": GeneratorMetrics().registry,
        "verifier": VerifierMetrics(Scorer(1.0)).registry,  # a scorer never started: the collector reads counts
        "reward": RewardMetrics().registry,
        "trainer": trainer.registry,
    }
