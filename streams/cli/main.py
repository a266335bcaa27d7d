"""The ``bge`` command line: one entry point for every process and tool of the product.

Workers also start the Faust way: ``faust -A streams.app worker -l info``.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable, Sequence

__all__ = ["main"]


def _settings():
    from streams.config import ConfigError, load_settings

    try:
        return load_settings()
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None


def _logging(settings) -> None:
    from streams.observability.log import configure_logging

    configure_logging("DEBUG" if settings.debug else settings.log_level)


def cmd_config(args: argparse.Namespace) -> int:
    """Print the validated configuration, secrets masked."""
    settings = _settings()
    width = max(len(k) for k in settings.summary())
    for key, value in settings.summary().items():
        print(f"{key:<{width}}  {value}")
    return 0


def cmd_topics(args: argparse.Namespace) -> int:
    """Create the product's topics that do not exist yet."""
    from streams.kafka.clients import ensure_topics

    settings = _settings()
    created = asyncio.run(ensure_topics(settings))
    print("created: " + (", ".join(created) if created else "nothing (all topics exist)"))
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Apply the projections' SQL migrations to DB_SCHEMA (idempotent)."""
    from projections import MigrationError, latest_version, migrate

    settings = _settings()
    try:
        applied = asyncio.run(migrate(settings.database_url, settings.db_schema))
    except MigrationError as exc:
        print(f"migrate: {exc}", file=sys.stderr)
        return 1
    done = ", ".join(str(v) for v in applied) if applied else "nothing (up to date)"
    print(f"schema {settings.db_schema} at version {latest_version()}; applied: {done}")
    return 0


def cmd_ingest(args: argparse.Namespace) -> int:
    """Jetstream → Kafka."""
    from streams.ingest.session import run_ingest

    from streams.observability.metrics import setup_metrics
    from streams.observability.tracing import setup_tracing

    settings = _settings()
    _logging(settings)
    setup_tracing("ingest")
    setup_metrics("ingest")
    return asyncio.run(run_ingest(settings))


def cmd_worker(args: argparse.Namespace) -> int:
    """Start a Faust worker (the same as ``faust -A streams.app worker``)."""
    faust = os.path.join(os.path.dirname(sys.executable), "faust")
    argv = [faust, "-A", "streams.app", "worker", "-l", args.loglevel, *args.rest]
    os.execv(faust, argv)
    return 1  # not reached


def _delegate(module: str, function: str = "main") -> Callable[[argparse.Namespace], int]:
    def run(args: argparse.Namespace) -> int:
        import importlib

        return int(getattr(importlib.import_module(module), function)(args.rest) or 0)

    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="bge", description="Bluesky Growth Engine")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, handler: Callable[[argparse.Namespace], int], help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(handler=handler)
        return p

    add("config", cmd_config, "print the validated configuration (secrets masked)")
    add("topics", cmd_topics, "create the product's Kafka topics")
    add("migrate", cmd_migrate, "apply the Postgres migrations (DB_SCHEMA)")
    add("ingest", cmd_ingest, "ingest Jetstream into the raw Kafka topic")
    w = add("worker", cmd_worker, "start a Faust worker (faust -A streams.app worker)")
    w.add_argument("-l", "--loglevel", default="info")
    w.add_argument("rest", nargs=argparse.REMAINDER)
    for name, module, function, help_ in (
        ("jetstream-serve", "streams.local.jetstream_server", "main", "serve a JSONL corpus over Jetstream's /subscribe wire"),
        ("corpus", "streams.local.corpus", "main", "generate a realistic Jetstream corpus (JSONL)"),
        ("projections", "streams.cli.rebuild", "main", "projection maintenance: `bge projections rebuild`"),
        ("demo", "streams.cli.demo", "main", "run the product on the bundled recording and show what it found"),
        ("replay", "streams.cli.replay", "main", "read a range of a topic back: show, filter, explain, diff, re-project"),
        ("dlq", "streams.cli.dlq", "main", "dead letters: list, show, redrive"),
        ("bench", "streams.bench.cli", "main", "benchmarks and a soak with faults on the local stack, next to baselines"),
        ("validate", "streams.cli.validate", "main", "check configuration, services, schema, topics and environment"),
        ("crawl", "streams.cli.crawl", "main", "start, follow and cancel crawls (snowball, search, interactions, profiles)"),
        ("actions", "streams.cli.crawl", "main_actions", "growth actions now: follow-back, like-mentions (dry run unless --apply)"),
    ):
        # no option prefix: every argument, "--help" included, goes to the delegate's own parser
        p = sub.add_parser(name, help=help_, description=help_, add_help=False, prefix_chars="\0")
        p.set_defaults(handler=_delegate(module, function))
        p.add_argument("rest", nargs=argparse.REMAINDER)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    sys.exit(main())
