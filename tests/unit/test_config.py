"""Settings: defaults, parsing, validation messages naming the variable, .env, masking."""

from __future__ import annotations

import ssl
import subprocess
import sys
from pathlib import Path

import pytest

from streams.config import (
    DEFAULT_COLLECTIONS,
    DEFAULT_JETSTREAM_ENDPOINTS,
    ConfigError,
    Settings,
    load_settings,
)
from streams.topology import Topic

VARIABLES = [name.upper() for name in Settings.model_fields]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch, tmp_path):
    """No setting leaks in from the test runner's environment or a stray .env."""
    for name in [*VARIABLES, "OTEL_SERVICE_NAME", "OTEL_EXPORTER_OTLP_ENDPOINT"]:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def load(**env: str) -> Settings:
    import os

    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        return load_settings(env_file=None)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def rejected(**env: str) -> list[str]:
    with pytest.raises(ConfigError) as info:
        load(**env)
    return info.value.lines


def test_defaults_are_valid_and_match_the_spec():
    s = load_settings(env_file=None)
    assert s.jetstream_endpoint == list(DEFAULT_JETSTREAM_ENDPOINTS)
    assert len(s.jetstream_endpoint) == 6
    assert "wss://jetstream.us-west.bsky.network" in s.jetstream_endpoint
    assert s.jetstream_collections == list(DEFAULT_COLLECTIONS) and len(DEFAULT_COLLECTIONS) == 12
    assert s.jetstream_wanted_dids == []
    assert s.jetstream_compress is True
    assert s.jetstream_rewind_seconds == 5.0 and s.jetstream_stall_timeout_seconds == 30.0
    assert s.jetstream_max_message_bytes == 2_000_000 and s.ingest_max_inflight == 10_000
    assert s.ingest_delivery_timeout_seconds == 120.0
    assert s.kafka_bootstrap_servers == ["127.0.0.1:9092"]
    assert s.kafka_security_protocol == "PLAINTEXT" and s.kafka_sasl_mechanism is None
    assert s.bge_topic_prefix == "" and s.bge_topic_partitions == 8
    assert s.database_url == "postgresql://bge:bge@127.0.0.1:55432/bge"
    assert (s.db_pool_min, s.db_pool_max, s.db_statement_timeout_ms) == (1, 10, 30_000)
    assert s.atproto_service == "https://public.api.bsky.app" and s.atproto_rate_limit == 10.0
    assert (s.api_host, s.api_port, s.log_level, s.debug) == ("127.0.0.1", 3003, "INFO", False)
    assert s.enable_circuit_breaker and s.enable_rate_limit
    assert (s.api_rate_limit, s.api_rate_window_seconds) == (100, 60.0)
    assert (s.breaker_failure_threshold, s.breaker_recovery_seconds) == (5, 30.0)
    assert s.bge_state_dir is None
    assert s.kafka_compression == "zstd"  # the stages' topics, about a ninth the size (README, Performance)


def test_comma_separated_lists_are_split_trimmed_and_deduplicated():
    s = load(
        JETSTREAM_ENDPOINT=" wss://a.example/subscribe , ws://localhost:6008/ ,wss://a.example",
        JETSTREAM_COLLECTIONS="app.bsky.feed.post, app.bsky.graph.*,app.bsky.feed.post",
        JETSTREAM_WANTED_DIDS="did:plc:ewvi7nxzyoun6zhxrhs64oiz,did:web:example.com",
        KAFKA_BOOTSTRAP_SERVERS="k1:9092, k2:9093,[::1]:9094",
    )
    # Endpoints are base URLs: '/subscribe' and trailing slashes are stripped.
    assert s.jetstream_endpoint == ["wss://a.example", "ws://localhost:6008"]
    assert s.jetstream_subscribe_urls == ["wss://a.example/subscribe", "ws://localhost:6008/subscribe"]
    assert s.jetstream_collections == ["app.bsky.feed.post", "app.bsky.graph.*"]
    assert s.jetstream_wanted_dids == ["did:plc:ewvi7nxzyoun6zhxrhs64oiz", "did:web:example.com"]
    assert s.kafka_bootstrap_servers == ["k1:9092", "k2:9093", "[::1]:9094"]
    assert s.faust_broker_urls == ["kafka://k1:9092", "kafka://k2:9093", "kafka://[::1]:9094"]


def test_a_json_array_is_accepted_for_lists():
    s = load(JETSTREAM_COLLECTIONS='["app.bsky.feed.like", "app.bsky.actor.*"]')
    assert s.jetstream_collections == ["app.bsky.feed.like", "app.bsky.actor.*"]


def test_booleans_levels_and_protocols_are_case_insensitive():
    s = load(JETSTREAM_COMPRESS="FALSE", DEBUG="yes", LOG_LEVEL="warn",
             ENABLE_CIRCUIT_BREAKER="0", ENABLE_RATE_LIMIT="off")
    assert s.jetstream_compress is False and s.debug is True and s.log_level == "WARNING"
    assert s.enable_circuit_breaker is False and s.enable_rate_limit is False
    assert load(LOG_LEVEL="debug").log_level == "DEBUG"


def test_an_empty_value_counts_as_unset():
    s = load(JETSTREAM_ENDPOINT="", KAFKA_SSL_CAFILE="", BGE_STATE_DIR="")
    assert s.jetstream_endpoint == list(DEFAULT_JETSTREAM_ENDPOINTS)
    assert s.kafka_ssl_cafile is None and s.bge_state_dir is None


CA = "ca.pem"  # created in the working directory by the tests that need it


@pytest.mark.parametrize(
    ("env", "variable", "fragment"),
    [
        ({"JETSTREAM_ENDPOINT": "https://jetstream.example"}, "JETSTREAM_ENDPOINT", "ws://"),
        ({"JETSTREAM_ENDPOINT": "wss://"}, "JETSTREAM_ENDPOINT", "host"),
        ({"JETSTREAM_ENDPOINT": "wss://h/subscribe?wantedCollections=x"}, "JETSTREAM_ENDPOINT", "query"),
        ({"JETSTREAM_ENDPOINT": "wss://h:99999"}, "JETSTREAM_ENDPOINT", "port"),
        ({"JETSTREAM_ENDPOINT": ","}, "JETSTREAM_ENDPOINT", "at least one"),
        ({"JETSTREAM_COLLECTIONS": "not an nsid"}, "JETSTREAM_COLLECTIONS", "NSID"),
        ({"JETSTREAM_COLLECTIONS": "app.bsky.feed.post,bsky"}, "JETSTREAM_COLLECTIONS", "'bsky'"),
        ({"JETSTREAM_COLLECTIONS": "app.*.post"}, "JETSTREAM_COLLECTIONS", "NSID"),
        ({"JETSTREAM_COLLECTIONS": ",".join(f"app.bsky.c{i}.x" for i in range(101))},
         "JETSTREAM_COLLECTIONS", "at most 100"),
        ({"JETSTREAM_COLLECTIONS": "[not json"}, "JETSTREAM_COLLECTIONS", "JSON"),
        ({"JETSTREAM_WANTED_DIDS": "did:plc:ok,alice.bsky.social"}, "JETSTREAM_WANTED_DIDS", "DID"),
        ({"JETSTREAM_WANTED_DIDS": "did:PLC:x"}, "JETSTREAM_WANTED_DIDS", "DID"),
        ({"JETSTREAM_WANTED_DIDS": ",".join(f"did:plc:{i:024d}" for i in range(10_001))},
         "JETSTREAM_WANTED_DIDS", "at most 10000"),
        ({"JETSTREAM_COMPRESS": "maybe"}, "JETSTREAM_COMPRESS", "boolean"),
        ({"WORKER_AGENTS": "collect,projector"}, "WORKER_AGENTS", "unknown agent(s) projector"),
        ({"WORKER_AGENTS": " , "}, "WORKER_AGENTS", "at least one"),
        ({"JETSTREAM_REWIND_SECONDS": "-1"}, "JETSTREAM_REWIND_SECONDS", "greater than or equal to 0"),
        ({"JETSTREAM_STALL_TIMEOUT_SECONDS": "0"}, "JETSTREAM_STALL_TIMEOUT_SECONDS", "greater than 0"),
        ({"JETSTREAM_MAX_MESSAGE_BYTES": "12"}, "JETSTREAM_MAX_MESSAGE_BYTES", "1024"),
        ({"INGEST_MAX_INFLIGHT": "0"}, "INGEST_MAX_INFLIGHT", "greater than or equal to 1"),
        ({"INGEST_MAX_INFLIGHT": "many"}, "INGEST_MAX_INFLIGHT", "valid integer"),
        ({"INGEST_DELIVERY_TIMEOUT_SECONDS": "-5"}, "INGEST_DELIVERY_TIMEOUT_SECONDS", "greater than 0"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "localhost"}, "KAFKA_BOOTSTRAP_SERVERS", "host:port"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "k:0"}, "KAFKA_BOOTSTRAP_SERVERS", "1-65535"),
        ({"KAFKA_BOOTSTRAP_SERVERS": "k:70000"}, "KAFKA_BOOTSTRAP_SERVERS", "1-65535"),
        ({"KAFKA_SECURITY_PROTOCOL": "TLS"}, "KAFKA_SECURITY_PROTOCOL", "SASL_SSL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_USERNAME": "u",
          "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_MECHANISM", "required when KAFKA_SECURITY_PROTOCOL"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "OAUTHBEARER"},
         "KAFKA_SASL_MECHANISM", "SCRAM-SHA-512"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "PLAIN",
          "KAFKA_SASL_PASSWORD": "p"}, "KAFKA_SASL_USERNAME", "required when KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT", "KAFKA_SASL_MECHANISM": "SCRAM-SHA-256",
          "KAFKA_SASL_USERNAME": "u"}, "KAFKA_SASL_PASSWORD", "required when KAFKA_SASL_MECHANISM"),
        ({"KAFKA_SASL_MECHANISM": "PLAIN", "KAFKA_SASL_USERNAME": "u", "KAFKA_SASL_PASSWORD": "p"},
         "KAFKA_SASL_MECHANISM", "KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_CAFILE": "/nonexistent/ca.pem"},
         "KAFKA_SSL_CAFILE", "file not found"),
        ({"KAFKA_SSL_CAFILE": CA}, "KAFKA_SSL_CAFILE", "KAFKA_SECURITY_PROTOCOL is PLAINTEXT"),
        ({"KAFKA_SECURITY_PROTOCOL": "SSL", "KAFKA_SSL_KEYFILE": CA}, "KAFKA_SSL_KEYFILE",
         "KAFKA_SSL_CERTFILE"),
        ({"BGE_TOPIC_PREFIX": "dev/"}, "BGE_TOPIC_PREFIX", "letters, digits"),
        ({"BGE_TOPIC_PREFIX": "x" * 201}, "BGE_TOPIC_PREFIX", "at most 200"),
        ({"BGE_TOPIC_PARTITIONS": "0"}, "BGE_TOPIC_PARTITIONS", "greater than or equal to 1"),
        ({"BGE_TOPIC_PARTITIONS": "1025"}, "BGE_TOPIC_PARTITIONS", "less than or equal to 1024"),
        ({"DATABASE_URL": "mysql://u:p@h/db"}, "DATABASE_URL", "postgresql://"),
        ({"DATABASE_URL": "postgresql://u:p@h:0/db"}, "DATABASE_URL", "1-65535"),
        ({"DATABASE_URL": "postgresql://u:p@h:5432"}, "DATABASE_URL", "no database"),
        ({"DB_POOL_MIN": "-1"}, "DB_POOL_MIN", "greater than or equal to 0"),
        ({"DB_POOL_MAX": "0"}, "DB_POOL_MAX", "greater than or equal to 1"),
        ({"DB_POOL_MIN": "5", "DB_POOL_MAX": "2"}, "DB_POOL_MAX", "DB_POOL_MIN (5)"),
        ({"DB_STATEMENT_TIMEOUT_MS": "-1"}, "DB_STATEMENT_TIMEOUT_MS", "greater than or equal to 0"),
        ({"ATPROTO_SERVICE": "ftp://api.bsky.app"}, "ATPROTO_SERVICE", "https://"),
        ({"ATPROTO_SERVICE": "public.api.bsky.app"}, "ATPROTO_SERVICE", "https://"),
        ({"ATPROTO_RATE_LIMIT": "0.5"}, "ATPROTO_RATE_LIMIT", "greater than or equal to 1"),
        ({"ATPROTO_RATE_LIMIT": "fast"}, "ATPROTO_RATE_LIMIT", "valid number"),
        ({"API_HOST": "not a host!"}, "API_HOST", "host name"),
        ({"API_PORT": "0"}, "API_PORT", "greater than or equal to 1"),
        ({"API_PORT": "65536"}, "API_PORT", "less than or equal to 65535"),
        ({"API_PORT": "http"}, "API_PORT", "valid integer"),
        ({"LOG_LEVEL": "verbose"}, "LOG_LEVEL", "'DEBUG'"),
        ({"DEBUG": "sometimes"}, "DEBUG", "boolean"),
        ({"ENABLE_CIRCUIT_BREAKER": "2"}, "ENABLE_CIRCUIT_BREAKER", "boolean"),
        ({"ENABLE_RATE_LIMIT": "nah"}, "ENABLE_RATE_LIMIT", "boolean"),
        ({"API_RATE_LIMIT": "0"}, "API_RATE_LIMIT", "greater than or equal to 1"),
        ({"API_RATE_WINDOW_SECONDS": "0"}, "API_RATE_WINDOW_SECONDS", "greater than 0"),
        ({"BREAKER_FAILURE_THRESHOLD": "0"}, "BREAKER_FAILURE_THRESHOLD", "greater than or equal to 1"),
        ({"BREAKER_RECOVERY_SECONDS": "-3"}, "BREAKER_RECOVERY_SECONDS", "greater than 0"),
    ],
)
def test_an_invalid_value_is_rejected_with_a_message_naming_the_variable(env, variable, fragment, tmp_path):
    (tmp_path / CA).write_text("not really a certificate")
    lines = rejected(**env)
    matching = [line for line in lines if line.startswith(f"{variable}: ")]
    assert matching, lines
    assert any(fragment in line for line in matching), matching


def test_every_invalid_variable_is_reported_at_once():
    lines = rejected(API_PORT="0", DB_POOL_MAX="0", LOG_LEVEL="loud")
    assert [line.split(":")[0] for line in lines] == ["DB_POOL_MAX", "API_PORT", "LOG_LEVEL"]


def test_the_error_message_lists_the_variables_readably():
    with pytest.raises(ConfigError) as info:
        load(API_PORT="70000")
    assert str(info.value) == ("invalid configuration:\n"
                               "  API_PORT: Input should be less than or equal to 65535 (got '70000')")


def test_secrets_are_never_echoed_in_validation_errors():
    lines = rejected(DATABASE_URL="mysql://bge:hunter2@h/db", KAFKA_SASL_PASSWORD="hunter2")
    text = "\n".join(lines)
    assert "hunter2" not in text
    assert "DATABASE_URL: must be a postgresql:// URL, got 'mysql://bge:***@h/db'" in lines


def test_the_env_file_is_read_and_the_environment_takes_precedence(tmp_path, monkeypatch):
    (tmp_path / ".env").write_text(
        "API_PORT=4000\nBGE_TOPIC_PREFIX=test-\nJETSTREAM_COLLECTIONS=app.bsky.feed.post,app.bsky.feed.like\n"
        "SOMETHING_ELSE=ignored\n"
    )
    monkeypatch.setenv("API_PORT", "5000")
    s = load_settings()  # reads ./.env by default
    assert s.bge_topic_prefix == "test-"
    assert s.jetstream_collections == ["app.bsky.feed.post", "app.bsky.feed.like"]
    assert s.api_port == 5000
    assert load_settings(env_file=tmp_path / ".env", api_port=6000).api_port == 6000


def test_a_missing_env_file_is_not_an_error(tmp_path):
    assert load_settings(env_file=tmp_path / "absent.env").api_port == 3003


def test_invalid_values_in_the_env_file_are_reported_too(tmp_path):
    (tmp_path / ".env").write_text("DB_POOL_MIN=20\n")
    with pytest.raises(ConfigError) as info:
        load_settings()
    assert info.value.lines == ["DB_POOL_MAX: must be >= DB_POOL_MIN (20), got 10"]


def test_topic_names_carry_the_prefix():
    s = load(BGE_TOPIC_PREFIX="ci-42.")
    assert s.topic(Topic.JETSTREAM_EVENTS) == "ci-42.jetstream.events"
    assert [s.topic(t) for t in Topic] == [
        "ci-42.jetstream.events", "ci-42.jetstream.dlq", "ci-42.jetstream.ops",
        "ci-42.growth.events", "ci-42.growth.dlq", "ci-42.growth.crawl", "ci-42.growth.engagement",
    ]
    assert load().topic("growth.events") == "growth.events"
    with pytest.raises(ValueError):
        s.topic("bad/topic")
    with pytest.raises(ValueError):
        s.topic("")


def test_kafka_client_options_for_plaintext():
    assert load().kafka_client_options() == {
        "bootstrap_servers": "127.0.0.1:9092", "security_protocol": "PLAINTEXT"}


def test_kafka_client_options_for_sasl_ssl_build_an_ssl_context():
    s = load(KAFKA_SECURITY_PROTOCOL="sasl_ssl", KAFKA_SASL_MECHANISM="scram-sha-512",
             KAFKA_SASL_USERNAME="bge", KAFKA_SASL_PASSWORD="s3cret",
             KAFKA_BOOTSTRAP_SERVERS="k1:9093,k2:9093")
    options = s.kafka_client_options()
    assert options["bootstrap_servers"] == "k1:9093,k2:9093"
    assert options["security_protocol"] == "SASL_SSL"
    assert options["sasl_mechanism"] == "SCRAM-SHA-512"
    assert options["sasl_plain_username"] == "bge" and options["sasl_plain_password"] == "s3cret"
    assert isinstance(options["ssl_context"], ssl.SSLContext)
    assert "s3cret" not in repr(s)


def test_summary_masks_secrets_and_shows_otel_variables_when_set(monkeypatch):
    monkeypatch.setenv("OTEL_SERVICE_NAME", "bge-worker")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://user:tok@jaeger:4318")
    s = load(KAFKA_SECURITY_PROTOCOL="SASL_PLAINTEXT", KAFKA_SASL_MECHANISM="PLAIN",
             KAFKA_SASL_USERNAME="bge", KAFKA_SASL_PASSWORD="s3cret",
             DATABASE_URL="postgresql://bge:pg-pass@db:5432/bge?sslmode=require")
    summary = s.summary()
    assert set(VARIABLES) <= set(summary)
    assert all(isinstance(v, str) for v in summary.values())
    assert summary["KAFKA_SASL_PASSWORD"] == "***"
    assert summary["KAFKA_SASL_USERNAME"] == "bge"
    assert summary["DATABASE_URL"] == "postgresql://bge:***@db:5432/bge?sslmode=require"
    assert summary["OTEL_SERVICE_NAME"] == "bge-worker"
    assert summary["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://user:***@jaeger:4318"
    assert summary["JETSTREAM_COMPRESS"] == "true"
    assert "s3cret" not in str(summary) and "pg-pass" not in str(summary)


def test_otel_variables_are_left_out_of_the_summary_when_unset():
    assert "OTEL_SERVICE_NAME" not in load().summary()


def test_importing_config_has_no_side_effects(tmp_path):
    # A broken environment must not break the import: nothing is read until load_settings().
    (tmp_path / ".env").write_text("API_PORT=not-a-port\n")
    code = "import streams.config; print('imported')"
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True,
                            text=True, env={"API_PORT": "0", "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
                                            "PATH": "/usr/bin:/bin"}, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "imported"


def test_worker_agents_default_to_all_and_keep_the_pipeline_order():
    assert load().worker_agents == ["collect", "popularity", "project"]
    assert load(WORKER_AGENTS="project, collect,project").worker_agents == ["collect", "project"]


def test_a_worker_running_some_agents_is_a_consumer_group_of_its_own():
    from streams.app import app_id

    assert app_id(load()) == "bge"
    assert app_id(load(WORKER_AGENTS="project")) == "bge-project"
    assert app_id(load(WORKER_AGENTS="popularity,collect", BGE_TOPIC_PREFIX="prod.")) == "prod-bge-collect-popularity"
    assert app_id(load(WORKER_AGENTS="collect,popularity,project")) == "bge"


def test_the_original_engines_singular_collection_variable_is_the_collection_list(monkeypatch):
    monkeypatch.setenv("JETSTREAM_COLLECTION", "app.bsky.feed.post")
    assert load_settings(env_file=None).jetstream_collections == ["app.bsky.feed.post"]
    monkeypatch.setenv("JETSTREAM_COLLECTIONS", "app.bsky.feed.post")  # the same list twice: fine
    assert load_settings(env_file=None).jetstream_collections == ["app.bsky.feed.post"]


def test_singular_and_plural_collection_variables_that_differ_are_refused_naming_both(monkeypatch):
    monkeypatch.setenv("JETSTREAM_COLLECTION", "app.bsky.feed.post")
    monkeypatch.setenv("JETSTREAM_COLLECTIONS", "app.bsky.feed.like")
    with pytest.raises(ConfigError) as refused:
        load_settings(env_file=None)
    assert "JETSTREAM_COLLECTION and JETSTREAM_COLLECTIONS" in str(refused.value)


def test_an_invalid_singular_collection_is_refused_like_the_list(monkeypatch):
    monkeypatch.setenv("JETSTREAM_COLLECTION", "not an nsid")
    with pytest.raises(ConfigError, match="not an NSID"):
        load_settings(env_file=None)
