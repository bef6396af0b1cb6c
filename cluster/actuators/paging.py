"""The paging actuator: ``notify`` triggers a PagerDuty alert through the Events API v2 (setting ``paging=pagerduty``,
the ``pagerduty`` package, the optional extra ``opsloop[paging]``, imported only when chosen), beside the base
actuator (``routing.py``).

Idempotent by PagerDuty's own deduplication: the event's ``dedup_key`` is the action id, so a retry (within one call,
across calls or after a restart) joins the alert the first try opened instead of paging anyone twice. Transient
failures (no answer, 408, 429, 5xx) are tried again with backoff (``http_retry.call_with_retries``, the
``actuator_retry_*`` settings) in place of the client's own retries, which can wait minutes; any other answer is
final. The routing key travels in the event's body: it appears in no result, effect or log line.
"""

from __future__ import annotations

import json
import ssl
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from actors.gateway.effects import Effect, new_value
from cluster.actuators.http_retry import CallFailed, RetryPolicy, ServiceActuator, answered, unreachable
from cluster.actuators.tickets import missing
from cluster.masking import MASK, redact_url
from policies.actions import Action, Notify

if TYPE_CHECKING:
    from cluster.settings import Settings

#: The action kinds a paging service carries out (setting ``paging``).
PAGING_KINDS = frozenset({"notify"})
#: PagerDuty's Events API (US service region; EU: https://events.eu.pagerduty.com).
EVENTS_URL = "https://events.pagerduty.com"
SUMMARY_MAX = 1024  # the Events API truncates a longer summary


class PagerDutyPaging(ServiceActuator):
    """Triggers one PagerDuty alert per ``notify``, ``dedup_key`` = the action id.

    Args:
        routing_key: The integration key of the PagerDuty service (Events API v2).
        events_url: The Events API's base URL (https only: the pagerduty client refuses anything else).
        source: The event's ``payload.source``.
        severity: The event's ``payload.severity`` (critical, error, warning or info).
        timeout_s: The bound of one HTTP call.
        retry: Tries and backoff of transient failures.
        ca_file: A CA bundle to verify the service's certificate against (``None``: the system's).
    """

    def __init__(self, routing_key: SecretStr | str, events_url: str = EVENTS_URL, source: str = "opsloop",
                 severity: str = "warning", timeout_s: float = 10.0, retry: RetryPolicy | None = None,
                 ca_file: str | Path | None = None) -> None:
        super().__init__()
        if not events_url.startswith("https://"):
            raise ValueError("pagerduty_events_url must be an https:// URL (the pagerduty client takes https only)")
        self.routing_key = SecretStr(routing_key) if isinstance(routing_key, str) else routing_key
        self.events_url = events_url.rstrip("/")
        self.source, self.severity, self.timeout_s = source, severity, timeout_s
        self.retry = retry or RetryPolicy()
        self.ca_file = str(ca_file) if ca_file else None
        self.answers = f"PagerDuty {redact_url(self.events_url)}"

    @classmethod
    def from_settings(cls, settings: Settings) -> PagerDutyPaging:
        """The ``pagerduty_*`` settings.

        Raises:
            ValueError: ``pagerduty_routing_key`` unset, or the ``pagerduty`` package missing.
        """
        if settings.pagerduty_routing_key is None:
            raise ValueError("paging pagerduty needs pagerduty_routing_key (OPSLOOP_PAGERDUTY_ROUTING_KEY)")
        try:
            import pagerduty  # noqa: F401
        except ImportError:
            raise missing("pagerduty", "paging", "paging pagerduty") from None
        return cls(settings.pagerduty_routing_key, settings.pagerduty_events_url,
                   timeout_s=settings.service_timeout_s, retry=RetryPolicy.from_settings(settings),
                   ca_file=settings.service_ca_file)

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.events_url).netloc.rpartition("@")[2] or redact_url(self.events_url)

    def refusal(self, action: Action) -> str | None:
        """Why this actuator cannot carry ``action`` out (``None``: it can try)."""
        if action.kind not in PAGING_KINDS:
            return f"{action.kind} is not a page: the PagerDuty actuator sends notify only"
        return None

    def event(self, action: Notify, dedup_key: str, approval_id: str, traceparent: str | None) -> dict[str, Any]:
        """The ``trigger`` arguments (the client adds ``event_action`` and the routing key)."""
        details = {"approval_id": approval_id, "action_id": dedup_key}
        if traceparent:
            details["traceparent"] = traceparent
        return {"summary": action.message[:SUMMARY_MAX], "source": self.source, "severity": self.severity,
                "dedup_key": dedup_key, "custom_details": details}

    def _trigger(self, event: dict[str, Any]) -> str:
        from pagerduty import Error as PagerDutyError
        from pagerduty import EventsApiV2Client

        def refuse(resp: Any) -> None:  # every failed answer is ours to retry or not: the client would loop on 429
            if not resp.is_success:
                resp.read()
                raise answered(resp.status_code, resp.text, resp.headers)

        verify: ssl.SSLContext | bool = ssl.create_default_context(cafile=self.ca_file) if self.ca_file else True
        try:
            with EventsApiV2Client(self.routing_key.get_secret_value(), base_url=self.events_url, verify=verify,
                                   event_hooks={"response": [refuse]}) as client:
                client.timeout = self.timeout_s  # type: ignore[assignment]  # the class says int; httpx takes float
                client.retry = {}
                client.max_network_attempts = 0
                key: str = client.trigger(**event)
                return key
        except PagerDutyError as exc:
            if exc.response is None:  # no answer: its message names the URL, the cause says why
                raise unreachable(exc.__cause__ or exc) from None
            raise CallFailed(f"answered {exc.response.status_code} without a dedup_key") from None

    async def _apply(self, action: Action, action_id: str, approval_id: str, traceparent: str | None
                     ) -> tuple[bool, str]:
        """Trigger the alert of ``action`` (idempotent in PagerDuty too: its dedup key is ``action_id``)."""
        assert isinstance(action, Notify)  # refusal() let only these through
        event = self.event(action, action_id, approval_id, traceparent)
        return True, await self.in_thread(
            lambda: f"alert triggered, dedup_key {self._trigger(event)} (a repeat joins the same alert)")

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """The POST :meth:`execute` sends (its action id aside), the routing key masked."""
        if not isinstance(action, Notify):
            return Effect(call=f"nothing: {self.refusal(action)}", where=f"PagerDuty at {self.host}", current="n/a",
                          new="unchanged")
        event = self.event(action, "<its action id>", approval_id, None)
        body = {"routing_key": MASK, "event_action": "trigger", "dedup_key": event.pop("dedup_key"),
                "payload": {k: event[k] for k in ("summary", "source", "severity", "custom_details")}}
        return Effect(call=f"POST {redact_url(self.events_url)}/v2/enqueue {json.dumps(body, ensure_ascii=False)}",
                      where=f"PagerDuty Events API v2 at {self.host}",
                      new=f"{new_value(action)} (a PagerDuty {self.severity} alert, paging the service's on-call)")
