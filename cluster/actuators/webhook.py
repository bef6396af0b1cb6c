"""The webhook actuator: POSTs the approved action as JSON to a configured URL (a BMS, Slurm or Kubernetes
hook), with an ``Idempotency-Key`` header equal to the action id, so the receiver can drop a repeat.

Transient failures (connect errors, timeouts, 408, 429, 5xx) are retried with backoff (``http_retry``); the
action fails, with the reason, when the tries or the time budget run out or the receiver says no (4xx)."""

from __future__ import annotations

import json
import time
import urllib.parse

import httpx
from pydantic import SecretStr

from actors.gateway.effects import Effect, new_value
from cluster.actuators.http_retry import CallFailed, RetryPolicy, answered, call_with_retries, said, unreachable
from cluster.actuators.results import BoundedActuator
from cluster.masking import redact_url
from policies.actions import Action, describe

DEFAULT_TIMEOUT_S = 10.0
#: A try's time never shrinks below this, so the last try within the budget can still connect.
MIN_TRY_S = 0.05


class WebhookActuator(BoundedActuator):
    """Idempotent by action id: a succeeded action id is never sent again by this process, and the receiver
    gets the same ``Idempotency-Key`` on every try, within one call and across calls."""

    def __init__(
        self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S, transport: httpx.AsyncBaseTransport | None = None,
        token: SecretStr | str | None = None, retry: RetryPolicy | None = None,
    ) -> None:
        super().__init__()
        self.url = url
        self.timeout_s = timeout_s
        self.transport = transport
        self.token = SecretStr(token) if isinstance(token, str) else token
        self.retry = retry or RetryPolicy()
        self.answers = f"webhook {redact_url(url)}"

    async def _apply(self, action: Action, action_id: str, approval_id: str, traceparent: str | None
                     ) -> tuple[bool, str]:
        """POST ``{"action_id", "approval_id", "action", "summary", "traceparent"}``; 2xx means executed."""
        body = {"action_id": action_id, "approval_id": approval_id, "action": action.model_dump(mode="json"),
                "summary": describe(action), "traceparent": traceparent}
        headers = {"Idempotency-Key": action_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token.get_secret_value()}"
        if traceparent:
            headers["traceparent"] = traceparent
        start = time.monotonic()
        async with httpx.AsyncClient(transport=self.transport) as client:

            async def post() -> str:
                left = self.retry.total_s - (time.monotonic() - start)
                try:
                    resp = await client.post(self.url, json=body, headers=headers,
                                             timeout=max(MIN_TRY_S, min(self.timeout_s, left)))
                except httpx.HTTPError as exc:
                    raise unreachable(exc) from None
                if not 200 <= resp.status_code < 300:
                    raise answered(resp.status_code, resp.text, resp.headers)
                return said(resp.status_code, resp.text)

            try:
                detail, tries = await call_with_retries(post, self.retry, redact_url(self.url))
                ok, gave_up = True, ""
            except CallFailed as exc:
                ok, detail, tries, gave_up = False, exc.reason, exc.tries, exc.gave_up
        detail = f"{self.answers} {detail}"
        if tries > 1 or gave_up:
            elapsed = time.monotonic() - start
            detail += f" (after {tries} tries in {elapsed:.1f} s" + (f"; {gave_up})" if gave_up else ")")
        elif not ok:
            detail += " (not retried: the receiver refused it)"
        return ok, detail

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """The POST :meth:`execute` sends (its action id and trace context aside); the value now is the twin's."""
        body = {"approval_id": approval_id, "action": action.model_dump(mode="json"), "summary": describe(action)}
        url = redact_url(self.url)
        host = urllib.parse.urlsplit(url).netloc.rpartition("@")[2] or url
        return Effect(call=f"POST {url} {json.dumps(body, ensure_ascii=False)} (Idempotency-Key: its action id)",
                      where=f"the webhook receiver at {host}",
                      new=f"{new_value(action)}, if the receiver carries it out")
