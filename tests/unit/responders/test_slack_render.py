"""Slack's markup escaping, which lives with the Slack renderer: agent text must never ping or link in Slack."""

from __future__ import annotations

from responders.notifiers.slack.render import safe, slack_escape


def test_slack_escape_makes_mentions_and_links_inert() -> None:
    out = slack_escape("<!channel> <@U123> <https://evil|click> & more")
    assert "<" not in out and ">" not in out
    assert out == "&lt;!channel&gt; &lt;@U123&gt; &lt;https://evil|click&gt; &amp; more"


def test_safe_redacts_before_it_escapes() -> None:
    out = safe("<@U1> Authorization: Bearer sk-live-abcdefghijklmnopqrstuvwxyz0123")
    assert out.startswith("&lt;@U1&gt; ") and "sk-live-abcdefghijklmnopqrstuvwxyz0123" not in out
