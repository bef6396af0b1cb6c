"""The webhook actuator: POSTs the approved action as JSON to a configured URL (a BMS, Slurm or Kubernetes
hook), with an ``Idempotency-Key`` header equal to the action id, so the receiver can drop a repeat."""

from __future__ import annotations

import httpx

from cluster.telemetry.samples import ActionResult
from policies.actions import Action, action_targets, describe

DEFAULT_TIMEOUT_S = 10.0


class WebhookActuator:
    """Idempotent by action id: a succeeded action id is never sent again by this process, and the receiver
    gets the same ``Idempotency-Key`` on every retry of a failed one."""

    def __init__(
        self, url: str, timeout_s: float = DEFAULT_TIMEOUT_S, transport: httpx.AsyncBaseTransport | None = None,
        token: str | None = None,
    ) -> None:
        self.url = url
        self.timeout_s = timeout_s
        self.transport = transport
        self.token = token
        self._done: dict[str, ActionResult] = {}

    async def execute(self, action: Action, action_id: str, approval_id: str, traceparent: str | None) -> ActionResult:
        """POST ``{"action_id", "approval_id", "action", "summary", "traceparent"}``; 2xx means executed."""
        if action_id in self._done:
            return self._done[action_id]
        body = {"action_id": action_id, "approval_id": approval_id, "action": action.model_dump(mode="json"),
                "summary": describe(action), "traceparent": traceparent}
        headers = {"Idempotency-Key": action_id}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        if traceparent:
            headers["traceparent"] = traceparent
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, transport=self.transport) as client:
                resp = await client.post(self.url, json=body, headers=headers)
            ok = 200 <= resp.status_code < 300
            detail = f"webhook {self.url} answered {resp.status_code}: {resp.text[:200]}".rstrip(": ")
        except httpx.HTTPError as exc:
            ok, detail = False, f"webhook {self.url} unreachable: {exc.__class__.__name__}: {exc}"
        result = ActionResult(
            ts=0.0, action_id=action_id, approval_id=approval_id, action_kind=action.kind,
            targets=tuple(action_targets(action)), status="executed" if ok else "failed", detail=detail,
            traceparent=traceparent,
        )
        if ok:
            self._done[action_id] = result
        return result
