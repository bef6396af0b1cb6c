"""How secrets are shown: masked. ``SecretStr`` settings print as :data:`MASK` by themselves; a URL may carry
a password or a token (``redis://:pw@host``, ``?token=...``), so URLs are shown and logged through
:func:`redact_url`, and httpx's own request log lines get the same treatment."""

from __future__ import annotations

import logging
import re
import urllib.parse

#: How a secret is shown (as pydantic shows a ``SecretStr``).
MASK = "**********"
_SECRET_PARAM = re.compile(r"token|secret|passw|pwd|key|sig|auth|cred", re.IGNORECASE)


def redact_url(url: str) -> str:
    """``url`` fit to show or log: the password (or a lone user part, often a token) and the values of
    secret-looking query parameters (``token``, ``key``, ``sig`` ...) masked."""
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return MASK
    netloc = parts.netloc
    if "@" in netloc:
        userinfo, host = netloc.rsplit("@", 1)
        user, colon, _ = userinfo.partition(":")
        netloc = f"{user}:{MASK}@{host}" if colon else f"{MASK}@{host}"
    query = parts.query
    pairs = urllib.parse.parse_qsl(query, keep_blank_values=True)
    if any(_SECRET_PARAM.search(k) for k, _ in pairs):
        query = urllib.parse.urlencode([(k, MASK if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*")
    if netloc == parts.netloc and query == parts.query:
        return url  # nothing to mask (urlunsplit would also drop the empty authority of unix:///path)
    return urllib.parse.urlunsplit(parts._replace(netloc=netloc, query=query))


class _RedactUrlArgs(logging.Filter):
    """Masks URLs in a log record's arguments: httpx logs every request's full URL at INFO, and a URL setting
    (webhook_url, openai_base_url ...) may carry a password or a token."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and any("://" in str(a) for a in record.args):
            record.args = tuple(redact_url(str(a)) if "://" in str(a) else a for a in record.args)
        return True


logging.getLogger("httpx").addFilter(_RedactUrlArgs())  # the settings import this module: every opsloop process
