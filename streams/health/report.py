"""Health checks: a registry of named async checks, run concurrently, each under a timeout.

One framework serves both users: the worker's ``/health`` (:func:`streams.health.checks.build_registry`)
and the startup validator ``bge validate`` (:mod:`streams.cli.validate`, which shows the same
statuses as pass/warning/fail/skipped).

A check is ``async def check() -> CheckOutcome`` that does real I/O against its dependency; its
outcome is a status, a short message and optionally ``details`` (one line per problem, when there
are several). :meth:`HealthRegistry.run` runs every registered check at once and returns a
:class:`HealthReport`, results in registration order. A check that raises or exceeds its timeout
is UNHEALTHY with the reason as message (credentials masked; the wording is the registry's
``explain``).

A check may *need* others registered before it (``register(..., needs=...)``): it starts once
they have finished and is SKIPPED, not run, when one of them is UNHEALTHY ("not checked: kafka
failed") or was itself skipped (the same message: the cause is passed on). A check may also
return :meth:`CheckOutcome.skipped` itself. Skipped results do not count towards the overall
status, which is UNHEALTHY if any check is, else DEGRADED if any check is, else HEALTHY; with no
check registered or run it is UNHEALTHY (nothing is verified).

``details`` are kept on :class:`CheckResult` for text output but are not serialised: the JSON of
a report (``/health``) has the same fields as before they existed.
The concrete checks (Kafka, Postgres, Jetstream...) live with the code that owns those clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from streams.observability.log import ContextLogger, get_logger, mask_text

__all__ = ["Check", "CheckOutcome", "CheckResult", "HealthRegistry", "HealthReport",
           "HealthStatus", "explain_failure", "overall_status"]


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"
    SKIPPED = "skipped"  # not run: a check it needs failed (or it said it could not run)


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """What a check found: a status, a short human-readable message and, when there are several
    problems, one line for each (``details``)."""

    status: HealthStatus
    message: str = ""
    details: tuple[str, ...] = ()

    @classmethod
    def healthy(cls, message: str = "") -> CheckOutcome:
        return cls(HealthStatus.HEALTHY, message)

    @classmethod
    def degraded(cls, message: str, details: Iterable[str] = ()) -> CheckOutcome:
        return cls(HealthStatus.DEGRADED, message, tuple(details))

    @classmethod
    def unhealthy(cls, message: str, details: Iterable[str] = ()) -> CheckOutcome:
        return cls(HealthStatus.UNHEALTHY, message, tuple(details))

    @classmethod
    def skipped(cls, message: str) -> CheckOutcome:
        """The check could not run (say why); it does not count towards the overall status."""
        return cls(HealthStatus.SKIPPED, message)


Check = Callable[[], Awaitable[CheckOutcome]]


class CheckResult(BaseModel):
    """The result of one check; ``timestamp`` is when it finished (UTC)."""

    model_config = ConfigDict(frozen=True)

    service: str
    status: HealthStatus
    message: str = ""
    response_time_ms: float = Field(ge=0, serialization_alias="responseTime")
    """Milliseconds; serialised as ``responseTime``, the original engine's name."""
    timestamp: datetime
    # for text output (``bge validate``) only: neither serialised nor in the JSON Schema
    details: tuple[str, ...] = Field(default=(), exclude=True)


class HealthReport(BaseModel):
    """All check results and the overall status. ``model_dump(mode="json", by_alias=True)`` gives
    the original engine's shape: ``overall``, ``services[]`` (``service``, ``status``,
    ``responseTime`` in milliseconds, ``timestamp``, and ``message``), ``timestamp``."""

    model_config = ConfigDict(frozen=True)

    status: HealthStatus = Field(serialization_alias="overall")
    timestamp: datetime
    checks: list[CheckResult] = Field(serialization_alias="services")

    @property
    def http_status(self) -> int:
        """503 when unhealthy, else 200 (a degraded service still serves)."""
        return 503 if self.status is HealthStatus.UNHEALTHY else 200


def overall_status(statuses: Iterable[HealthStatus]) -> HealthStatus:
    """UNHEALTHY if any is (or if none but SKIPPED are given), else DEGRADED if any is, else
    HEALTHY. SKIPPED counts for nothing."""
    seen = set(statuses) - {HealthStatus.SKIPPED}
    if not seen or HealthStatus.UNHEALTHY in seen:
        return HealthStatus.UNHEALTHY
    if HealthStatus.DEGRADED in seen:
        return HealthStatus.DEGRADED
    return HealthStatus.HEALTHY


def explain_failure(error: Exception, timed_out_after: float | None) -> str:
    """The message of a check that raised ``error``: its type and text, credentials masked;
    ``timed_out_after`` is the check's timeout when the registry's deadline expired, else None."""
    if timed_out_after is not None:
        return f"timed out after {timed_out_after:g}s"
    return mask_text(f"{type(error).__name__}: {error}")


Explain = Callable[[Exception, float | None], str]


@dataclass(frozen=True, slots=True)
class _Registered:
    check: Check
    timeout: float
    needs: tuple[str, ...]


class HealthRegistry:
    """Named checks, how long each may take and which others each needs.

    ``clock`` (monotonic seconds) times the checks and ``now`` stamps the results; both are
    injectable for tests. ``explain`` words the message of a check that raised or timed out
    (:func:`explain_failure` by default). Degraded and unhealthy results are logged as warnings
    unless ``quiet`` (a command that reports them itself).
    """

    def __init__(
        self,
        *,
        default_timeout: float = 5.0,
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        logger: ContextLogger | None = None,
        explain: Explain = explain_failure,
        quiet: bool = False,
    ) -> None:
        if default_timeout <= 0:
            raise ValueError(f"default_timeout must be > 0, got {default_timeout}")
        self.default_timeout = default_timeout
        self._clock = clock
        self._now = now
        self._log = logger or get_logger("health")
        self._explain = explain
        self._quiet = quiet
        self._checks: dict[str, _Registered] = {}

    @property
    def services(self) -> list[str]:
        """Registered service names, in registration order."""
        return list(self._checks)

    def register(self, service: str, check: Check, *, timeout: float | None = None,
                 needs: Sequence[str] = ()) -> None:
        """Add a check under a unique name. ``needs`` names checks registered before it, which
        :meth:`run` finishes first (see the module docstring). ``ValueError`` if the name is
        taken, the timeout is not > 0 or a needed check is not registered."""
        if service in self._checks:
            raise ValueError(f"a health check named {service!r} is already registered")
        timeout = self.default_timeout if timeout is None else timeout
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        unknown = [need for need in needs if need not in self._checks]
        if unknown:
            raise ValueError(f"{service!r} needs checks that are not registered: {', '.join(unknown)}")
        self._checks[service] = _Registered(check, timeout, tuple(needs))

    def unregister(self, service: str) -> None:
        """Remove a check, and it from the needs of the others; unknown names are ignored."""
        if self._checks.pop(service, None) is None:
            return
        for name, registered in self._checks.items():
            if service in registered.needs:
                self._checks[name] = _Registered(registered.check, registered.timeout,
                                                 tuple(n for n in registered.needs if n != service))

    async def run_one(self, service: str) -> CheckResult:
        """Run one registered check (``KeyError`` if unknown), whatever its needs found. Never
        raises for the check's own failures: those become an UNHEALTHY result. Cancellation of
        the caller propagates."""
        registered = self._checks[service]
        start = self._clock()
        deadline = asyncio.timeout(registered.timeout)
        try:
            async with deadline:
                outcome = await registered.check()
            if not isinstance(outcome, CheckOutcome):
                outcome = CheckOutcome.unhealthy(
                    f"check returned {type(outcome).__name__}, not a CheckOutcome")
        except TimeoutError as exc:
            outcome = CheckOutcome.unhealthy(
                self._explain(exc, registered.timeout if deadline.expired() else None))
        except Exception as exc:  # noqa: BLE001 - a failing check is a result, not a crash
            outcome = CheckOutcome.unhealthy(self._explain(exc, None))
        elapsed_ms = max(0.0, (self._clock() - start) * 1000.0)
        result = CheckResult(service=service, status=outcome.status, message=outcome.message,
                             details=outcome.details, response_time_ms=round(elapsed_ms, 3),
                             timestamp=self._now())
        if result.status in (HealthStatus.DEGRADED, HealthStatus.UNHEALTHY) and not self._quiet:
            self._log.warning("health check not healthy", service=service,
                              status=result.status.value, reason=result.message,
                              response_time_ms=result.response_time_ms)
        return result

    async def run(self) -> HealthReport:
        """Run every check concurrently (one that needs others once they have finished) and
        aggregate; see the module docstring."""
        started: dict[str, asyncio.Task[CheckResult]] = {}
        for name, registered in self._checks.items():  # a check's needs are registered before it
            needed = {need: started[need] for need in registered.needs}
            started[name] = asyncio.ensure_future(self._run_after(name, needed))
        results = await asyncio.gather(*started.values())
        return HealthReport(status=overall_status(r.status for r in results),
                            timestamp=self._now(), checks=list(results))

    async def _run_after(self, service: str, needed: dict[str, asyncio.Task[CheckResult]]) -> CheckResult:
        if needed:
            await asyncio.wait(needed.values())  # unlike awaiting them, never cancels them
            for need, task in needed.items():
                found = task.result()
                if found.status is HealthStatus.UNHEALTHY:
                    return self._skipped(service, f"not checked: {need} failed")
                if found.status is HealthStatus.SKIPPED:
                    return self._skipped(service, found.message)
        return await self.run_one(service)

    def _skipped(self, service: str, message: str) -> CheckResult:
        return CheckResult(service=service, status=HealthStatus.SKIPPED, message=message,
                           response_time_ms=0.0, timestamp=self._now())
