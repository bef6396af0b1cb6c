"""Ticket actuators: ``open_ticket`` opens a Jira Service Management issue (setting ``tickets=jira``, through the
``jira`` package) or a ServiceNow incident (``tickets=servicenow``, through ``pysnc``), beside the base actuator
(``routing.py``). Both packages are the optional extra ``opsloop[tickets]``, imported only when chosen.

Idempotent across restarts, not only by action id within one process: a ticket carries ``opsloop:<approval id>``
(a Jira label; a ServiceNow incident's ``correlation_id``), and every execution searches for it before it creates
one, so a retry finds the ticket an earlier try opened. (Jira Cloud indexes a new issue for search within seconds;
a retry inside that window could open a second one.)

Transient failures (no answer, 408, 429, 5xx) are tried again with backoff (``http_retry.call_with_retries``, bounded by
the ``actuator_retry_*`` settings); any other answer is final and the action fails with the service's own words.
The clients are synchronous (requests): each try runs in a worker thread, and one execution is bounded by
:data:`~cluster.actuators.results.BUDGET_S`; a try still running then may yet open its ticket, which the next
execution finds by its tag.
Secrets (tokens, passwords) appear in no result, effect or log line: the clients' own exception texts, which can
carry request headers, are not used.
"""

from __future__ import annotations

import json
import threading
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import SecretStr

from actors.gateway.effects import Effect, new_value
from cluster.actuators.http_retry import CallFailed, RetryPolicy, ServiceActuator, answered, unreachable
from cluster.masking import redact_url
from policies.actions import Action, OpenTicket, describe

if TYPE_CHECKING:
    from cluster.settings import Settings

#: The action kinds a ticket system carries out (setting ``tickets``).
TICKET_KINDS = frozenset({"open_ticket"})
#: The mark of every ticket opsloop opens, followed by the approval id.
TAG = "opsloop:"
#: ServiceNow impact and urgency (1 high .. 3 low) of each severity; the instance derives the priority.
SNOW_IMPACT_URGENCY = {"critical": (1, 1), "high": (2, 1), "medium": (2, 2), "low": (3, 3)}
JIRA_SUMMARY_MAX = 255  # Jira refuses a longer summary
SNOW_SHORT_MAX = 160  # ServiceNow's short_description column


def tag(approval_id: str) -> str:
    """The mark of ``approval_id`` on a ticket: ``opsloop:<approval id>``."""
    return TAG + approval_id


def missing(package: str, extra: str, what: str) -> ValueError:
    """The error of an optional service client that is not installed."""
    return ValueError(f"{what} needs the {package} package: pip install 'opsloop[{extra}]'")


class _Tickets(ServiceActuator):
    """What both ticket actuators share: the refusal of other kinds, the retries, the result's words."""

    service = ""

    def __init__(self, url: str, timeout_s: float, retry: RetryPolicy | None, ca_file: str | Path | None) -> None:
        super().__init__()
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self.retry = retry or RetryPolicy()
        self.verify: str | bool = str(ca_file) if ca_file else True
        self.answers = f"{self.service} {redact_url(self.url)}"

    @property
    def host(self) -> str:
        return urllib.parse.urlsplit(self.url).netloc.rpartition("@")[2] or redact_url(self.url)

    def refusal(self, action: Action) -> str | None:
        """Why this actuator cannot carry ``action`` out (``None``: it can try)."""
        if action.kind not in TICKET_KINDS:
            return f"{action.kind} is not a ticket: the {self.service} actuator opens tickets only (open_ticket)"
        return None

    async def _apply(self, action: Action, action_id: str, approval_id: str, traceparent: str | None
                     ) -> tuple[bool, str]:
        """Open the ticket of ``action`` (idempotent by ``approval_id`` in the service too)."""
        assert isinstance(action, OpenTicket)  # refusal() let only these through
        return True, await self.in_thread(lambda: self._open(action, action_id, approval_id, traceparent))

    def _open(self, action: OpenTicket, action_id: str, approval_id: str, traceparent: str | None) -> str:
        raise NotImplementedError

    @staticmethod
    def description(action: OpenTicket, approval_id: str) -> str:
        """The ticket's body: the action, its severity and where it came from."""
        return (f"{action.summary}\n\nSeverity: {action.severity}\nOpened by opsloop for approval {approval_id} "
                f"({describe(action)}).")


class JiraTickets(_Tickets):
    """Opens Jira (Service Management) issues in one project, labelled ``opsloop`` and ``opsloop:<approval id>``.

    Args:
        url: The Jira site (``https://example.atlassian.net``, or a Data Center base URL).
        project: The project key issues open in.
        token: An API token (with ``user``: Jira Cloud's basic auth) or a personal access token (without: bearer).
        user: The account's e-mail (Jira Cloud) or user name; ``None``: ``token`` is a personal access token.
        issue_type: The issue type's name (``Task``; a service desk may use ``Incident``).
        timeout_s: The bound of one HTTP call.
        retry: Tries and backoff of transient failures.
        ca_file: A CA bundle to verify the site's certificate against (``None``: the system's).
    """

    service = "Jira"

    def __init__(self, url: str, project: str, token: SecretStr | str | None, user: str | None = None,
                 issue_type: str = "Task", timeout_s: float = 10.0, retry: RetryPolicy | None = None,
                 ca_file: str | Path | None = None) -> None:
        super().__init__(url, timeout_s, retry, ca_file)
        self.project, self.user, self.issue_type = project, user, issue_type
        self.token = SecretStr(token) if isinstance(token, str) else token
        self._client: Any = None
        self._lock = threading.Lock()

    @classmethod
    def from_settings(cls, settings: Settings) -> JiraTickets:
        """The ``jira_*`` settings.

        Raises:
            ValueError: ``jira_url`` or ``jira_project`` unset, or the ``jira`` package missing.
        """
        if not settings.jira_url or not settings.jira_project:
            raise ValueError("tickets jira needs jira_url and jira_project (OPSLOOP_JIRA_URL, OPSLOOP_JIRA_PROJECT)")
        try:
            import jira  # noqa: F401
        except ImportError:
            raise missing("jira", "tickets", "tickets jira") from None
        return cls(settings.jira_url, settings.jira_project, settings.jira_token, settings.jira_user,
                   settings.jira_issue_type, settings.service_timeout_s, RetryPolicy.from_settings(settings),
                   settings.service_ca_file)

    def _jira(self) -> Any:
        """The client, made on first use (it reads the site's serverInfo: Cloud and Data Center search differently);
        the jira package's own retries are off, ``http_retry.call_with_retries`` does them."""
        with self._lock:
            if self._client is None:
                from jira import JIRA

                secret = self.token.get_secret_value() if self.token else None
                auth: dict[str, Any] = {}
                if secret and self.user:
                    auth["basic_auth"] = (self.user, secret)
                elif secret:
                    auth["token_auth"] = secret
                self._client = JIRA(server=self.url, options={"verify": self.verify}, max_retries=0,
                                    timeout=self.timeout_s, **auth)
            return self._client

    def jql(self, approval_id: str) -> str:
        """The search for the issue ``approval_id`` opened."""
        return f'project = "{self.project}" AND labels = "{tag(approval_id)}"'

    def fields(self, action: OpenTicket, approval_id: str) -> dict[str, Any]:
        """The new issue's fields (names, not ids: no lookups before the create)."""
        return {"project": {"key": self.project}, "issuetype": {"name": self.issue_type},
                "summary": action.summary[:JIRA_SUMMARY_MAX], "description": self.description(action, approval_id),
                "labels": ["opsloop", tag(approval_id), f"opsloop-severity-{action.severity}"]}

    def _open(self, action: OpenTicket, action_id: str, approval_id: str, traceparent: str | None) -> str:
        from jira import JIRAError
        from requests import RequestException

        try:
            jira = self._jira()
            found = jira.search_issues(self.jql(approval_id), maxResults=1, fields="summary", json_result=True)
            issues = found.get("issues") or []
            if issues:
                key = issues[0]["key"]
                return f"{key} was opened by this approval already ({self.link(key)}): not opened again"
            issue = jira.create_issue(fields=self.fields(action, approval_id), prefetch=False)
        except JIRAError as exc:  # its str() carries the request's headers: built from its parts instead
            if exc.status_code is None:
                raise CallFailed(f"no usable answer: {exc.text or 'empty response'}") from None
            raise answered(exc.status_code, exc.text or "", getattr(exc.response, "headers", None)) from None
        except RequestException as exc:
            raise unreachable(exc) from None
        return f"opened {issue.key} in project {self.project} ({self.link(issue.key)}), labelled {tag(approval_id)}"

    def link(self, key: str) -> str:
        return f"{redact_url(self.url)}/browse/{key}"

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """The search and the create :meth:`execute` sends."""
        if not isinstance(action, OpenTicket):
            return Effect(call=f"nothing: {self.refusal(action)}", where=f"Jira at {self.host}", current="n/a",
                          new="unchanged")
        url = redact_url(self.url)
        search = urllib.parse.urlencode({"jql": self.jql(approval_id)})
        body = json.dumps({"fields": self.fields(action, approval_id)}, ensure_ascii=False)
        return Effect(call=f"GET {url}/rest/api/2/search?{search} (Jira Cloud: /rest/api/2/search/jql), then, when "
                           f"it finds no issue, POST {url}/rest/api/2/issue {body}",
                      where=f"Jira project {self.project} at {self.host}",
                      new=f"{new_value(action)} (a Jira {self.issue_type} in {self.project})")


class ServiceNowTickets(_Tickets):
    """Opens ServiceNow incidents (the Table API's ``incident`` table) with ``correlation_id`` ``opsloop:<approval
    id>``, impact and urgency from the severity.

    Args:
        url: The instance (``https://example.service-now.com``; ServiceNow and pysnc take https only).
        user: The integration user (basic auth).
        password: Its password.
        table: The table incidents go to.
        timeout_s: The bound of one HTTP call.
        retry: Tries and backoff of transient failures.
        ca_file: A CA bundle to verify the instance's certificate against (``None``: the system's).
    """

    service = "ServiceNow"

    def __init__(self, url: str, user: str, password: SecretStr | str | None, table: str = "incident",
                 timeout_s: float = 10.0, retry: RetryPolicy | None = None, ca_file: str | Path | None = None) -> None:
        if not url.startswith("https://"):
            raise ValueError("servicenow_url must be an https:// URL (ServiceNow and pysnc take https only)")
        super().__init__(url, timeout_s, retry, ca_file)
        self.user, self.table = user, table
        self.password = SecretStr(password) if isinstance(password, str) else password

    @classmethod
    def from_settings(cls, settings: Settings) -> ServiceNowTickets:
        """The ``servicenow_*`` settings.

        Raises:
            ValueError: ``servicenow_url`` or ``servicenow_user`` unset, or the ``pysnc`` package missing.
        """
        if not settings.servicenow_url or not settings.servicenow_user:
            raise ValueError("tickets servicenow needs servicenow_url and servicenow_user (OPSLOOP_SERVICENOW_URL, "
                             "OPSLOOP_SERVICENOW_USER)")
        try:
            import pysnc  # noqa: F401
        except ImportError:
            raise missing("pysnc", "tickets", "tickets servicenow") from None
        return cls(settings.servicenow_url, settings.servicenow_user, settings.servicenow_password,
                   timeout_s=settings.service_timeout_s, retry=RetryPolicy.from_settings(settings),
                   ca_file=settings.service_ca_file)

    def _client(self) -> Any:
        """A pysnc client over a session that bounds every call and turns a failed answer into :class:`CallFailed`
        (pysnc's own retries are off)."""
        import requests
        from pysnc import ServiceNowClient

        timeout_s, verify = self.timeout_s, self.verify

        class Session(requests.Session):
            def send(self, request: Any, **kw: Any) -> Any:  # type: ignore[override]
                kw["timeout"] = timeout_s
                if verify is not True:  # pysnc lets REQUESTS_CA_BUNDLE win over the session's CA bundle
                    kw["verify"] = verify
                try:
                    resp = super().send(request, **kw)
                except requests.RequestException as exc:
                    raise unreachable(exc) from None
                if resp.status_code >= 400:
                    raise answered(resp.status_code, resp.text, resp.headers)
                return resp

        session = Session()
        session.auth = (self.user, self.password.get_secret_value() if self.password else "")
        return ServiceNowClient(self.url, auth=session, verify=self.verify, auto_retry=False)

    def fields(self, action: OpenTicket, approval_id: str) -> dict[str, Any]:
        """The new incident's fields."""
        impact, urgency = SNOW_IMPACT_URGENCY[action.severity]
        return {"short_description": action.summary[:SNOW_SHORT_MAX], "description": self.description(action,
                approval_id), "correlation_id": tag(approval_id), "correlation_display": "opsloop",
                "impact": str(impact), "urgency": str(urgency)}

    def _open(self, action: OpenTicket, action_id: str, approval_id: str, traceparent: str | None) -> str:
        client = self._client()
        found = client.GlideRecord(self.table)
        found.add_query("correlation_id", tag(approval_id))
        found.fields = "sys_id,number"
        found.limit = 1
        found.query()
        if found.next():
            return (f"{found.get_value('number')} was opened by this approval already (correlation_id "
                    f"{tag(approval_id)}): not opened again")
        new = client.GlideRecord(self.table)
        new.initialize()
        for name, value in self.fields(action, approval_id).items():
            new.set_value(name, value)
        if not new.insert():
            raise CallFailed("answered without the new record's sys_id", 201)
        return f"opened {new.get_value('number')} in {self.table}, correlation_id {tag(approval_id)}"

    async def effect(self, action: Action, approval_id: str) -> Effect:
        """The query and the insert :meth:`execute` sends."""
        if not isinstance(action, OpenTicket):
            return Effect(call=f"nothing: {self.refusal(action)}", where=f"ServiceNow at {self.host}",
                          current="n/a", new="unchanged")
        url = f"{redact_url(self.url)}/api/now/table/{self.table}"
        query = urllib.parse.urlencode({"sysparm_query": f"correlation_id={tag(approval_id)}"})
        body = json.dumps(self.fields(action, approval_id), ensure_ascii=False)
        return Effect(call=f"GET {url}?{query}, then, when it finds no record, POST {url} {body}",
                      where=f"ServiceNow {self.table} table at {self.host}",
                      new=f"{new_value(action)} (a ServiceNow {self.table})")
