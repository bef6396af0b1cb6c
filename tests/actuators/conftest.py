"""Fixtures of the actuator tests: a webhook receiver on 127.0.0.1 (``webhook_receiver.py``)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.actuators.webhook_receiver import WebhookReceiver


@pytest.fixture
def receiver() -> Iterator[WebhookReceiver]:
    """A webhook receiver for one test, shut down after it."""
    with WebhookReceiver() as r:
        yield r
