"""The Grafana dashboard and the alert rules: well formed, and asking only for metrics that exist.

The live check against a running worker's /metrics is tests/integration/test_dashboard_metrics.py;
this one compares with the metrics the worker declares (worker/metrics.py).
"""

from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.helpers import MONITORING, load_json
from tests.deploy.promql import (
    ALERTS,
    DASHBOARD,
    KAFKA_EXPORTER_METRICS,
    alert_expressions,
    alert_rules,
    balanced,
    dashboard_expressions,
    dashboard_panels,
    declared_names,
    grouping_labels,
    matcher_labels,
    metric_names,
    referenced_metrics,
)
from worker.metrics import REGISTRY


@pytest.mark.parametrize(
    ("expr", "metrics", "groups"),
    [
        ('sum(rate(a_total{job=~"$job"}[$__rate_interval]))', {"a_total"}, set()),
        (
            "histogram_quantile(0.99, sum by (le) (rate(b_seconds_bucket[5m]))) > 1e3",
            {"b_seconds_bucket"},
            {"le"},
        ),
        ("sum(up) < 1 or absent(c_ready)", {"up", "c_ready"}, set()),
        ('x / on(instance) group_left(pod) y{a="b c(d)"} offset 5m', {"x", "y"}, {"instance", "pod"}),
        ("max by (partition) (delta(lag{t='p'}[10m])) == 0 and bool z", {"lag", "z"}, {"partition"}),
        ("${datasource_var} + m:recorded:rate5m", {"m:recorded:rate5m"}, set()),
    ],
)
def test_promql_scanner(expr: str, metrics: set[str], groups: set[str]) -> None:
    assert metric_names(expr) == metrics
    assert grouping_labels(expr) == groups


def test_every_expression_is_balanced() -> None:
    assert balanced('sum(rate(a{b="(]"}[5m]))') and not balanced("sum(rate(a[5m])") and not balanced("a{]")
    unbalanced = [e for e in dashboard_expressions() + alert_expressions() if not balanced(e)]
    assert not unbalanced


def test_matcher_labels() -> None:
    assert matcher_labels('a{x="1", y=~"z"} + b{w!="v"}') == {"a": {"x", "y"}, "b": {"w"}}


def test_dashboard_and_alerts_name_only_declared_metrics() -> None:
    worker = declared_names(REGISTRY.collect())
    unknown = referenced_metrics() - worker - KAFKA_EXPORTER_METRICS
    assert not unknown, f"neither the worker's nor the Kafka exporter's: {sorted(unknown)}"
    # the exporter's list is not padding: each of its names is used
    assert referenced_metrics() >= KAFKA_EXPORTER_METRICS


def test_dashboard_shows_what_operators_need() -> None:
    exprs = dashboard_expressions()
    joined = "\n".join(exprs)
    titles = {panel["title"] for panel in dashboard_panels()}
    for metric in (
        "guardstream_records_in_total",  # throughput
        "guardstream_verdicts_total",
        "kafka_consumergroup_lag",  # lag
        "guardstream_batch_records_bucket",  # batch size
        "guardstream_model_latency_seconds_bucket",  # model latency
        "guardstream_cache_hits_total",  # cache hit ratio
        "guardstream_cache_misses_total",
    ):
        assert metric in joined, metric
    quantiles = [e for e in exprs if "guardstream_end_to_end_latency_seconds_bucket" in e]
    assert {re.search(r"histogram_quantile\(([\d.]+)", e).group(1) for e in quantiles} >= {"0.5", "0.99"}  # type: ignore[union-attr]
    assert any("guardstream_dead_letters_total" in e and "reason" in grouping_labels(e) for e in exprs)
    assert {
        "Dead letters by reason",
        "End-to-end latency",
        "Consumer lag by partition",
        "Model busy per worker",
    } <= titles


def test_dashboard_shows_how_busy_each_model_is() -> None:
    """Model busy: the seconds of model time per second of each worker, a share between 0 and 1
    (guardstream_model_latency_seconds measures the model's own time per call)."""
    [panel] = [p for p in dashboard_panels() if p["title"] == "Model busy per worker"]
    [target] = panel["targets"]
    expr = target["expr"]
    assert metric_names(expr) == {"guardstream_model_latency_seconds_sum"}
    busy = r"sum by \(([\w, ]+)\) \(rate\(guardstream_model_latency_seconds_sum\{[^}]*\}\[[^]]+\]\)\)"
    assert re.fullmatch(busy, expr)
    assert "pod" in grouping_labels(expr)
    defaults = panel["fieldConfig"]["defaults"]
    assert (defaults["unit"], defaults["min"], defaults["max"]) == ("percentunit", 0, 1)
    assert "{{pod}}" in target["legendFormat"]


def test_dashboard_structure() -> None:
    dashboard = load_json(DASHBOARD)
    panels = list(dashboard_panels(dashboard))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids))
    variables = {v["name"] for v in dashboard["templating"]["list"]}
    assert {"datasource", "job", "consumergroup", "topic"} <= variables
    for panel in panels:
        grid = panel["gridPos"]
        assert grid["x"] >= 0 and grid["x"] + grid["w"] <= 24, panel["title"]
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            used = set(re.findall(r"\$(\w+)", target["expr"])) - {"__rate_interval", "__interval"}
            assert used <= variables, (panel["title"], used - variables)
        refs = [t["refId"] for t in panel["targets"]]
        assert len(refs) == len(set(refs))


def test_alert_rules_are_complete() -> None:
    rules = alert_rules()
    names = [rule["alert"] for rule in rules]
    assert len(names) == len(set(names))
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert metric_names(str(rule["expr"])), rule["alert"]
    assert any("kafka_consumergroup_lag" in e for e in alert_expressions())


def test_prometheusrule_has_the_same_rules() -> None:
    rule_object = yaml.safe_load((MONITORING / "prometheusrule.yaml").read_text())
    assert rule_object["spec"] == yaml.safe_load(ALERTS.read_text())
