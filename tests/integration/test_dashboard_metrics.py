"""The dashboard and the alert rules ask only for metrics a running worker really exports."""

from __future__ import annotations

import signal
from collections.abc import Callable

from prometheus_client.parser import text_string_to_metric_families

from loadtest.kafka_client import Collector, prompt, publish
from tests.deploy.promql import (
    KAFKA_EXPORTER_METRICS,
    TARGET_LABELS,
    alert_expressions,
    dashboard_expressions,
    grouping_labels,
    matcher_labels,
    metric_names,
    referenced_metrics,
    sample_labels,
)
from tests.integration.conftest import KAFKA, Topics, WorkerProcess

#: Nothing listens here: every Redis call fails, so the cache-error series exist too.
DEAD_REDIS = "redis://127.0.0.1:1/0"


async def test_every_metric_the_dashboard_and_alerts_use_is_exported(
    worker_factory: Callable[..., WorkerProcess], topics: Topics
) -> None:
    worker = worker_factory(GUARDSTREAM_REDIS__URL=DEAD_REDIS)
    worker.start()
    # Traffic, so that the labelled series (verdict, reason, operation) have samples.
    collector = Collector(KAFKA, topics.verdicts, topics.dlq)
    await collector.start()
    valid = {f"m-{i}": prompt(f"m-{i}", f"Tell me about the weather on day {i}.") for i in range(8)}
    await publish(KAFKA, topics.prompts, [*valid.values(), b"{not json"])
    assert await collector.wait_for(set(valid), 1, timeout_s=60), worker.log_tail()
    await collector.stop()

    exported = sample_labels(text_string_to_metric_families(worker.http_get("/metrics")))
    referenced = referenced_metrics()
    # The Kafka exporter's lag metrics, listed explicitly, are the only ones from elsewhere, and
    # the dashboard or the alerts do use each of them (the list is not stale).
    assert referenced >= KAFKA_EXPORTER_METRICS, sorted(KAFKA_EXPORTER_METRICS - referenced)
    missing = referenced - KAFKA_EXPORTER_METRICS - set(exported)
    assert not missing, f"the dashboard or alerts use metrics the worker does not export: {sorted(missing)}"
    assert not KAFKA_EXPORTER_METRICS & set(exported)

    # Labels they group or match on exist on those series (or are added by Prometheus).
    for expr in dashboard_expressions() + alert_expressions():
        own = metric_names(expr) - KAFKA_EXPORTER_METRICS
        if not own:
            continue
        available = set().union(*(exported[m] for m in own)) | TARGET_LABELS
        assert grouping_labels(expr) <= available, expr
        for metric, labels in matcher_labels(expr).items():
            if metric in own:
                assert labels <= exported[metric] | TARGET_LABELS, expr
    assert worker.signal_and_wait(signal.SIGTERM) == 0
