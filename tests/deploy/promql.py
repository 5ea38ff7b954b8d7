"""What the dashboard and the alert rules ask Prometheus for: metric and label names in PromQL.

A small scanner, not a parser: it drops strings, label matchers, range selectors, grouping
clauses and Grafana variables, then every remaining identifier that is not a function call or a
keyword is a metric name. Enough for the expressions in deploy/monitoring (and tested on them).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import yaml
from prometheus_client.metrics_core import Metric

from tests.deploy.helpers import MONITORING, load_json

DASHBOARD = MONITORING / "grafana" / "dashboards" / "guardstream.json"
ALERTS = MONITORING / "alerts.yml"

#: Metrics of the Kafka exporter (danielqsj/kafka_exporter), not of the worker: the dashboard's
#: lag panels and the lag alerts use these, and the worker's /metrics cannot have them.
KAFKA_EXPORTER_METRICS = frozenset(
    {
        "kafka_consumergroup_lag",
        "kafka_consumergroup_current_offset",
    }
)
#: Labels that Prometheus adds to every scraped series (the target's), or that histograms have.
TARGET_LABELS = frozenset({"job", "instance", "namespace", "pod", "service", "container", "endpoint", "le"})

_KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right", "bool"}
    | {"offset", "inf", "nan"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+")
_MATCHERS = re.compile(r"\{[^{}]*\}")
_RANGE = re.compile(r"\[[^\]]*\]")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)(\s*\()?")
_SELECTOR = re.compile(r"(?<![\w.:])([A-Za-z_:][\w:]*)\s*\{([^{}]*)\}")
_MATCHER_LABEL = re.compile(r"([A-Za-z_]\w*)\s*(?:=~|!~|!=|=)")
_LABEL_VALUES = re.compile(r"label_values\(\s*([A-Za-z_:][\w:]*)\s*,\s*(\w+)\s*\)")


def metric_names(expr: str) -> set[str]:
    """The metric names an expression selects."""
    text = _STRING.sub('""', expr)
    text = _VARIABLE.sub(" ", text)
    text = _MATCHERS.sub(" ", text)
    text = _RANGE.sub(" ", text)
    text = _GROUPING.sub(" ", text)
    return {
        match.group(1)
        for match in _IDENTIFIER.finditer(text)
        if match.group(2) is None and match.group(1) not in _KEYWORDS
    }


def balanced(expr: str) -> bool:
    """Whether the brackets of an expression pair up (outside strings): the syntax slip the
    scanner would otherwise let through."""
    closing = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in _STRING.sub('""', expr):
        if char in "([{":
            stack.append(char)
        elif char in closing and (not stack or stack.pop() != closing[char]):
            return False
    return not stack


def grouping_labels(expr: str) -> set[str]:
    """Labels named in by/without/on/ignoring/group_* clauses."""
    text = _STRING.sub('""', expr)
    return {label.strip() for group in _GROUPING.findall(text) for label in group.split(",") if label.strip()}


def matcher_labels(expr: str) -> dict[str, set[str]]:
    """Labels matched on, per metric: {metric: {label, ...}}."""
    text = _STRING.sub('""', expr)
    found: dict[str, set[str]] = {}
    for metric, matchers in _SELECTOR.findall(text):
        found.setdefault(metric, set()).update(_MATCHER_LABEL.findall(matchers))
    return found


# ------------------------------------------------------------------------ the shipped files


def dashboard_panels(dashboard: dict[str, Any] | None = None) -> Iterator[dict[str, Any]]:
    """Every panel, rows' nested panels included."""
    for panel in (dashboard or load_json(DASHBOARD))["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_expressions(path: Path = DASHBOARD) -> list[str]:
    """Every PromQL expression of the dashboard: panel targets and query variables."""
    dashboard = load_json(path)
    exprs = [t["expr"] for panel in dashboard_panels(dashboard) for t in panel.get("targets", [])]
    for variable in dashboard.get("templating", {}).get("list", []):
        if variable.get("type") == "query":
            query = variable["query"]
            query = query["query"] if isinstance(query, dict) else query
            exprs += [f"{metric}" for metric, _label in _LABEL_VALUES.findall(query)]
    return exprs


def alert_rules(path: Path = ALERTS) -> list[dict[str, Any]]:
    return [rule for group in yaml.safe_load(path.read_text())["groups"] for rule in group["rules"]]


def alert_expressions(path: Path = ALERTS) -> list[str]:
    return [str(rule["expr"]) for rule in alert_rules(path)]


def referenced_metrics() -> set[str]:
    """Every metric the dashboard and the alert rules name."""
    return {name for expr in dashboard_expressions() + alert_expressions() for name in metric_names(expr)}


_SUFFIXES = {
    "counter": ("_total", "_created"),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "gauge": ("",),
}


def declared_names(families: Iterable[Metric]) -> set[str]:
    """The series names the families export (a labelled family may not have samples yet)."""
    return {family.name + suffix for family in families for suffix in _SUFFIXES.get(family.type, ("",))}


def sample_labels(families: Iterable[Metric]) -> dict[str, set[str]]:
    """{series name: label names} of the samples actually exposed."""
    labels: dict[str, set[str]] = {}
    for family in families:
        for sample in family.samples:
            labels.setdefault(sample.name, set()).update(sample.labels)
    return labels
