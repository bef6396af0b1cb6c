"""Delivery of an actuator's call to a service with retries (tenacity), the one retry loop of the webhook, ticket and
paging actuators: transient failures (no answer, 408, 429, 5xx) are tried again after an exponential backoff with
jitter, honouring a ``Retry-After`` up to a cap (one beyond it ends the retries), within a bounded number of tries
and a total time budget. A failed try raises :class:`CallFailed` (built by :func:`answered` or :func:`unreachable`),
whose reason is free of secrets; the actuator turns the outcome into an ``ActionResult``. The caller sends the same
request on every try, headers included, so a receiver sees one ``Idempotency-Key`` however often it is asked."""

from __future__ import annotations

import asyncio
import email.utils
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)
from tenacity.stop import stop_base

from cluster.actuators.results import BoundedActuator
from cluster.masking import redact_url

if TYPE_CHECKING:
    from cluster.settings import Settings

log = logging.getLogger("opsloop.actuators")
T = TypeVar("T")

#: Statuses worth another try besides any 5xx: the receiver timed out reading, or asks us to slow down.
RETRYABLE_4XX = frozenset({408, 429})


@dataclass(frozen=True)
class RetryPolicy:
    """How hard one call is tried: ``attempts`` tries at most, waits growing from ``initial_s`` (doubling,
    plus jitter up to ``initial_s``) to at most ``max_s``, all within ``total_s`` seconds."""

    attempts: int = 5
    initial_s: float = 0.5
    max_s: float = 8.0
    total_s: float = 20.0

    @classmethod
    def from_settings(cls, settings: Settings) -> RetryPolicy:
        """The ``actuator_retry_*`` settings."""
        return cls(settings.actuator_retry_attempts, settings.actuator_retry_initial_s,
                   settings.actuator_retry_max_s, settings.actuator_retry_total_s)


def retry_after_s(value: str | None) -> float | None:
    """Seconds a ``Retry-After`` header asks for (delta-seconds or an HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class CallFailed(Exception):
    """A call to a service did not succeed: ``status`` (``None``: no answer) and a reason free of secrets."""

    def __init__(self, reason: str, status: int | None = None, retry_after: float | None = None) -> None:
        super().__init__(reason)
        self.reason, self.status, self.retry_after = reason, status, retry_after
        self.tries = 1
        self.gave_up = ""

    @property
    def transient(self) -> bool:
        """Worth another try: no answer, 408, 429 or a 5xx."""
        return self.status is None or self.status >= 500 or self.status in RETRYABLE_4XX

    def detail(self, who: str = "the service") -> str:
        """The reason, with how often it was tried when more than once or the retries ran out (else that ``who``
        refused it)."""
        if self.tries > 1 or self.gave_up:
            return f"{self.reason} (after {self.tries} tries" + (f"; {self.gave_up})" if self.gave_up else ")")
        return self.reason + ("" if self.transient else f" (not retried: {who} refused it)")


def said(status: int, text: str) -> str:
    """``answered <status>: <the body's first 200 characters, white space folded>``."""
    text = " ".join(text.split())[:200]
    return f"answered {status}" + (f": {text}" if text else "")


def answered(status: int, text: str, headers: Any = None) -> CallFailed:
    """The :class:`CallFailed` of an HTTP answer ``status`` with body ``text`` (its ``Retry-After`` read on a 429 or
    503)."""
    wait = retry_after_s(headers.get("Retry-After")) if headers is not None and status in (429, 503) else None
    return CallFailed(said(status, text), status, wait)


def unreachable(exc: BaseException) -> CallFailed:
    """The :class:`CallFailed` of a call that got no answer (the URLs in its text redacted)."""
    text = re.sub(r"\w+://\S+", lambda m: redact_url(m[0]), " ".join(str(exc).split()))[:300]
    return CallFailed(f"unreachable: {exc.__class__.__name__}" + (f": {text}" if text else ""))


def _failed(state: RetryCallState) -> CallFailed | None:
    """The failure of the try just made (None: another exception, a bug, which tenacity re-raises)."""
    exc = state.outcome.exception() if state.outcome else None
    return exc if isinstance(exc, CallFailed) else None


class _AsksTooLong(stop_base):
    """Stops when the service asks to be tried again later than ``max_s`` from now."""

    def __init__(self, max_s: float) -> None:
        self.max_s = max_s

    def __call__(self, retry_state: RetryCallState) -> bool:
        exc = _failed(retry_state)
        return exc is not None and exc.retry_after is not None and exc.retry_after > self.max_s


async def call_with_retries(attempt: Callable[[], Awaitable[T]], policy: RetryPolicy, what: str) -> tuple[T, int]:
    """Await ``attempt()`` until it returns (its value and how many tries it took), raises a permanent
    :class:`CallFailed`, or the policy's bounds end the retries: its tries, its time, or a ``Retry-After`` beyond
    ``policy.max_s`` (one up to it is waited for). ``what`` names the service in the log line of each retry.

    Raises:
        CallFailed: the last try's failure, with ``tries`` and, for a transient one, ``gave_up`` set.
    """
    tries = 0
    backoff = wait_exponential(multiplier=policy.initial_s, max=policy.max_s) + wait_random(0, policy.initial_s)

    def wait(state: RetryCallState) -> float:
        exc = _failed(state)
        return min(max(backoff(state), exc.retry_after if exc and exc.retry_after else 0.0), policy.max_s)

    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        log.warning("%s %s (try %d of %d); again in %.2f s", what, getattr(exc, "reason", exc),
                    state.attempt_number, policy.attempts, state.upcoming_sleep)

    retrying = AsyncRetrying(
        retry=retry_if_exception(lambda e: isinstance(e, CallFailed) and e.transient),
        stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.total_s) | _AsksTooLong(policy.max_s),
        wait=wait, before_sleep=before_sleep, reraise=True,
    )
    try:
        async for try_ in retrying:
            with try_:
                tries += 1
                return await attempt(), tries
    except CallFailed as exc:
        exc.tries = tries
        if exc.transient:
            if exc.retry_after is not None and exc.retry_after > policy.max_s:
                exc.gave_up = (f"it asked to retry after {exc.retry_after:.0f} s, more than the {policy.max_s:g} s "
                               "cap")
            elif tries >= policy.attempts:
                exc.gave_up = f"no success in {tries} {'try' if tries == 1 else 'tries'}"
            else:
                exc.gave_up = f"the {policy.total_s:g} s budget would be spent before another try"
        raise
    raise AssertionError("unreachable: tenacity returns or raises")  # pragma: no cover


class ServiceActuator(BoundedActuator):
    """An actuator of a service whose client blocks (the ticket systems, PagerDuty): each call runs in a worker thread
    under :attr:`retry`, and a :class:`CallFailed` is a failed result naming the service (:attr:`answers`) and how often
    it was tried."""

    failure = (CallFailed,)
    retry: RetryPolicy

    def failed(self, exc: Exception) -> str:
        return f"{self.answers} {exc.detail() if isinstance(exc, CallFailed) else exc}"

    async def in_thread(self, call: Callable[[], str]) -> str:
        """The words of blocking ``call``, tried under :attr:`retry`: ``<service>: <words>`` (with how many tries when
        more than one)."""
        words, tries = await call_with_retries(lambda: asyncio.to_thread(call), self.retry, self.answers)
        return f"{self.answers}: {words}" + (f" (after {tries} tries)" if tries > 1 else "")
