"""Settings for the worker: one frozen object, read once at start-up.

Every field can be set by an environment variable with the prefix `GUARDSTREAM_` and `__`
between nested names (`GUARDSTREAM_KAFKA__BOOTSTRAP_SERVERS=broker:9092`,
`GUARDSTREAM_BATCHING__MAX_BATCH_TOKENS=8192`), or by the CLI flags of `guardstream worker`,
which win over the environment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from models.base.directory import DEFAULT_MODEL_DIR


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field("127.0.0.1:9092", description="Kafka bootstrap servers, comma separated.")
    input_topic: str = Field("prompts", description="Topic the prompts are read from.")
    verdicts_topic: str = Field("verdicts", description="Topic the verdicts are written to.")
    dlq_topic: str = Field("prompts.dlq", description="Dead-letter topic for records that cannot be scored.")
    group_id: str = Field("guardstream", description="Consumer group id shared by all workers.")
    create_topics: bool = Field(True, description="Create the three topics at start-up if they are missing.")
    partitions: int = Field(6, ge=1, description="Partitions for topics created at start-up.")
    replication_factor: int = Field(1, ge=1, description="Replication for topics created at start-up.")
    commit_interval_s: float = Field(1.0, gt=0, description="How often delivered offsets are committed.")
    session_timeout_s: float = Field(
        30.0, ge=6, description="A worker silent this long is dropped from the group and its partitions move."
    )
    outage_grace_s: float = Field(
        300.0,
        ge=0,
        description=(
            "How long the worker retries, with backoff, delivering a batch whose verdicts or dead letters "
            "the brokers did not take (an outage, a leader move). The batch stays un-acked meanwhile. "
            "Past it, the worker exits with status 70 and the batch is read again after the restart."
        ),
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a new consumer group starts reading."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How the worker connects to the brokers (TLS with SSL and SASL_SSL)."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] = Field(
        "PLAIN", description="SASL mechanism with SASL_PLAINTEXT and SASL_SSL."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_cafile: Path | None = Field(
        None, description="CA bundle to verify the brokers (default: the system's)."
    )
    ssl_certfile: Path | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    ssl_keyfile: Path | None = Field(None, description="Private key of the client certificate (PEM).")
    group_instance_id: str | None = Field(
        None,
        min_length=1,
        max_length=249,
        pattern=r"^[A-Za-z0-9._-]+$",  # the broker's rule for group.instance.id
        description=(
            "Static group membership (Kafka's group.instance.id): a name unique within the group and "
            "stable across restarts of the same worker, such as a StatefulSet pod name. A worker that "
            "comes back under the same name within session_timeout_s gets its partitions back without "
            "a rebalance; a stopped static member does not leave the group, so its partitions wait "
            "session_timeout_s before they move. None: dynamic membership."
        ),
    )

    @model_validator(mode="after")
    def _check_security(self) -> KafkaSettings:
        if self.security_protocol.startswith("SASL_") and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                f"security_protocol {self.security_protocol} needs sasl_username and sasl_password"
            )
        if self.ssl_keyfile is not None and self.ssl_certfile is None:
            raise ValueError("ssl_keyfile is given without ssl_certfile")
        return self


class RedisSettings(_Section):
    url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL (may hold a password)."
    )
    enabled: bool = Field(True, description="Answer repeat prompts from Redis.")
    ttl_s: int = Field(24 * 3600, ge=1, description="Lifetime of a cached score.")
    timeout_ms: int = Field(200, ge=1, description="Per-call socket timeout; a slower Redis is skipped.")
    key_prefix: str = Field("gs:v1:", description="Prefix of every cache key.")


class BatchingSettings(_Section):
    max_batch_requests: int = Field(64, ge=1, description="Most records taken from Kafka per batch.")
    max_batch_tokens: int = Field(8192, ge=16, description="Token budget (padded) of one model call.")
    max_wait_ms: int = Field(20, ge=0, description="Longest wait for a batch to fill when traffic is thin.")
    pipeline_depth: int = Field(
        2,
        ge=1,
        le=8,
        description="Batches in flight at once: the next is decoded, looked up and tokenized while "
        "the model scores one and another is delivered (1: one batch at a time).",
    )
    long_prompt_tokens: int = Field(
        256,
        ge=16,
        description="A prompt whose text runs over this many tokens (at 256: more than one window of "
        "the packaged models) is scored in the long lane: in model calls of at most this many padded "
        "tokens, each after every waiting short call, its verdict delivered on its own, so short "
        "prompts never wait for it.",
    )


class LimitSettings(_Section):
    max_message_bytes: int = Field(
        1_000_000, ge=1, description="Larger records are dead-lettered as too_large."
    )
    max_text_chars: int = Field(100_000, ge=1, description="Longer texts are dead-lettered as too_large.")
    max_policies: int = Field(64, ge=1, description="Most policy ids one request may name.")
    max_id_chars: int = Field(256, ge=1, description="Longest accepted request id.")


class ModelSettings(_Section):
    path: Path = Field(DEFAULT_MODEL_DIR, description="Model directory (config.json, head, card).")
    device: Literal["auto", "cuda", "cpu"] = Field("auto", description="Where to run the model.")
    cache_dir: Path | None = Field(None, description="Where the built ONNX file is kept.")
    intra_op_threads: int = Field(0, ge=0, description="ONNX Runtime threads; 0 lets it choose.")
    guardformer_path: Path | None = Field(
        None,
        description="A GuardFormer model directory that scores the registry's policies the model at "
        "`path` does not know (custom policies written in plain words); unset: the packaged one "
        "(models/artifacts/guardformer-minilm).",
    )
    precision: Literal["auto", "fp32", "int8", "fp16"] = Field(
        "auto",
        description="Exported ONNX file to run; auto: fp32 (else fp16) on CPU, fp16 (else fp32) on CUDA.",
    )


class PolicySettings(_Section):
    path: Path | None = Field(
        None,
        description="Policy registry: a YAML file or a directory of them (models/policies/starter is the "
        "starter set). Unset: the model's own policies, or the starter set for a GuardFormer model.",
    )
    reload_seconds: float = Field(
        5.0,
        ge=0,
        description="How often the registry's files are checked for a change, which is then loaded "
        "without a restart (an invalid one is refused and the last good one kept); 0: never.",
    )


class WebSettings(_Section):
    host: str = Field("127.0.0.1", description="Bind address of the health and metrics server.")
    port: int = Field(8080, ge=0, le=65535, description="Port of /health/live, /health/ready, /metrics.")


class Settings(BaseSettings):
    """Everything the worker can be told."""

    model_config = SettingsConfigDict(
        env_prefix="GUARDSTREAM_", env_nested_delimiter="__", frozen=True, extra="forbid"
    )

    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    batching: BatchingSettings = BatchingSettings()
    limits: LimitSettings = LimitSettings()
    model: ModelSettings = ModelSettings()
    policies: PolicySettings = PolicySettings()
    web: WebSettings = WebSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")


def load_settings(overrides: dict[str, Any] | None = None) -> Settings:
    """Environment first, then `overrides` (nested dicts, from CLI flags) on top."""
    base = Settings()
    if not overrides:
        return base
    merged = base.model_dump()
    for section, values in overrides.items():
        if isinstance(values, dict):
            merged[section] = {**merged[section], **values}
        else:
            merged[section] = values
    merged["redis"]["url"] = _secret_value(merged["redis"]["url"])
    return Settings(**merged)


def _secret_value(value: Any) -> Any:
    return value.get_secret_value() if isinstance(value, SecretStr) else value
