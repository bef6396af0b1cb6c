"""What the Slack approval bot is given: its settings (:class:`SlackConfig`); the gateway port it talks to is
``serving.ports.Gateway``.

Shared by the bot's parts (``serving.slack`` the endpoint, ``serving.slack_app`` the Bolt handlers,
``serving.slack_notifier`` the poster); the composition root builds the config from the settings (``slack_*``).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, SecretStr

#: How often the notifier polls the gateway for new and changed approvals (seconds).
POLL_EVERY_S = 1.0
#: Named limit on one call to the gateway, twin or agent port (seconds; a decision gets four times this).
PORT_TIMEOUT_S = 10.0


class SlackConfig(BaseModel):
    """What the bot needs; built by the composition root from the settings (``slack_*``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    bot_token: SecretStr
    signing_secret: SecretStr
    channel: str = Field(min_length=1)
    api_url: str = "https://slack.com/api/"
    users: dict[str, str] = Field(default_factory=dict, description="Slack user id -> opsloop user name.")
    poll_s: float = Field(POLL_EVERY_S, gt=0)

