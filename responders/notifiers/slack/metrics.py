"""Slack's own metrics: the interactivity route's requests, which only the Slack notifier serves."""

from __future__ import annotations

from prometheus_client import Counter

SLACK_INTERACTIONS = Counter(
    "warden_slack_interactions_total", "Slack interaction requests, by outcome (accepted, forged, stale, ...)",
    ["outcome"],
)
