"""Health checks: a registry of named async checks, run concurrently, each under a timeout.

A check is ``async def check() -> CheckOutcome`` that does real I/O against its dependency.
:meth:`HealthRegistry.run` runs every registered check at once and returns a
:class:`HealthReport`. A check that raises or exceeds its timeout is UNHEALTHY with the reason
as message (credentials masked). The overall status is UNHEALTHY if any check is, else DEGRADED
if any check is, else HEALTHY; with no check registered it is UNHEALTHY (nothing is verified).
The concrete checks (Kafka, Postgres, Jetstream...) live with the code that owns those clients.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum

from pydantic import BaseModel, ConfigDict, Field

from streams.observability.log import ContextLogger, get_logger, mask_text

__all__ = ["Check", "CheckOutcome", "CheckResult", "HealthRegistry", "HealthReport",
           "HealthStatus", "overall_status"]


class HealthStatus(StrEnum):
    HEALTHY = "healthy"
    DEGRADED = "degraded"
    UNHEALTHY = "unhealthy"


@dataclass(frozen=True, slots=True)
class CheckOutcome:
    """What a check found: a status and a short human-readable message."""

    status: HealthStatus
    message: str = ""

    @classmethod
    def healthy(cls, message: str = "") -> CheckOutcome:
        return cls(HealthStatus.HEALTHY, message)

    @classmethod
    def degraded(cls, message: str) -> CheckOutcome:
        return cls(HealthStatus.DEGRADED, message)

    @classmethod
    def unhealthy(cls, message: str) -> CheckOutcome:
        return cls(HealthStatus.UNHEALTHY, message)


Check = Callable[[], Awaitable[CheckOutcome]]


class CheckResult(BaseModel):
    """The result of one check; ``timestamp`` is when it finished (UTC)."""

    model_config = ConfigDict(frozen=True)

    service: str
    status: HealthStatus
    message: str = ""
    response_time_ms: float = Field(ge=0)
    timestamp: datetime


class HealthReport(BaseModel):
    """All check results and the overall status; ``model_dump(mode="json")`` serialises it."""

    model_config = ConfigDict(frozen=True)

    status: HealthStatus
    timestamp: datetime
    checks: list[CheckResult]

    @property
    def http_status(self) -> int:
        """503 when unhealthy, else 200 (a degraded service still serves)."""
        return 503 if self.status is HealthStatus.UNHEALTHY else 200


def overall_status(statuses: Iterable[HealthStatus]) -> HealthStatus:
    """UNHEALTHY if any is (or if there are none), else DEGRADED if any is, else HEALTHY."""
    seen = set(statuses)
    if not seen or HealthStatus.UNHEALTHY in seen:
        return HealthStatus.UNHEALTHY
    if HealthStatus.DEGRADED in seen:
        return HealthStatus.DEGRADED
    return HealthStatus.HEALTHY


@dataclass(frozen=True, slots=True)
class _Registered:
    check: Check
    timeout: float


class HealthRegistry:
    """Named checks and how long each may take.

    ``clock`` (monotonic seconds) times the checks and ``now`` stamps the results; both are
    injectable for tests.
    """

    def __init__(
        self,
        *,
        default_timeout: float = 5.0,
        clock: Callable[[], float] = time.perf_counter,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        logger: ContextLogger | None = None,
    ) -> None:
        if default_timeout <= 0:
            raise ValueError(f"default_timeout must be > 0, got {default_timeout}")
        self.default_timeout = default_timeout
        self._clock = clock
        self._now = now
        self._log = logger or get_logger("health")
        self._checks: dict[str, _Registered] = {}

    @property
    def services(self) -> list[str]:
        """Registered service names, in registration order."""
        return list(self._checks)

    def register(self, service: str, check: Check, *, timeout: float | None = None) -> None:
        """Add a check under a unique name (``ValueError`` if taken or the timeout is not > 0)."""
        if service in self._checks:
            raise ValueError(f"a health check named {service!r} is already registered")
        timeout = self.default_timeout if timeout is None else timeout
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0, got {timeout}")
        self._checks[service] = _Registered(check, timeout)

    def unregister(self, service: str) -> None:
        """Remove a check; unknown names are ignored."""
        self._checks.pop(service, None)

    async def run_one(self, service: str) -> CheckResult:
        """Run one registered check (``KeyError`` if unknown). Never raises for the check's own
        failures: those become an UNHEALTHY result. Cancellation of the caller propagates."""
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
                f"timed out after {registered.timeout:g}s" if deadline.expired()
                else mask_text(f"{type(exc).__name__}: {exc}"))
        except Exception as exc:  # noqa: BLE001 - a failing check is a result, not a crash
            outcome = CheckOutcome.unhealthy(mask_text(f"{type(exc).__name__}: {exc}"))
        elapsed_ms = max(0.0, (self._clock() - start) * 1000.0)
        result = CheckResult(service=service, status=outcome.status, message=outcome.message,
                             response_time_ms=round(elapsed_ms, 3), timestamp=self._now())
        if result.status is not HealthStatus.HEALTHY:
            self._log.warning("health check not healthy", service=service,
                              status=result.status.value, reason=result.message,
                              response_time_ms=result.response_time_ms)
        return result

    async def run(self) -> HealthReport:
        """Run every check concurrently and aggregate; see the module docstring."""
        results = await asyncio.gather(*(self.run_one(name) for name in self._checks))
        return HealthReport(status=overall_status(r.status for r in results),
                            timestamp=self._now(), checks=list(results))
