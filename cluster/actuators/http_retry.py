"""Delivery of one HTTP actuator call with retries (tenacity): transient failures (connect errors, timeouts,
408, 429, 5xx) are tried again after an exponential backoff with jitter, honouring a ``Retry-After`` up to a
cap, within a bounded number of tries and a total time budget. Every try sends the same request, headers
included, so the receiver sees one ``Idempotency-Key`` however often it is asked. The outcome is data
(:class:`Delivery`), never an exception: the actuator turns it into an ``ActionResult``."""

from __future__ import annotations

import email.utils
import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import httpx
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_result,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential,
    wait_random,
)

from cluster.masking import redact_url

if TYPE_CHECKING:
    from cluster.settings import Settings

log = logging.getLogger("opsloop.actuators")

#: Statuses worth another try besides any 5xx: the receiver timed out reading, or asks us to slow down.
RETRYABLE_4XX = frozenset({408, 429})
#: A try's time never shrinks below this, so the last try within the budget can still connect.
MIN_TRY_S = 0.05


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


@dataclass(frozen=True)
class Try:
    """One try's outcome: ``status`` None means no answer (connect error, timeout)."""

    status: int | None
    detail: str
    retry_after_s: float | None = None

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300

    @property
    def transient(self) -> bool:
        return self.status is None or self.status >= 500 or self.status in RETRYABLE_4XX


@dataclass(frozen=True)
class Delivery:
    """The outcome of a call: its last try, how many tries were made and why the retries ended."""

    last: Try
    tries: int
    elapsed_s: float
    gave_up: str = ""  # why a transient failure was not tried again ("" when it succeeded or was permanent)

    @property
    def ok(self) -> bool:
        return self.last.ok


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


def _last(state: RetryCallState) -> Try:
    """The outcome of the try just made (tries return data; a bug's exception is re-raised here)."""
    assert state.outcome is not None
    return state.outcome.result()  # type: ignore[no-any-return]


class _Wait:
    """Exponential backoff with jitter, or the receiver's ``Retry-After`` when it asks for longer."""

    def __init__(self, policy: RetryPolicy) -> None:
        self.backoff = wait_exponential(multiplier=policy.initial_s, max=policy.max_s) + wait_random(
            0, policy.initial_s
        )
        self.max_s = policy.max_s

    def __call__(self, state: RetryCallState) -> float:
        last = _last(state)
        return min(max(self.backoff(state), last.retry_after_s or 0.0), self.max_s)


def _asks_too_long(max_s: float) -> Any:
    def stop(state: RetryCallState) -> bool:
        last = _last(state)
        return last.retry_after_s is not None and last.retry_after_s > max_s

    return stop


async def post_with_retries(
    url: str, body: dict[str, Any], headers: dict[str, str], timeout_s: float, policy: RetryPolicy,
    transport: httpx.AsyncBaseTransport | None = None,
) -> Delivery:
    """POST ``body`` as JSON to ``url`` until a 2xx, a permanent answer, or the policy's bounds.

    Args:
        url: where to POST (shown redacted in details and logs).
        body: the JSON body, the same on every try.
        headers: sent unchanged on every try (the ``Idempotency-Key`` among them); never logged.
        timeout_s: the bound of one try (shortened to what is left of ``policy.total_s``).
        policy: tries, backoff and the total time budget.
        transport: an httpx transport (tests); default: the network.
    """
    shown = redact_url(url)
    start = time.monotonic()

    async def attempt(client: httpx.AsyncClient) -> Try:
        left = policy.total_s - (time.monotonic() - start)
        try:
            resp = await client.post(url, json=body, headers=headers, timeout=max(MIN_TRY_S, min(timeout_s, left)))
        except httpx.HTTPError as exc:
            return Try(None, f"unreachable: {exc.__class__.__name__}: {exc}".rstrip(": "))
        text = resp.text[:200].strip()
        return Try(resp.status_code, f"answered {resp.status_code}" + (f": {text}" if text else ""),
                   retry_after_s(resp.headers.get("Retry-After")) if resp.status_code in (429, 503) else None)

    def before_sleep(state: RetryCallState) -> None:
        last = _last(state)
        log.warning("%s %s (try %d of %d); again in %.2f s", shown, last.detail, state.attempt_number,
                    policy.attempts, state.upcoming_sleep)

    retrying = AsyncRetrying(
        retry=retry_if_result(lambda t: t.transient),
        stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.total_s) | _asks_too_long(policy.max_s),
        wait=_Wait(policy),
        before_sleep=before_sleep,
        retry_error_callback=_last,  # out of tries or time: the last try is the outcome
    )
    tries = 0
    async with httpx.AsyncClient(transport=transport) as client:

        async def counted() -> Try:
            nonlocal tries
            tries += 1
            return await attempt(client)

        last: Try = await retrying(counted)
    elapsed = time.monotonic() - start
    gave_up = ""
    if last.transient:
        if last.retry_after_s is not None and last.retry_after_s > policy.max_s:
            gave_up = f"it asked to retry after {last.retry_after_s:.0f} s, more than the {policy.max_s:g} s cap"
        elif tries >= policy.attempts:
            gave_up = f"no success in {tries} {'try' if tries == 1 else 'tries'}"
        else:
            gave_up = f"the {policy.total_s:g} s budget would be spent before another try"
    return Delivery(last, tries, elapsed, gave_up)
