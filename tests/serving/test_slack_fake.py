"""A local fake of the Slack Web API (no tests here) and signed Slack requests, for the Slack bot tests.

The fake answers ``auth.test``, ``chat.postMessage``, ``chat.update``, ``chat.postEphemeral`` and
``views.open`` on 127.0.0.1 and records every call with its arguments.
"""

from __future__ import annotations

import hashlib
import hmac
import itertools
import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qsl, urlencode

SECRET = "8f742231b10e8888abcd99yyyzzz85a5"
BOT_TOKEN = "xoxb-test-token"


class FakeSlack:
    """The fake Web API in a thread; ``calls`` lists ``(method, args)`` in arrival order."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.auth_headers: set[str] = set()
        self._ts = itertools.count(1)
        self._lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - the http.server API
                raw = self.rfile.read(int(self.headers.get("content-length") or 0)).decode()
                if "json" in (self.headers.get("content-type") or ""):
                    args = json.loads(raw or "{}")
                else:
                    args = dict(parse_qsl(raw))
                method = self.path.rsplit("/", 1)[-1]
                body = fake.answer(method, args, self.headers.get("authorization", ""))
                data = json.dumps(body).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/api/"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def answer(self, method: str, args: dict[str, Any], auth: str) -> dict[str, Any]:
        with self._lock:
            self.calls.append((method, args))
            self.auth_headers.add(auth)
            if method == "auth.test":
                return {"ok": True, "url": "https://opsloop-test.slack.com/", "team": "opsloop", "user": "opsloop",
                        "team_id": "T0001", "user_id": "UBOT", "bot_id": "B0001", "is_enterprise_install": False}
            if method in ("chat.postMessage", "chat.update"):
                ts = args.get("ts") or f"1700000000.{next(self._ts):06d}"
                return {"ok": True, "channel": args.get("channel"), "ts": ts,
                        "message": {"text": args.get("text"), "ts": ts}}
            if method == "chat.postEphemeral":
                return {"ok": True, "message_ts": f"1700000001.{next(self._ts):06d}"}
            return {"ok": True}

    def of(self, method: str) -> list[dict[str, Any]]:
        with self._lock:
            return [a for m, a in self.calls if m == method]

    def __enter__(self) -> FakeSlack:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def sign(body: str | bytes, ts: int | None = None, secret: str = SECRET) -> dict[str, str]:
    """Headers of a request Slack signed (v0 HMAC-SHA256 of ``v0:{ts}:{body}``)."""
    stamp = str(int(time.time()) if ts is None else ts)
    raw = body if isinstance(body, bytes) else body.encode()
    sig = "v0=" + hmac.new(secret.encode(), f"v0:{stamp}:".encode() + raw, hashlib.sha256).hexdigest()
    return {"x-slack-request-timestamp": stamp, "x-slack-signature": sig,
            "content-type": "application/x-www-form-urlencoded"}


def blocks_of(args: dict[str, Any]) -> list[dict[str, Any]]:
    blocks = args.get("blocks") or []
    return json.loads(blocks) if isinstance(blocks, str) else blocks


def button_click(user: str, action_id: str, value: str, channel: str = "C0OPS", message_ts: str = "") -> str:
    """The form body of a Block Kit button click."""
    payload = {
        "type": "block_actions", "user": {"id": user, "username": user.lower(), "team_id": "T0001"},
        "api_app_id": "A0001", "token": "legacy", "trigger_id": f"trig-{user}-{time.time_ns()}",
        "team": {"id": "T0001", "domain": "opsloop-test"}, "channel": {"id": channel, "name": "ops"},
        "container": {"type": "message", "message_ts": message_ts, "channel_id": channel, "is_ephemeral": False},
        "message": {"type": "message", "ts": message_ts, "text": ""},
        "response_url": "http://127.0.0.1:9/response",
        "actions": [{"type": "button", "action_id": action_id, "block_id": "decide", "value": value,
                     "action_ts": str(time.time())}],
    }
    return urlencode({"payload": json.dumps(payload)})


def view_submission(user: str, private_metadata: str, reason: str) -> str:
    """The form body of the reject modal's submission."""
    payload = {
        "type": "view_submission", "team": {"id": "T0001", "domain": "opsloop-test"},
        "user": {"id": user, "username": user.lower(), "team_id": "T0001"}, "api_app_id": "A0001",
        "token": "legacy", "trigger_id": f"trig-{time.time_ns()}",
        "view": {"id": "V0001", "team_id": "T0001", "type": "modal", "callback_id": "opsloop_reject_reason",
                 "private_metadata": private_metadata, "hash": "h", "app_id": "A0001", "bot_id": "B0001",
                 "state": {"values": {"reason": {"reason": {"type": "plain_text_input", "value": reason}}}}},
    }
    return urlencode({"payload": json.dumps(payload)})


def slash(user: str, text: str) -> str:
    """The form body of ``/opsloop <text>``."""
    return urlencode({"token": "legacy", "team_id": "T0001", "team_domain": "opsloop-test", "channel_id": "C0OPS",
                      "channel_name": "ops", "user_id": user, "user_name": user.lower(), "command": "/opsloop",
                      "text": text, "api_app_id": "A0001", "response_url": "http://127.0.0.1:9/response",
                      "trigger_id": f"trig-{time.time_ns()}"})
