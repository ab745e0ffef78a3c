"""The Grafana dashboard shipped with the chart: its ConfigMap (grafanaDashboard), the dashboard's shape, and its
queries against the metrics the services really export (tests/dashboard_metrics.py)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from chartlib import CHART, FULLNAME, NAMESPACE, RELEASE, Manifest, helm, render, render_error
from dashboard_metrics import (
    DASHBOARD,
    PROMETHEUS_SERIES,
    exported_names,
    load_dashboard,
    metric_names,
    panel_exprs,
    queried_metrics,
    selected_components,
    selectors,
    service_registries,
    unexported,
)
from prometheus_client import CollectorRegistry

from semirl.core.redis_server import EmbeddedRedis

CONFIGMAP = f"{FULLNAME}-grafana-dashboard"
ENABLED = ("grafanaDashboard.enabled=true",)


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return load_dashboard()


@pytest.fixture(scope="module")
def exports(redis_server: EmbeddedRedis, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, set[str]]]:
    """Sample names per service, from the services' real registries."""
    client = redis_server.client()
    client.flushall()
    registries: dict[str, CollectorRegistry] = service_registries(client, tmp_path_factory.mktemp("store"))
    yield {service: exported_names(registry) for service, registry in registries.items()}
    client.close()


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return found


# --- the ConfigMap ----------------------------------------------------------------------------------------


def test_off_by_default(default: Manifest) -> None:
    assert default.find("ConfigMap", CONFIGMAP) is None
    assert render(sets=("grafanaDashboard.enabled=false",)).find("ConfigMap", CONFIGMAP) is None


def test_configmap_carries_the_dashboard_and_the_sidecar_label() -> None:
    configmap = render(sets=ENABLED).get("ConfigMap", CONFIGMAP)
    labels = configmap["metadata"]["labels"]
    assert labels["grafana_dashboard"] == "1"  # kube-prometheus-stack's sidecar default
    assert labels["app.kubernetes.io/component"] == "grafana-dashboard"
    assert labels["app.kubernetes.io/instance"] == RELEASE
    assert configmap["metadata"]["namespace"] == NAMESPACE
    assert "annotations" not in configmap["metadata"]
    assert list(configmap["data"]) == ["semirl.json"]
    assert json.loads(configmap["data"]["semirl.json"]) == json.loads(DASHBOARD.read_text())


def test_configmap_options() -> None:
    configmap = render(sets=(*ENABLED, "grafanaDashboard.namespace=monitoring", "grafanaDashboard.label=dashboards",
                             "grafanaDashboard.labelValue=semirl", "grafanaDashboard.additionalLabels.team=rl",
                             "grafanaDashboard.annotations.grafana_folder=semirl")).get("ConfigMap", CONFIGMAP)
    assert configmap["metadata"]["namespace"] == "monitoring"
    labels = configmap["metadata"]["labels"]
    assert labels["dashboards"] == "semirl" and labels["team"] == "rl" and "grafana_dashboard" not in labels
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "semirl"}
    # --set turns 1 into a number; the label value is still the string "1".
    configmap = render(sets=(*ENABLED, "grafanaDashboard.labelValue=1")).get("ConfigMap", CONFIGMAP)
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"


@pytest.mark.parametrize("bad", ["grafanaDashboard.label=has space", "grafanaDashboard.labelValue=-1-",
                                 "grafanaDashboard.namespace=Monitoring", "grafanaDashboard.folder=semirl"])
def test_schema_refuses_bad_options(bad: str) -> None:
    assert "grafanaDashboard" in render_error(sets=(*ENABLED, bad))


def test_autoscaling_scenario_ships_it(autoscaled: Manifest) -> None:
    configmap = autoscaled.get("ConfigMap", CONFIGMAP)
    assert configmap["metadata"]["annotations"] == {"grafana_folder": "semirl"}
    assert autoscaled.kind("ServiceMonitor")  # what fills it


def test_notes_name_it_and_warn_without_servicemonitors() -> None:
    def notes(*args: str) -> str:
        result = helm("install", RELEASE, str(CHART), "--namespace", NAMESPACE, "--dry-run=client", *args)
        return result.stdout.split("NOTES:", 1)[1]

    text = notes("--set", "grafanaDashboard.enabled=true")
    assert f"ConfigMap {CONFIGMAP} in namespace {NAMESPACE}, labelled grafana_dashboard=1" in text
    assert "WARNING: no ServiceMonitor was rendered" in text
    assert "Grafana dashboard" not in notes()


# --- the dashboard ----------------------------------------------------------------------------------------


def test_dashboard_shape(dashboard: dict[str, Any]) -> None:
    assert dashboard["uid"] == "semirl-overview" and dashboard["schemaVersion"] >= 39
    assert dashboard["id"] is None  # provisioned: Grafana assigns the id
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource" and variables["datasource"]["query"] == "prometheus"
    assert {"namespace", "release"} <= set(variables)
    ids = [panel["id"] for panel in panels(dashboard)]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in panels(dashboard):
        assert panel["type"] in {"row", "timeseries", "stat"}, panel["title"]
        grid = panel["gridPos"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        covered = {(x, y) for x in range(grid["x"], grid["x"] + grid["w"])
                   for y in range(grid["y"], grid["y"] + grid["h"])}
        assert not covered & cells, f"{panel['title']} overlaps another panel"
        cells |= covered
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"] == panel["datasource"] and target["expr"].strip(), panel["title"]
        assert len({t["refId"] for t in panel["targets"]}) == len(panel["targets"]), panel["title"]
    # kubectl's client-side apply keeps a copy in an annotation limited to 256 KiB.
    assert len(DASHBOARD.read_bytes()) < 256 * 1024


def test_dashboard_covers_what_issue_12_asks_for(dashboard: dict[str, Any]) -> None:
    queried = queried_metrics(dashboard)
    wanted = {
        "semirl_queue_lag", "semirl_queue_pending", "semirl_queue_length",                  # queue backlogs
        "semirl_generator_samples_generated_total", "semirl_generator_generated_tokens_total",  # samples/s
        "semirl_verifier_groups_scored_total", "semirl_verifier_samples_scored_total",     # verifier throughput
        "semirl_reward_groups_scored_total", "semirl_reward_samples_scored_total",         # reward throughput
        "semirl_trainer_wait_seconds_sum", "semirl_trainer_step_seconds_sum",               # trainer time
        "semirl_trainer_checkpoint_write_seconds_sum",
        "semirl_generator_reload_seconds_bucket", "semirl_trainer_commit_seconds_bucket",  # sync latency
        "up", "semirl_reload_last_generators",                                              # replicas
        "semirl_run_step", "semirl_run_policy_version", "semirl_trainer_state",             # run state
    }
    assert wanted <= queried, sorted(wanted - queried)


# --- the queries against what the services export --------------------------------------------------------


def test_every_queried_metric_is_exported(dashboard: dict[str, Any], exports: dict[str, set[str]]) -> None:
    exported = set().union(*exports.values())
    assert not unexported(dashboard, exported)
    for service, names in exports.items():  # the registries were really built
        assert any(name.startswith(f"semirl_{service}_") for name in names) or service == "controller", service
    assert {"semirl_run_step", "semirl_run_eval_accuracy", "semirl_queue_lag"} <= exports["controller"]


def test_each_selector_is_scoped_to_one_release_and_asks_its_service(
    dashboard: dict[str, Any], exports: dict[str, set[str]]
) -> None:
    """Every panel selector names the chosen namespace and release, and a metric the service it selects exports
    (a metric Prometheus writes itself is exported by none)."""
    for expr in panel_exprs(dashboard):
        for selector in selectors(expr):
            assert selector.matcher("namespace") == ("=", "$namespace"), expr
            components = selected_components(selector)
            assert components, f"{selector.name} selects no service of $release in {expr}"
            for component in components:
                assert selector.name in exports[component] or selector.name in PROMETHEUS_SERIES, (component, expr)


def test_the_check_fails_on_a_metric_nobody_exports(dashboard: dict[str, Any], exports: dict[str, set[str]]) -> None:
    broken = copy.deepcopy(dashboard)
    panel = next(p for p in panels(broken) if p["type"] == "timeseries")
    panel["targets"].append({"refId": "Z", "expr": 'sum(rate(semirl_generator_samples_total{namespace="$namespace"}'
                                                   '[$__rate_interval]))'})
    panel["targets"].append({"refId": "Y", "expr": "semirl_trainer_steps"})  # a counter without _total
    broken["templating"]["list"].append({"name": "bogus", "type": "query",
                                         "query": "label_values(semirl_nobody_exports_this, pod)"})
    exported = set().union(*exports.values())
    assert unexported(broken, exported) == {"semirl_generator_samples_total", "semirl_trainer_steps",
                                            "semirl_nobody_exports_this"}
    assert not unexported(dashboard, exported)


@pytest.mark.parametrize(("expr", "names"), [
    ('histogram_quantile(0.95, sum by (le) (rate(a_bucket{service="$release-x", le!="+Inf"}[$__rate_interval])))',
     {"a_bucket"}),
    ("sum(rate(a_total[5m])) by (job) / on (job) group_left (pod) b offset 1h * 1e3 > bool 0.5", {"a_total", "b"}),
    ('{__name__="c", job="d"} or vector(0)', {"c"}),
    ('label_replace(up{job="x"}, "dst", "$1", "src", "(.*)") unless d{a=~"[{}]"}', {"up", "d"}),
    ("changes(max(e)[2m:30s]) > 0 and topk(3, f) and count_values(\"v\", g)", {"e", "f", "g"}),
    ("time() - max(process_start_time_seconds) @ end()", {"process_start_time_seconds"}),
])
def test_promql_scanner(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names


def test_promql_scanner_refuses_what_it_does_not_know() -> None:
    with pytest.raises(ValueError, match="unknown PromQL function 'rte'"):
        metric_names("rte(a_total[5m])")
    with pytest.raises(ValueError, match="without a metric name"):
        metric_names('{job="x"}')
