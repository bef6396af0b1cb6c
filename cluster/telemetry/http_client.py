"""The HTTP client lifecycle the scraping sources share: one ``httpx.AsyncClient``, made lazily where it is used.

A source is built in the driver and pickled into the twin's coordinator actor (Ray ships it); an open client
(its connections, its event loop) cannot travel, so a pickled source leaves it behind and the first read where
the source runs opens a new one. ``aclose`` closes it; the next read would open another.
"""

from __future__ import annotations

import httpx


class HttpClientOwner:
    """Mixin for a source that keeps its ``httpx.AsyncClient`` in ``_client`` (None until its first read)."""

    _client: httpx.AsyncClient | None = None

    def __getstate__(self) -> dict:
        """Picklable into an actor: the HTTP client (open connections) is made again where it runs."""
        return {**self.__dict__, "_client": None}

    async def aclose(self) -> None:
        """Close the client, if one is open."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None
