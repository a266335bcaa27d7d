"""What every bench needs: its own corner of the local stack, processes, RSS sampling, Kafka counters.

A :class:`Corner` is one bench's isolated piece of the stack: settings with the topic prefix
``bench<run>.<name>.``, a Postgres schema ``bench_<run>_<name>`` (migrated on demand), a scratch
folder, and the product's processes (``bge ingest``, ``bge worker``, ``bge jetstream-serve``) started
as real subprocesses with those settings in their environment. :meth:`Corner.cleanup` stops what
is still running and deletes the corner's topics (and the consumer groups' changelog topics) and
schema.

Nothing here sends traffic anywhere but the addresses in the settings, which the bench builds
for 127.0.0.1.

One module of about 600 lines: what every bench shares (corners, processes, RSS sampling, Kafka
counters); each part is small, and the benches import them together.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Self

import psutil
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import CoordinatorLoadInProgressError, GroupCoordinatorNotAvailableError

from streams.config import Settings, load_settings
from streams.ingest.frames import BadFrame, read_facts
from streams.kafka.clients import ensure_topics, new_producer, new_reader

__all__ = [
    "ROOT",
    "BackgroundLoop",
    "Corner",
    "Figure",
    "KafkaCounters",
    "Proc",
    "ProcessSampler",
    "batch_gc_policy",
    "corpus_file",
    "corpus_lines",
    "free_port",
    "percentile",
    "produce_raw",
    "raw_headers",
    "wait_for",
]

ROOT = Path(__file__).resolve().parents[2]
LOOPBACK = "127.0.0.1"


# --- figures ------------------------------------------------------------------------------


@dataclass
class Figure:
    """One measured number. ``role``: ``product`` or ``baseline``; ``baseline`` names the row
    (same bench) a product figure is compared with; ``target``/``met`` when the issue sets one."""

    bench: str
    label: str
    value: float | None
    unit: str
    role: str = "product"
    baseline: str | None = None
    target: str | None = None
    met: bool | None = None
    notes: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


def percentile(values: Sequence[float], p: float) -> float | None:
    """The ``p``-th percentile (0-100) by nearest rank; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, int(round(p / 100 * len(ordered) + 0.5)) - 1))
    return ordered[rank]


# --- small helpers ------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


async def wait_for(predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.2) -> Any:
    """Poll ``predicate`` (sync or async) until it returns a true value; raise TimeoutError."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() >= deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def corpus_lines(path: Path) -> list[bytes]:
    """The lines of a corpus file (:func:`corpus_file`), without empty ones."""
    return [line for line in path.read_bytes().split(b"\n") if line]


def corpus_file(folder: Path, n: int, *, seed: int, accounts: int, rate_per_s: float = 800.0,
                malformed: Sequence[bytes] = (), every: int = 0) -> Path:
    """A generated JSONL corpus (cached by its arguments in ``folder``). With ``malformed`` and
    ``every``, one malformed line is inserted after every ``every`` generated events, cycling
    through ``malformed`` (each a valid Jetstream envelope the domain rejects)."""
    from streams.local import corpus

    tag = f"{n}-{seed}-{accounts}-{int(rate_per_s)}-{len(malformed)}x{every}"
    path = folder / f"corpus-{tag}.jsonl"
    if path.exists():
        return path
    folder.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as out:
        bad = 0
        for index, line in enumerate(corpus.generate(n, seed=seed, accounts=accounts, rate_per_s=rate_per_s)):
            out.write(line + b"\n")
            if malformed and every and (index + 1) % every == 0:
                out.write(_malformed_at(malformed[bad % len(malformed)], line, bad) + b"\n")
                bad += 1
    tmp.rename(path)
    return path


_TIME_US = re.compile(rb'"time_us":(\d+)')


def _malformed_at(template: bytes, previous: bytes, index: int) -> bytes:
    """``template`` with the previous line's ``time_us`` (so the corpus stays in time order) and
    ``did``, and a distinct number in letters (so each one is its own source event)."""
    found = _TIME_US.search(previous)
    time_us = found.group(1) if found else b"0"
    did = previous[8 : previous.find(b'"', 8)] if previous.startswith(b'{"did":"') else b"did:plc:unknown"
    letters = "".join("abcdefghijklmnopqrstuvwxyz234567"[(index >> shift) & 31] for shift in (20, 15, 10, 5, 0))
    return template.replace(b"{TIME_US}", time_us).replace(b"{N}", letters.encode()).replace(b"{DID}", did)


def raw_headers(line: bytes) -> tuple[bytes, list[tuple[str, bytes]]]:
    """The key and headers the ingest gives a raw event (key = repo DID)."""
    try:
        facts = read_facts(line)
    except BadFrame:
        return b"did:plc:malformed", []
    headers = [("kind", facts.kind.encode()), ("time_us", str(facts.time_us).encode())]
    if facts.collection:
        headers += [("collection", facts.collection.encode()), ("operation", facts.operation.encode())]
    return facts.did.encode(), headers


async def produce_raw(settings: Settings, topic: str, lines: Iterable[bytes]) -> int:
    """Write raw events to ``topic`` as the ingest would (key and headers), as fast as aiokafka
    goes; returns how many."""
    producer = new_producer(settings)
    await producer.start()
    count = 0
    try:
        for line in lines:
            key, headers = raw_headers(line)
            await producer.send(topic, value=line, key=key, headers=headers)
            count += 1
        await producer.flush()
    finally:
        await producer.stop()
    return count


# --- Kafka counters -----------------------------------------------------------------------


class KafkaCounters:
    """End offsets of topics and committed offsets of groups, asked cheaply and often."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._reader: AIOKafkaConsumer | None = None
        self._admin: AIOKafkaAdminClient | None = None
        self._partitions: dict[str, list[TopicPartition]] = {}

    async def __aenter__(self) -> KafkaCounters:
        self._reader = new_reader(self.settings, client_id="bge-bench")
        await self._reader.start()
        self._admin = AIOKafkaAdminClient(**self.settings.kafka_client_options(), client_id="bge-bench")
        await self._admin.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        for client in (self._reader, self._admin):
            if client is not None:
                with contextlib.suppress(Exception):
                    await (client.stop() if isinstance(client, AIOKafkaConsumer) else client.close())
        self._reader = self._admin = None

    async def partitions(self, topic: str) -> list[TopicPartition]:
        tps = self._partitions.get(topic)
        if not tps:
            assert self._reader is not None
            cluster = await self._reader._client.fetch_all_metadata()  # noqa: SLF001 - creates nothing
            tps = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
            if tps:
                self._partitions[topic] = tps
        return tps

    async def end_offsets(self, topic: str) -> dict[int, int]:
        tps = await self.partitions(topic)
        if not tps:
            return {}
        assert self._reader is not None
        ends = await self._reader.end_offsets(tps)
        return {tp.partition: offset for tp, offset in ends.items()}

    async def end_total(self, topic: str) -> int:
        return sum((await self.end_offsets(topic)).values())

    async def committed_total(self, group: str, topic: str) -> int:
        """What ``group`` committed on ``topic``, summed; 0 while the group has no coordinator yet
        (a fresh broker creates ``__consumer_offsets`` when the first group asks for one)."""
        assert self._admin is not None
        try:
            offsets = await self._admin.list_consumer_group_offsets(group)
        except (GroupCoordinatorNotAvailableError, CoordinatorLoadInProgressError):
            return 0
        return sum(meta.offset for tp, meta in offsets.items() if tp.topic == topic and meta.offset > 0)


@contextlib.contextmanager
def batch_gc_policy() -> Iterator[None]:
    """The garbage-collection policy of the worker and ``bge replay`` (:func:`~streams.kafka.source.tune_gc`) inside, and
    Python's default again after it, also when the measured part fails: the benches that follow in
    the same run measure as they would alone."""
    from streams.kafka.source import tune_gc

    thresholds = gc.get_threshold()
    tune_gc()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.set_threshold(*thresholds)


async def read_topic(settings: Settings, topic: str, *, timeout: float = 120.0) -> list[Any]:
    """Every message of ``topic`` from the earliest offset to the current end."""
    reader = new_reader(settings, fetch_max_bytes=64 * 1024 * 1024, max_partition_fetch_bytes=8 * 1024 * 1024,
                        client_id="bge-bench")
    await reader.start()
    try:
        cluster = await reader._client.fetch_all_metadata()  # noqa: SLF001
        tps = [TopicPartition(topic, p) for p in sorted(cluster.partitions_for_topic(topic) or ())]
        if not tps:
            return []
        reader.assign(tps)
        ends = await reader.end_offsets(tps)
        await reader.seek_to_beginning(*tps)
        out: list[Any] = []
        deadline = time.monotonic() + timeout
        pending = {tp for tp in tps if ends[tp] > 0}
        while pending and time.monotonic() < deadline:
            for tp, messages in (await reader.getmany(*pending, timeout_ms=500, max_records=20_000)).items():
                out.extend(m for m in messages if m.offset < ends[tp])
            pending = {tp for tp in pending if await reader.position(tp) < ends[tp]}
        if pending:
            raise TimeoutError(f"could not read {topic} to its end in {timeout:.0f}s")
        return out
    finally:
        await reader.stop()


# --- processes ----------------------------------------------------------------------------


class Proc:
    """A product process (``python -m streams.cli.main ...`` or any argv), logging to a file."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path) -> None:
        self.name = name
        self.argv = argv
        self.env = env
        self.log = log
        self.popen: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self.kills = 0

    def start(self) -> Proc:
        self.log.parent.mkdir(parents=True, exist_ok=True)
        out = open(self.log, "ab")  # noqa: SIM115 - closed when the process is replaced
        out.write(f"\n--- start {self.starts + 1}: {' '.join(self.argv)}\n".encode())
        out.flush()
        self.popen = subprocess.Popen(self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT, cwd=ROOT,
                                      start_new_session=True)
        out.close()
        self.starts += 1
        return self

    @property
    def pid(self) -> int | None:
        return self.popen.pid if self.popen is not None else None

    @property
    def alive(self) -> bool:
        return self.popen is not None and self.popen.poll() is None

    @property
    def returncode(self) -> int | None:
        return None if self.popen is None else self.popen.poll()

    def signal(self, sig: int) -> None:
        if self.alive:
            assert self.popen is not None
            self.popen.send_signal(sig)

    def kill(self) -> None:
        """SIGKILL, and reap."""
        if self.alive:
            assert self.popen is not None
            self.popen.kill()
            self.kills += 1
        self.wait(30)

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; returns the exit code."""
        if self.popen is None:
            return None
        if self.alive:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                self.popen.kill()
        return self.wait(30)

    def wait(self, timeout: float) -> int | None:
        if self.popen is None:
            return None
        try:
            return self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            return None

    def tail(self, lines: int = 20) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


class BackgroundLoop:
    """A bench helper whose ``_run`` coroutine runs as a task from :meth:`start` until :meth:`stop`."""

    _task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        raise NotImplementedError

    def start(self) -> Self:
        self._task = asyncio.create_task(self._run())
        return self

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def minor_faults_of(pid: int) -> int | None:
    """The minor page faults process ``pid`` took so far (``/proc/<pid>/stat``; None elsewhere)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rpartition(")")[2].split()[7])  # minflt, the 10th field; the name may hold spaces


class ProcessSampler(BackgroundLoop):
    """Samples named processes every ``interval`` seconds: the peak resident set size of each
    name (over restarts), the CPU time its processes used (user and system, every pid the
    name had), the part of it in the kernel, and their minor page faults."""

    def __init__(self, interval: float = 0.25) -> None:
        self.interval = interval
        self.procs: dict[str, Callable[[], int | None]] = {}
        self.peak: dict[str, int] = {}
        self.samples: dict[str, int] = {}
        self.cpu: dict[str, dict[int, float]] = {}
        self.system: dict[str, dict[int, float]] = {}
        self.faults: dict[str, dict[int, int]] = {}

    def watch(self, name: str, pid: Callable[[], int | None]) -> None:
        self.procs[name] = pid

    def sample(self) -> None:
        for name, pid_of in self.procs.items():
            pid = pid_of()
            if pid is None:
                continue
            try:
                process = psutil.Process(pid)
                with process.oneshot():
                    rss = process.memory_info().rss
                    times = process.cpu_times()
            except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
                continue
            self.peak[name] = max(self.peak.get(name, 0), rss)
            self.samples[name] = self.samples.get(name, 0) + 1
            self.cpu.setdefault(name, {})[pid] = times.user + times.system
            self.system.setdefault(name, {})[pid] = times.system
            faults = minor_faults_of(pid)
            if faults is not None:
                self.faults.setdefault(name, {})[pid] = faults

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.interval)

    async def stop(self) -> None:
        await super().stop()
        self.sample()

    def peak_mb(self, name: str) -> float | None:
        return self.peak[name] / 2**20 if name in self.peak else None

    def cpu_s(self, name: str) -> float | None:
        """CPU seconds the processes of ``name`` used up to the last sample."""
        return sum(self.cpu[name].values()) if name in self.cpu else None

    def system_s(self, name: str) -> float | None:
        """The part of :meth:`cpu_s` spent in the kernel (page faults, system calls)."""
        return sum(self.system[name].values()) if name in self.system else None

    def minor_faults(self, name: str) -> int | None:
        """Minor page faults the processes of ``name`` took up to the last sample."""
        return sum(self.faults[name].values()) if name in self.faults else None


def process_cpu_s(pid: int | None) -> float:
    """CPU seconds (user and system) process ``pid`` used so far; 0 when it is gone."""
    if pid is None:
        return 0.0
    try:
        times = psutil.Process(pid).cpu_times()
    except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
        return 0.0
    return times.user + times.system


def service_cpu_s() -> dict[str, float]:
    """CPU seconds (user and system) used so far by the local stack's Postgres and Kafka
    processes, and by the whole machine (``all``, every core): take it before and after a
    measured part and subtract. A Postgres backend that exits in between is not counted."""
    used = {"postgres": 0.0, "kafka": 0.0}
    for process in psutil.process_iter(["name", "cmdline", "cpu_times"]):
        info = process.info
        times = info.get("cpu_times")
        if times is None:
            continue
        if info.get("name") == "postgres":
            used["postgres"] += times.user + times.system
        elif info.get("name") == "java" and any("kafka" in part for part in info.get("cmdline") or ()):
            used["kafka"] += times.user + times.system
    machine = psutil.cpu_times()
    used["all"] = (machine.user + machine.system + machine.nice
                   + getattr(machine, "irq", 0.0) + getattr(machine, "softirq", 0.0))
    return used


# --- a bench's corner of the stack --------------------------------------------------------


def tracing_env(mode: str) -> dict[str, str]:
    """Environment for the product processes' tracing: ``off`` (OTEL_SDK_DISABLED, the
    default: the pipeline's own cost), ``on`` (every span to Jaeger, the product's default),
    or a sampling ratio such as ``0.01`` (parent-based trace-id ratio)."""
    if mode == "off":
        return {"OTEL_SDK_DISABLED": "true"}
    if mode == "on":
        return {"OTEL_SDK_DISABLED": "false"}
    return {"OTEL_SDK_DISABLED": "false", "OTEL_TRACES_SAMPLER": "parentbased_traceidratio",
            "OTEL_TRACES_SAMPLER_ARG": str(float(mode))}


@dataclass
class Options:
    """What every bench shares (from the command line)."""

    run_id: str
    workdir: Path
    partitions: int = 4
    tracing: str = "off"
    split_workers: bool = False
    seed: int = 7
    keep: bool = False
    verbose: bool = False
    base_env: dict[str, str] = field(default_factory=lambda: dict(os.environ))

    def log(self, message: str) -> None:
        print(f"[bench {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


class Corner:
    """One bench's own topics, schema, folder and processes."""

    def __init__(self, options: Options, name: str, **overrides: Any) -> None:
        self.options = options
        self.name = name
        self.token = f"bench{options.run_id}"
        self.prefix = f"{self.token}.{name}."
        self.schema = f"bench_{options.run_id}_{name}".replace("-", "_").lower()
        self.folder = options.workdir / name
        (self.folder / "state").mkdir(parents=True, exist_ok=True)
        self.settings = load_settings(
            env_file=None,
            bge_topic_prefix=self.prefix,
            bge_topic_partitions=options.partitions,
            db_schema=self.schema,
            bge_state_dir=self.folder / "state",
            jetstream_endpoint=overrides.pop("jetstream_endpoint", ["ws://127.0.0.1:1"]),
            jetstream_collections=overrides.pop("jetstream_collections", ["app.bsky.*"]),
            **overrides,
        )
        self.procs: list[Proc] = []
        self._migrated = False

    # -- names --

    def topic(self, name: str) -> str:
        return self.settings.topic(name)

    @property
    def worker_group(self) -> str:
        """The worker's consumer group (``streams.app.app_id``, without importing the app
        module, which builds an app from the environment)."""
        prefix = re.sub(r"[^A-Za-z0-9_-]+", "-", self.settings.bge_topic_prefix).strip("-")
        return f"{prefix}-bge" if prefix else "bge"

    @property
    def collect_group(self) -> str:
        """The group that commits the raw topic: the worker's, or with ``--split-workers`` that of
        the process running collect and popularity (``app_id`` adds the roles of a worker that
        runs only some agents)."""
        return f"{self.worker_group}-collect-popularity" if self.options.split_workers else self.worker_group

    # -- environment and processes --

    def env(self, **extra: Any) -> dict[str, str]:
        """The environment of a product subprocess: this corner's settings, quiet logs, tracing
        as chosen; ``extra`` are settings field overrides (``api_port=...``) or raw variables."""
        settings = self.settings.model_copy(update={k: v for k, v in extra.items() if k.islower()})
        env = dict(self.options.base_env)
        for key, value in settings.summary().items():
            if key.startswith("OTEL_") or key == "KAFKA_SASL_PASSWORD" or value == "":
                continue
            env[key] = value
        env["DATABASE_URL"] = settings.database_url
        env.setdefault("LOG_LEVEL", "WARNING")
        env["LOG_LEVEL"] = "WARNING"
        env.update(tracing_env(self.options.tracing))
        env.update({k: str(v) for k, v in extra.items() if k.isupper()})
        env["PYTHONUNBUFFERED"] = "1"
        # the product code of this tree, also for `faust -A streams.app` (its script's folder is sys.path[0])
        env["PYTHONPATH"] = os.pathsep.join(filter(None, (str(ROOT), env.get("PYTHONPATH"))))
        return env

    def proc(self, name: str, args: list[str], **extra: Any) -> Proc:
        proc = Proc(name, [sys.executable, "-m", "streams.cli.main", *args], self.env(**extra), self.folder / f"{name}.log")
        self.procs.append(proc)
        return proc

    def ingest(self, endpoint: str, *, compress: bool = True, **extra: Any) -> Proc:
        return self.proc("ingest", ["ingest"], JETSTREAM_ENDPOINT=endpoint,
                         JETSTREAM_COMPRESS="true" if compress else "false", **extra)

    def worker(self, *, loglevel: str = "info", **extra: Any) -> Proc:
        """``bge worker`` (Faust's own log at ``loglevel``: ``info`` says when it is ready)."""
        extra.setdefault("api_port", free_port())
        return self.proc("worker", ["worker", "-l", loglevel], **extra)

    def workers(self) -> dict[str, Proc]:
        """The worker processes of a pipeline bench, by name: one ``worker``, or with
        ``--split-workers`` ``worker`` (collect and popularity) and ``worker-project``."""
        if not self.options.split_workers:
            return {"worker": self.worker()}
        project = self.proc("worker-project", ["worker", "-l", "info"], api_port=free_port(), worker_agents=["project"])
        return {"worker": self.worker(worker_agents=["collect", "popularity"]), "worker-project": project}

    def start_workers(self, sampler: ProcessSampler) -> dict[str, Proc]:
        """:meth:`workers`, each started and watched by ``sampler`` under its name."""
        workers = self.workers()
        for name, worker in workers.items():
            worker.start()
            sampler.watch(name, lambda worker=worker: worker.pid)
        return workers

    def server(self, corpus: Path, *, rate: float | None = None) -> JetstreamProc:
        port = free_port()
        argv = [sys.executable, "-m", "streams.local.jetstream_server", "--corpus", str(corpus), "--host", LOOPBACK,
                "--port", str(port)]
        if rate is not None:
            argv += ["--rate", str(rate)]
        proc = JetstreamProc("jetstream-server", argv, self.env(), self.folder / "jetstream-server.log", port)
        self.procs.append(proc)
        return proc

    # -- Kafka and Postgres --

    async def ensure_topics(self) -> None:
        await ensure_topics(self.settings)

    async def migrate(self) -> str:
        from projections import migrate

        if not self._migrated:
            await migrate(self.settings.database_url, self.schema)
            self._migrated = True
        return self.schema

    async def cleanup(self) -> None:
        for proc in self.procs:
            with contextlib.suppress(Exception):
                proc.stop(10)
        if self.options.keep:
            self.options.log(f"kept topics {self.prefix}* and schema {self.schema}")
            return
        await delete_topics(self.settings, self.token + "." + self.name, self.worker_group)
        await drop_schemas(self.settings.database_url, [self.schema, f"{self.schema}_ref"])


class JetstreamProc(Proc):
    """The local Jetstream server as a subprocess, with its HTTP controls."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log: Path, port: int) -> None:
        super().__init__(name, argv, env, log)
        self.port = port

    @property
    def url(self) -> str:
        return f"ws://{LOOPBACK}:{self.port}"

    def control(self, name: str, **params: Any) -> dict[str, Any]:
        query = "&".join(f"{k}={v}" for k, v in params.items())
        url = f"http://{LOOPBACK}:{self.port}/_control/{name}" + (f"?{query}" if query else "")
        with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - loopback only
            return json.loads(response.read())

    def stats(self) -> dict[str, Any]:
        return self.control("stats")

    async def ready(self, timeout: float = 60.0) -> JetstreamProc:
        def answers() -> bool:
            if not self.alive:
                raise RuntimeError(f"jetstream server exited: {self.tail()}")
            try:
                self.stats()
            except OSError:
                return False
            return True

        await wait_for(answers, timeout, "the local Jetstream server")
        return self


async def delete_topics(settings: Settings, *needles: str) -> list[str]:
    """Delete every topic whose name contains one of ``needles`` (the bench's unique run token)."""
    admin = AIOKafkaAdminClient(**settings.kafka_client_options(), client_id="bge-bench")
    await admin.start()
    try:
        doomed = [t for t in await admin.list_topics() if any(n and n in t for n in needles)]
        if doomed:
            with contextlib.suppress(Exception):
                await admin.delete_topics(doomed)
        return doomed
    finally:
        await admin.close()


async def drop_schemas(database_url: str, schemas: Iterable[str]) -> None:
    import psycopg
    from psycopg import sql

    async with await psycopg.AsyncConnection.connect(database_url, autocommit=True) as conn:
        for schema in schemas:
            await conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))


async def gather_cleanup(corners: Iterable[Corner]) -> None:
    for corner in corners:
        with contextlib.suppress(Exception):
            await corner.cleanup()


async def slope(read: Callable[[], Awaitable[int]], target: int, *, timeout: float, interval: float = 0.1,
                alive: Callable[[], bool] | None = None,
                cpu: Callable[[], dict[str, float]] | None = None) -> dict[str, Any]:
    """Throughput of a counter that climbs to ``target``: polls ``read`` and returns the rate
    between the first poll that saw progress and the poll that saw ``target`` (start-up
    excluded), with the times. With ``cpu`` (CPU seconds used so far, by name), also the CPU
    each name used over the same span per event counted, in µs (``cpu_us``). Raises
    TimeoutError when it does not get there."""
    deadline = time.monotonic() + timeout
    first: tuple[float, int] | None = None
    cpu_at_first: dict[str, float] = {}
    while True:
        now = time.monotonic()
        value = await read()
        if first is None and value > 0:
            first = (now, value)
            cpu_at_first = cpu() if cpu is not None else {}
        if value >= target and first is not None:
            elapsed = now - first[0]
            counted = value - first[1]
            if elapsed <= 0 or counted <= 0:  # everything arrived between two polls
                return {"rate": float("nan"), "seconds": elapsed, "counted": counted, "value": value, "cpu_us": {}}
            cpu_us = {name: (used - cpu_at_first[name]) / counted * 1e6
                      for name, used in (cpu() if cpu is not None else {}).items()}
            return {"rate": counted / elapsed, "seconds": elapsed, "counted": counted, "value": value,
                    "cpu_us": cpu_us}
        if alive is not None and not alive():
            raise RuntimeError(f"the measured process exited at {value}/{target}")
        if now >= deadline:
            raise TimeoutError(f"reached {value}/{target} in {timeout:.0f}s")
        await asyncio.sleep(interval)
