"""The Ray Serve ingress deployment: the REST API and the OpenAI-compatible chat (decorators applied in deploy.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from fastapi import APIRouter, FastAPI

from actors.remote import RemotePort
from serving.api import build_app
from serving.chat import ChatService, build_chat_router
from serving.dashboard import build_dashboard_router
from serving.llm import ChatSpec, make_chat_model
from serving.slack import RedisSlackStore, SlackConfig, build_slack_router


class Ingress:
    """Holds the layers' actor handles; Serve calls ``__serve_build_asgi_app__`` after ``__init__``.

    Args:
        gateway, twin, agent: actor handles of the loop.
        chat: which chat model to build (``llm=none`` when omitted).
        llm: the LLM deployment's handle (``chat.backend == "vllm"``).
        knowledge: a factory of the knowledge base the chat retrieves from (built here, in the replica).
    """

    def __init__(
        self, gateway: Any, twin: Any, agent: Any, chat: ChatSpec | None = None, llm: Any = None,
        knowledge: Callable[[], Any] | None = None, slack: SlackConfig | None = None,
        redis_url: str | None = None, namespace: str = "opsloop", http: dict[str, Any] | None = None,
    ) -> None:
        self.ports = (RemotePort(gateway), RemotePort(twin), RemotePort(agent))
        self.slack, self.redis_url, self.namespace = slack, redis_url, namespace
        self.http = http or {}  # limits and the traces folder (see serving.api.build_app)
        spec = chat or ChatSpec()
        self.chat = ChatService(
            make_chat_model(spec, llm), twin=self.ports[1], agent=self.ports[2],
            knowledge=knowledge() if knowledge is not None else None, default_max_tokens=spec.max_tokens,
            gateway=self.ports[0],
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        gateway, twin, agent = self.ports
        # (router, role it needs): chat answers from fleet data, so it needs a viewer's token like the API;
        # the dashboard's page is public and its data routes check tokens; Slack checks Slack's signatures.
        routers: list[tuple[APIRouter, str | None]] = [
            (build_chat_router(self.chat), "viewer"),
            (build_dashboard_router(gateway, twin, agent, knowledge=self.chat.knowledge), None),
        ]
        if self.slack is not None:
            store = RedisSlackStore(self.redis_url, self.namespace) if self.redis_url else None
            routers.append((build_slack_router(gateway, self.slack, store=store, twin=twin, agent=agent), None))
        # the chat's knowledge base answers GET /api/knowledge/search too (one index per replica, not two)
        return build_app(*self.ports, routers=routers, knowledge=self.chat.knowledge,
                         **self.http)  # with the security headers (serving.headers)
