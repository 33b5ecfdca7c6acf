"""Slack's own metrics: the interactivity route's requests, which only the Slack notifier serves."""

from __future__ import annotations

from warden.telemetry.metrics import counter

SLACK_INTERACTIONS = counter(
    "warden_slack_interactions_total", "Slack interaction requests, by outcome (accepted, forged, stale, ...)",
    ("outcome",),
)
