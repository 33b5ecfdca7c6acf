"""Slack's settings fragment: the WARDEN_SLACK_* variables, composed into the runtime's Settings by the registry."""

from __future__ import annotations

from pydantic import BaseModel, Field, SecretStr


class SlackSettings(BaseModel):
    """Delivery through the Web API, the per-channel posting budget, and the signing secret of button clicks."""

    slack_token: SecretStr | None = Field(None, description="Bot token of the Slack app (xoxb-…); set, Slack is the "
                                          "default notifier.")
    slack_api_url: str | None = Field(None, description="Slack Web API base URL (tests, proxies).")
    slack_signing_secret: SecretStr | None = Field(None, description="Signing secret of the Slack app: set, the "
                                                   "worker serves /slack/interactions (the buttons).")
    slack_timeout_s: float = Field(10.0, gt=0, description="Timeout of one Slack Web API call.")
    slack_channel_rate: float = Field(1.0, gt=0, description="Messages per second Warden posts to one Slack channel, "
                                      "all workers together (Slack allows about 1).")
    slack_channel_burst: int = Field(3, ge=1, description="Most messages Warden posts to one Slack channel in any "
                                     "one second, all workers together.")
