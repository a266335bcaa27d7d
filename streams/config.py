"""Validated configuration from the environment and a ``.env`` file.

Every setting is a typed field whose environment variable is its name in upper case
(``api_port`` is ``API_PORT``). Nothing is read at import time: the command line calls
:func:`load_settings`, which returns a :class:`Settings` or raises :class:`ConfigError`, whose
``lines`` read ``"VARIABLE: message"``, one per problem. Environment variables take precedence
over the ``.env`` file; an empty value counts as unset. Lists are comma-separated (a JSON array
is accepted too). OpenTelemetry reads its own ``OTEL_*`` variables; they are not modelled here.

One module of about 500 lines: every variable the product reads, with its validation, in one
place a user can read top to bottom (the README's configuration table follows it).
"""

from __future__ import annotations

import os
import re
from ipaddress import ip_address
from pathlib import Path
from typing import Annotated, Any, Final, Literal
from urllib.parse import urlsplit

import orjson
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from streams.observability.log import mask_text
from projections.retention import RetentionPolicy
from streams.topology import STAGES

__all__ = ["ConfigError", "Settings", "format_validation_error", "load_settings"]


DEFAULT_JETSTREAM_ENDPOINTS: Final = (
    "wss://jetstream1.us-east.bsky.network",
    "wss://jetstream2.us-east.bsky.network",
    "wss://jetstream1.us-west.bsky.network",
    "wss://jetstream2.us-west.bsky.network",
    "wss://jetstream.us-east.bsky.network",
    "wss://jetstream.us-west.bsky.network",
)
DEFAULT_COLLECTIONS: Final = (
    "app.bsky.feed.post",
    "app.bsky.feed.like",
    "app.bsky.feed.repost",
    "app.bsky.graph.follow",
    "app.bsky.graph.block",
    "app.bsky.graph.list",
    "app.bsky.graph.listitem",
    "app.bsky.feed.generator",
    "app.bsky.feed.threadgate",
    "app.bsky.graph.starterpack",
    "app.bsky.labeler.service",
    "app.bsky.actor.profile",
)
MAX_COLLECTIONS: Final = 100  # Jetstream's limit on wantedCollections
MAX_WANTED_DIDS: Final = 10_000  # Jetstream's limit on wantedDids
MAX_TOPIC_LENGTH: Final = 249  # Kafka's limit
MASK: Final = "***"

_SEGMENT = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
# An NSID (atproto spec): reversed domain authority (>= 2 segments, the first not starting with
# a digit) and a name segment of letters and digits starting with a letter.
_NSID = re.compile(rf"^[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?(?:\.{_SEGMENT})+\.[A-Za-z][A-Za-z0-9]{{0,62}}$")
# A Jetstream collection prefix: one or more domain segments followed by ".*".
_NSID_PREFIX = re.compile(rf"^[A-Za-z](?:[A-Za-z0-9-]{{0,61}}[A-Za-z0-9])?(?:\.{_SEGMENT})*\.\*$")
_DID = re.compile(r"^did:[a-z]+:[A-Za-z0-9._:%-]*[A-Za-z0-9._-]$")
_TOPIC_CHARS = re.compile(r"^[A-Za-z0-9._-]*$")
_HOSTNAME = re.compile(rf"^{_SEGMENT}(?:\.{_SEGMENT})*\.?$")

Csv = Annotated[list[str], NoDecode]
SaslMechanism = Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]
SecurityProtocol = Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]
LogLevel = Literal["DEBUG", "INFO", "WARNING", "ERROR"]


WORKER_AGENTS: tuple[str, ...] = tuple(STAGES)


def _split_csv(value: Any) -> Any:
    """Turn ``"a, b,,c"`` (or a JSON array string) into ``["a", "b", "c"]``."""
    if isinstance(value, str):
        text = value.strip()
        if text.startswith("["):
            value = orjson.loads(text)
        else:
            return [item.strip() for item in text.split(",") if item.strip()]
    if isinstance(value, list | tuple):
        return [str(item).strip() for item in value if str(item).strip()]
    return value


def _dedupe(items: list[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _check_port(port: int | None, what: str) -> None:
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"{what} port must be 1-65535, got {port}")


def _check_url_port(url: str, shown: str) -> None:
    """Reject a URL whose port is not a number in 1-65535 (``shown`` is how to quote it)."""
    try:
        port = urlsplit(url).port  # raises on a non-numeric or out-of-range port
    except ValueError:
        raise ValueError(f"port must be a number in 1-65535 in {shown!r}") from None
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port must be a number in 1-65535 in {shown!r}")


class Settings(BaseSettings):
    """The whole runtime configuration. Construct through :func:`load_settings`."""

    model_config = SettingsConfigDict(
        env_file=".env",
        env_file_encoding="utf-8",
        env_ignore_empty=True,
        extra="ignore",
        case_sensitive=False,
        validate_default=True,
        frozen=True,
    )

    # -- Jetstream ingest -----------------------------------------------------------------
    jetstream_endpoint: Csv = Field(
        default=list(DEFAULT_JETSTREAM_ENDPOINTS),
        description="Base ws/wss URLs of Jetstream hosts, tried in order; '/subscribe' is appended.",
    )
    jetstream_collections: Csv = Field(
        default=list(DEFAULT_COLLECTIONS),
        description=f"Collection NSIDs or prefixes like 'app.bsky.*' (at most {MAX_COLLECTIONS}).",
    )
    jetstream_collection: str | None = Field(
        None,
        description="The original engine's name for the collection list (one NSID, or several comma-separated): "
        "used as JETSTREAM_COLLECTIONS; refused when both are set and differ.",
    )
    jetstream_wanted_dids: Csv = Field(
        default_factory=list, description=f"Only these repos (at most {MAX_WANTED_DIDS}); empty = all."
    )
    jetstream_compress: bool = True
    jetstream_rewind_seconds: float = Field(5.0, ge=0)
    jetstream_stall_timeout_seconds: float = Field(30.0, gt=0)
    jetstream_max_message_bytes: int = Field(2_000_000, ge=1024)
    ingest_max_inflight: int = Field(10_000, ge=1)
    ingest_delivery_timeout_seconds: float = Field(120.0, gt=0)

    # -- Kafka ------------------------------------------------------------------------------
    kafka_bootstrap_servers: Csv = Field(default=["127.0.0.1:9092"])
    kafka_security_protocol: SecurityProtocol = "PLAINTEXT"
    kafka_sasl_mechanism: SaslMechanism | None = None
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_ssl_cafile: Path | None = None
    kafka_ssl_certfile: Path | None = None
    kafka_ssl_keyfile: Path | None = None
    bge_topic_prefix: str = Field("", max_length=200)
    bge_topic_partitions: int = Field(8, ge=1, le=1024)

    # -- Postgres ---------------------------------------------------------------------------
    database_url: str = "postgresql://bge:bge@127.0.0.1:55432/bge"
    db_pool_min: int = Field(1, ge=0, le=1000)
    db_pool_max: int = Field(10, ge=1, le=1000)
    db_statement_timeout_ms: int = Field(30_000, ge=0)
    bge_retention_days: float = Field(30.0, gt=0, description="Days the event ledgers (activity_events, "
                                      "follow_events) are kept; longer than growth.events' Kafka retention.")
    bge_retention_days_dead_letters: float = Field(30.0, gt=0, description="Days projection dead letters are kept.")
    bge_retention_days_hourly: float = Field(400.0, gt=0, description="Days hourly follower gains are kept.")
    bge_retention_days_records: float | None = Field(None, gt=0, description="Days posts, likes, reposts, replies, "
                                                    "quotes and post facets are kept (unset: kept; see projections.retention).")
    bge_retention_interval_seconds: float = Field(3600.0, gt=0, description="How often the leader prunes.")
    db_slow_query_ms: float = Field(500.0, gt=0, description="Statements slower than this are logged as warnings "
                                    "(with their name and duration) and counted in /api/stats/database.")
    db_schema: str = Field("public", pattern=r"^[a-z_][a-z0-9_]{0,62}$",
                           description="Postgres schema the projections live in.")

    # -- AT Protocol AppView ----------------------------------------------------------------
    atproto_service: str = "https://public.api.bsky.app"
    atproto_rate_limit: float = Field(10.0, ge=1)
    crawl_enabled: bool = Field(False, description="Run the crawl and enrichment agents (calls ATPROTO_SERVICE).")
    crawl_config_file: Path | None = Field(None, description="JSON file of domain.crawl.CrawlConfig.")
    crawl_schema: str = Field("bge_crawl", pattern=r"^[a-z_][a-z0-9_]{0,62}$")
    atproto_pds: str = Field("https://bsky.social", description="Where growth actions log in (PDS or entryway).")
    atproto_identifier: str | None = Field(None, description="Handle or DID the growth actions act for.")
    atproto_app_password: SecretStr | None = None

    # -- HTTP API, logging, reliability -----------------------------------------------------
    api_cors_origins: Csv = Field(default_factory=list, description="Origins (scheme://host[:port]) whose "
                                        "browsers may read the API (CORS); empty: none but the dashboard's own.")
    jaeger_query_url: str = Field("http://127.0.0.1:16686", description="Jaeger's query API, where the dashboard's "
                                  "event journey reads a trace's spans.")
    jaeger_ui_url: str | None = Field(None, description="Jaeger's UI, linked from the event journey (Docker Compose has it).")
    api_host: str = "127.0.0.1"
    api_port: int = Field(3003, ge=1, le=65535)
    log_level: LogLevel = "INFO"
    debug: bool = False
    enable_circuit_breaker: bool = True
    enable_rate_limit: bool = True
    api_rate_limit: int = Field(100, ge=1)
    api_rate_window_seconds: float = Field(60.0, gt=0)
    breaker_failure_threshold: int = Field(5, ge=1)
    breaker_recovery_seconds: float = Field(30.0, gt=0)
    bge_state_dir: Path | None = None
    bge_strategies_file: Path | None = Field(
        None, description="JSON file with the growth strategies' configuration (domain.growth.StrategyConfig)."
    )
    worker_agents: Csv = Field(
        default_factory=lambda: list(WORKER_AGENTS),
        description="The agents a worker runs (collect, popularity, project; default all). A worker running "
                    "some of them is its own consumer group, so stages scale over processes and cores.",
    )
    stage_batch_size: int = Field(5000, ge=1, le=100_000,
                                  description="The most records one fetch of the worker's batched source hands a stage.")
    stage_batch_wait_ms: int = Field(50, ge=0, le=10_000,
                                     description="How long the broker may hold a fetch to fill it when the input is "
                                                 "slow: bounds the latency a stage adds to batch its input.")
    projector_batch_size: int = Field(5000, ge=1, le=100_000,
                                      description="The most messages one projection transaction applies.")
    kafka_compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "zstd", description="Compression of what the worker's stages send: zstd writes their topics about a ninth "
                            "the size at no measurable CPU cost (aiokafka's lz4 is lz4 HC and cost 13% of a collect "
                            "worker's CPU).")

    # -- field validators (each error is reported against its own variable) -------------------

    @field_validator("jetstream_endpoint", "jetstream_collections", "jetstream_wanted_dids",
                     "kafka_bootstrap_servers", "worker_agents", "api_cors_origins", mode="before")
    @classmethod
    def _csv(cls, value: Any) -> Any:
        try:
            return _split_csv(value)
        except orjson.JSONDecodeError as exc:
            raise ValueError(f"not a comma-separated list nor a JSON array ({exc})") from None

    @field_validator("worker_agents")
    @classmethod
    def _agents(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(WORKER_AGENTS))
        if unknown:
            raise ValueError(f"unknown agent(s) {', '.join(unknown)}; known: {', '.join(WORKER_AGENTS)}")
        if not value:
            raise ValueError(f"name at least one of {', '.join(WORKER_AGENTS)}")
        return [agent for agent in WORKER_AGENTS if agent in value]

    @field_validator("jetstream_endpoint")
    @classmethod
    def _endpoints(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one ws:// or wss:// URL is required")
        bases = []
        for url in value:
            parts = urlsplit(url)
            if parts.scheme not in ("ws", "wss") or not parts.hostname:
                raise ValueError(f"{url!r} is not a ws:// or wss:// URL with a host")
            if parts.query or parts.fragment:
                raise ValueError(f"{url!r} must not carry a query or fragment (the client adds them)")
            _check_url_port(url, url)
            path = parts.path.rstrip("/")
            path = path.removesuffix("/subscribe")
            bases.append(f"{parts.scheme}://{parts.netloc}{path}")
        return _dedupe(bases)

    @model_validator(mode="before")
    @classmethod
    def _singular_collection(cls, data: Any) -> Any:
        """``JETSTREAM_COLLECTION`` (the original engine's variable) is the collection list; a
        variable the user set is never ignored, so both names set to different lists is an error."""
        if not isinstance(data, dict) or not data.get("jetstream_collection"):
            return data
        data = dict(data)
        singular = data.pop("jetstream_collection")
        plural = data.get("jetstream_collections")
        if plural and _split_csv(plural) != _split_csv(singular):
            raise ValueError("JETSTREAM_COLLECTION and JETSTREAM_COLLECTIONS are both set and differ: "
                             "set only JETSTREAM_COLLECTIONS (comma-separated NSIDs)")
        data["jetstream_collections"] = singular
        return data

    @field_validator("jetstream_collections")
    @classmethod
    def _collections(cls, value: list[str]) -> list[str]:
        bad = [c for c in value if len(c) > 317 or not (_NSID.match(c) or _NSID_PREFIX.match(c))]
        if bad:
            raise ValueError(f"not an NSID or an NSID prefix like 'app.bsky.*': {', '.join(map(repr, bad[:5]))}")
        value = _dedupe(value)
        if len(value) > MAX_COLLECTIONS:
            raise ValueError(f"at most {MAX_COLLECTIONS} collections, got {len(value)}")
        return value

    @field_validator("jetstream_wanted_dids")
    @classmethod
    def _dids(cls, value: list[str]) -> list[str]:
        bad = [d for d in value if len(d) > 2048 or not _DID.match(d)]
        if bad:
            raise ValueError(f"not a DID (did:<method>:<id>): {', '.join(map(repr, bad[:5]))}")
        value = _dedupe(value)
        if len(value) > MAX_WANTED_DIDS:
            raise ValueError(f"at most {MAX_WANTED_DIDS} DIDs, got {len(value)}")
        return value

    @field_validator("kafka_bootstrap_servers")
    @classmethod
    def _bootstrap(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("at least one host:port is required")
        for server in value:
            host, sep, port = server.rpartition(":")
            host = host.removeprefix("[").removesuffix("]")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"{server!r} is not host:port")
            _check_port(int(port), server)
        return _dedupe(value)

    @field_validator("kafka_security_protocol", "kafka_sasl_mechanism", "log_level", mode="before")
    @classmethod
    def _upper(cls, value: Any) -> Any:
        if isinstance(value, str):
            value = value.strip().upper()
            return "WARNING" if value == "WARN" else value
        return value

    @field_validator("kafka_sasl_mechanism")
    @classmethod
    def _mechanism(cls, value: str | None, info: ValidationInfo) -> str | None:
        protocol = info.data.get("kafka_security_protocol")
        if value is None and protocol in ("SASL_PLAINTEXT", "SASL_SSL"):
            raise ValueError(f"required when KAFKA_SECURITY_PROTOCOL is {protocol}")
        if value is not None and protocol in ("PLAINTEXT", "SSL"):
            raise ValueError(f"set, but KAFKA_SECURITY_PROTOCOL is {protocol} (use SASL_PLAINTEXT or SASL_SSL)")
        return value

    @field_validator("kafka_sasl_username", "kafka_sasl_password")
    @classmethod
    def _sasl_credentials(cls, value: Any, info: ValidationInfo) -> Any:
        mechanism = info.data.get("kafka_sasl_mechanism")
        if mechanism is not None and value is None:
            raise ValueError(f"required when KAFKA_SASL_MECHANISM is {mechanism}")
        return value

    @field_validator("kafka_ssl_cafile", "kafka_ssl_certfile", "kafka_ssl_keyfile")
    @classmethod
    def _ssl_file(cls, value: Path | None, info: ValidationInfo) -> Path | None:
        if value is None:
            return None
        protocol = info.data.get("kafka_security_protocol")
        if protocol in ("PLAINTEXT", "SASL_PLAINTEXT"):
            raise ValueError(f"set, but KAFKA_SECURITY_PROTOCOL is {protocol} (use SSL or SASL_SSL)")
        if not value.is_file():
            raise ValueError(f"file not found: {value}")
        if info.field_name == "kafka_ssl_keyfile" and info.data.get("kafka_ssl_certfile") is None:
            raise ValueError("a key file needs KAFKA_SSL_CERTFILE too")
        return value

    @field_validator("bge_strategies_file", "crawl_config_file")
    @classmethod
    def _strategies_file(cls, value: Path | None) -> Path | None:
        if value is not None and not value.is_file():
            raise ValueError(f"file not found: {value}")
        return value

    @field_validator("bge_topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        if not _TOPIC_CHARS.match(value):
            raise ValueError(f"only letters, digits, '.', '_' and '-' are allowed, got {value!r}")
        return value

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("postgresql", "postgres"):
            raise ValueError(f"must be a postgresql:// URL, got {mask_text(value)!r}")
        _check_url_port(value, mask_text(value))
        if not parts.path.strip("/") and "dbname=" not in parts.query:
            raise ValueError(f"names no database: {mask_text(value)!r}")
        return value

    @field_validator("db_pool_max")
    @classmethod
    def _pool(cls, value: int, info: ValidationInfo) -> int:
        minimum = info.data.get("db_pool_min")
        if minimum is not None and value < minimum:
            raise ValueError(f"must be >= DB_POOL_MIN ({minimum}), got {value}")
        return value

    @field_validator("atproto_service")
    @classmethod
    def _service(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("https", "http") or not parts.hostname:
            raise ValueError(f"must be an https:// (or http://) URL with a host, got {value!r}")
        if parts.query or parts.fragment:
            raise ValueError(f"must not carry a query or fragment, got {value!r}")
        _check_url_port(value, value)
        return value.rstrip("/")

    @field_validator("api_host")
    @classmethod
    def _host(cls, value: str) -> str:
        value = value.strip()
        try:
            ip_address(value)
        except ValueError:
            if not _HOSTNAME.match(value):
                raise ValueError(f"not an IP address or host name: {value!r}") from None
        return value

    # -- derived values ---------------------------------------------------------------------

    def retention(self) -> RetentionPolicy:
        """The retention periods (``BGE_RETENTION_DAYS*``) as a policy for :mod:`projections.retention`."""
        return RetentionPolicy(ledgers_days=self.bge_retention_days,
                               dead_letters_days=self.bge_retention_days_dead_letters,
                               hourly_days=self.bge_retention_days_hourly,
                               records_days=self.bge_retention_days_records)

    def topic(self, name: str) -> str:
        """The full name of a topic: ``BGE_TOPIC_PREFIX + name`` (``name`` usually a
        :class:`Topic`). Raises ``ValueError`` for characters Kafka does not allow or a name
        longer than Kafka's 249 characters."""
        full = f"{self.bge_topic_prefix}{name}"
        if not name or not _TOPIC_CHARS.match(name) or len(full) > MAX_TOPIC_LENGTH:
            raise ValueError(f"invalid Kafka topic name {full!r}")
        return full

    @property
    def jetstream_subscribe_urls(self) -> list[str]:
        """The endpoints with ``/subscribe`` appended (no query string)."""
        return [f"{base}/subscribe" for base in self.jetstream_endpoint]

    @property
    def faust_broker_urls(self) -> list[str]:
        """The bootstrap servers as Faust broker URLs (``kafka://host:port``)."""
        return [f"kafka://{server}" for server in self.kafka_bootstrap_servers]

    def kafka_client_options(self) -> dict[str, Any]:
        """Keyword arguments for aiokafka's producer, consumer and admin clients:
        ``bootstrap_servers``, ``security_protocol`` and, as configured, ``sasl_mechanism``,
        ``sasl_plain_username``, ``sasl_plain_password`` and an ``ssl_context`` built by
        ``aiokafka.helpers.create_ssl_context`` (which reads the certificate files)."""
        options: dict[str, Any] = {
            "bootstrap_servers": ",".join(self.kafka_bootstrap_servers),
            "security_protocol": self.kafka_security_protocol,
        }
        if self.kafka_sasl_mechanism is not None:
            options["sasl_mechanism"] = self.kafka_sasl_mechanism
            options["sasl_plain_username"] = self.kafka_sasl_username
            options["sasl_plain_password"] = (
                self.kafka_sasl_password.get_secret_value() if self.kafka_sasl_password else None
            )
        if self.kafka_security_protocol in ("SSL", "SASL_SSL"):
            from aiokafka.helpers import create_ssl_context

            options["ssl_context"] = create_ssl_context(
                cafile=self.kafka_ssl_cafile,
                certfile=self.kafka_ssl_certfile,
                keyfile=self.kafka_ssl_keyfile,
            )
        return options

    def summary(self) -> dict[str, str]:
        """Every setting as ``{"VARIABLE": "value"}`` for display, secrets masked: passwords
        become ``***`` and URL credentials ``user:***@``. ``OTEL_SERVICE_NAME`` and
        ``OTEL_EXPORTER_OTLP_ENDPOINT`` are included when set in the environment."""
        out: dict[str, str] = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                text = MASK
            elif value is None:
                text = ""
            elif isinstance(value, bool):
                text = str(value).lower()
            elif isinstance(value, list):
                text = ",".join(mask_text(str(item)) for item in value)
            else:
                text = mask_text(str(value))
            out[name.upper()] = text
        for name in ("OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT"):
            if os.environ.get(name):
                out[name] = mask_text(os.environ[name])
        return out


# --------------------------------------------------------------------------------------------
# Loading and errors

# Inputs never echoed back: secrets, and the database URL (its messages show it masked).
_NO_ECHO: Final = frozenset({"KAFKA_SASL_PASSWORD", "DATABASE_URL"})


class ConfigError(Exception):
    """The configuration is invalid; ``lines`` are ``"VARIABLE: message"``, one per problem."""

    def __init__(self, lines: list[str]) -> None:
        self.lines = lines
        super().__init__("invalid configuration:\n" + "\n".join(f"  {line}" for line in lines))


def format_validation_error(error: ValidationError) -> list[str]:
    """Render a ``Settings`` validation error as ``"VARIABLE: message (got 'value')"`` lines.
    Secret inputs are never echoed, and URLs have their credentials masked."""
    lines = []
    for item in error.errors():
        variable = ".".join(str(part) for part in item["loc"]).upper() or "SETTINGS"
        message = item["msg"].removeprefix("Value error, ")
        line = f"{variable}: {message}"
        raw = item.get("input")
        if (variable.split(".")[0] not in _NO_ECHO and isinstance(raw, str | int | float)
                and not isinstance(raw, bool) and str(raw) not in message and len(str(raw)) <= 200):
            line += f" (got {mask_text(str(raw))!r})"
        lines.append(line)
    return lines


def load_settings(env_file: str | Path | None = ".env", **overrides: Any) -> Settings:
    """Read the settings from the environment and ``env_file`` (skipped when None or
    missing), with ``overrides`` (field names) taking precedence over both.

    Raises :class:`ConfigError` listing every invalid variable. Performs no other I/O than
    reading that file and checking that configured certificate files exist.
    """
    try:
        return Settings(_env_file=env_file, **overrides)  # type: ignore[call-arg]
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc)) from None
