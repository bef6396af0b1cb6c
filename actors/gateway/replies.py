"""The gateway's typed replies across the actor boundary (frozen records, pickled by Ray as they are).

A command (``submit``, one reply per proposed action; ``decide``; ``edit``) answers a :class:`Reply`: the
approval as it now is, or the refusal that says why nothing changed. The serving layer turns a reply into HTTP
JSON (:meth:`Reply.as_json` is the shape the gateway answered before replies were typed). Reads (``list``,
``get``, ``counts``, users, the audit entries) answer the JSON the REST API returns as it is.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator

from actors.gateway.approvals import Approval, Refusal


class Reply(BaseModel):
    """The answer to one command: exactly one of ``approval`` (as it now is) and ``refusal``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    approval: Approval | None = None
    refusal: Refusal | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> Reply:
        if (self.approval is None) == (self.refusal is None):
            raise ValueError("a reply carries either an approval or a refusal, not both and not neither")
        return self

    @classmethod
    def of(cls, outcome: Approval | Refusal) -> Reply:
        """The reply that carries ``outcome``."""
        return cls(refusal=outcome) if isinstance(outcome, Refusal) else cls(approval=outcome)

    @classmethod
    def refused(cls, code: str, message: str) -> Reply:
        """A refusal reply (``code``: one of ``Refusal.code``)."""
        return cls(refusal=Refusal(code=code, message=message))  # type: ignore[arg-type]

    def as_json(self) -> dict[str, Any]:
        """``{"approval": {...}}`` or ``{"refusal": {"code", "message"}}``, as JSON data."""
        if self.refusal is not None:
            return {"refusal": self.refusal.model_dump(mode="json")}
        return {"approval": self.approval.model_dump(mode="json")}  # type: ignore[union-attr]
