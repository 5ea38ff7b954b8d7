"""Prometheus metrics of the worker, served on /metrics."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

REGISTRY = CollectorRegistry(auto_describe=True)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)

RECORDS_IN = Counter(
    "guardstream_records_in_total", "Records consumed from the input topic.", registry=REGISTRY
)
VERDICTS = Counter(
    "guardstream_verdicts_total", "Verdicts delivered, by decision.", ["verdict"], registry=REGISTRY
)
DEAD_LETTERS = Counter(
    "guardstream_dead_letters_total",
    "Dead letters delivered, by reason.",
    ["reason"],
    registry=REGISTRY,
)
BATCH_SIZE = Histogram(
    "guardstream_batch_records",
    "Records per batch taken from Kafka.",
    buckets=_SIZE_BUCKETS,
    registry=REGISTRY,
)
MODEL_BATCH_SIZE = Histogram(
    "guardstream_model_batch_prompts",
    "Prompts per model call.",
    buckets=_SIZE_BUCKETS,
    registry=REGISTRY,
)
MODEL_LATENCY = Histogram(
    "guardstream_model_latency_seconds",
    "Time the model spends on one call (batch in, scores out), not counting the wait for it.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
MODEL_WAIT = Histogram(
    "guardstream_model_wait_seconds",
    "Time a model call waits for the model thread before it runs (behind the calls of its lane, "
    "or a long call already running), by lane.",
    ["lane"],
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_AGE = Histogram(
    "guardstream_batch_age_seconds",
    "How long the oldest record of a batch had waited (from its Kafka timestamp) when the batch was taken.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
CACHE_HITS = Counter("guardstream_cache_hits_total", "Prompts answered from the cache.", registry=REGISTRY)
CACHE_MISSES = Counter("guardstream_cache_misses_total", "Prompts the model had to score.", registry=REGISTRY)
CACHE_ERRORS = Counter(
    "guardstream_cache_errors_total",
    "Redis calls that failed, by operation.",
    ["operation"],
    registry=REGISTRY,
)
END_TO_END_LATENCY = Histogram(
    "guardstream_end_to_end_latency_seconds",
    "From the prompt's Kafka timestamp to its verdict's delivery.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
BATCH_LATENCY = Histogram(
    "guardstream_batch_latency_seconds",
    "From taking a batch to delivering all its verdicts and dead letters.",
    buckets=_LATENCY_BUCKETS,
    registry=REGISTRY,
)
READY = Gauge(
    "guardstream_ready",
    "1 when the worker is consuming and the model is loaded.",
    registry=REGISTRY,
)

POLICY_RELOADS = Counter(
    "guardstream_policy_reloads_total",
    "Changed policy registries loaded and switched to without a restart.",
    registry=REGISTRY,
)
POLICY_RELOAD_FAILURES = Counter(
    "guardstream_policy_reload_failures_total",
    "Changed policy registries refused (invalid, or a policy no model scores); the last good one stays.",
    registry=REGISTRY,
)
POLICY_REGISTRY_INFO = Gauge(
    "guardstream_policy_registry_info",
    "1 for the policy registry in force: a short hash of its policies, and their id@version.",
    ["registry", "policies"],
    registry=REGISTRY,
)


_ALLOWED = VERDICTS.labels(verdict="allow")
_BLOCKED = VERDICTS.labels(verdict="block")


def count_verdicts(allowed: int, blocked: int) -> None:
    """Count a batch's delivered verdicts (two counter updates, not one per verdict)."""
    if allowed:
        _ALLOWED.inc(allowed)
    if blocked:
        _BLOCKED.inc(blocked)


def render() -> bytes:
    """The metrics in the Prometheus text format."""
    return generate_latest(REGISTRY)
