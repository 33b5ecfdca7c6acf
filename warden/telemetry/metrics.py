"""Prometheus metrics, defined once so every stage counts into the same names."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS = Counter("warden_events_total", "Valid activity events ingested", ["kind"])
INVALID = Counter("warden_invalid_events_total", "Activity messages or batch elements dead-lettered", ["reason"])
PROCESSING_RETRIES = Counter("warden_processing_retries_total", "Retries after an exception while handling a message")
FINDINGS = Counter("warden_findings_total", "Findings produced", ["rule", "severity", "shadow"])
RESPONDED = Counter("warden_findings_responded_total", "Findings the responder stage has handled")
ALERTS = Counter("warden_alerts_total", "Alerts delivered to a responder channel", ["channel", "rule"])
DETECT_SECONDS = Histogram(
    "warden_detect_seconds", "Time to decode and run the detectors on one ingest batch",
    buckets=(0.0001, 0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0),
)
POLICY_INFO = Gauge("warden_policy_info", "The live policy (value 1) labelled by its sha256", ["sha256"])
POLICY_RELOAD_OK = Gauge("warden_policy_last_reload_success", "1 when the last policy reload succeeded, else 0")
RULE_EVAL_ERRORS = Counter("warden_rule_eval_errors_total", "Custom rule evaluations that raised (each rule is also "
                           "reported as a rule_error finding, once per hour of event time)", ["rule"])
INCIDENTS_OPENED = Counter("warden_incidents_opened_total", "Incidents opened, by the tier they opened at",
                           ["rule", "severity", "tier"])
FINDINGS_BY_TIER = Counter(
    "warden_findings_by_tier_total",
    "Findings the responder recorded (opened or grouped; not shadow, not duplicates), by their own tier: page, review, "
    "log", ["tier"],
)
TIER_RAISED = Counter("warden_incidents_tier_raised_total",
                      "Incidents raised to a higher tier by a finding that joined them (to: page or review)", ["to"])
REVIEW_DIGESTS = Counter("warden_review_digests_total", "Review digests made (one per responder and interval at most)")
REVIEW_DIGEST_INCIDENTS = Counter("warden_review_digest_incidents_total", "Review incidents carried by digests made")
FINDINGS_GROUPED = Counter(
    "warden_findings_grouped_total", "Findings that joined an open incident instead of opening one", ["rule"]
)
NOTIFICATIONS_DELIVERED = Counter(
    "warden_notifications_delivered_total", "Incident notifications delivered", ["notifier", "kind"]
)
NOTIFICATIONS_DEAD = Counter(
    "warden_notifications_dead_lettered_total", "Incident notifications given up on after retries", ["notifier", "kind"]
)
OUTBOX_CLAIMS_LOST = Counter(
    "warden_outbox_claims_lost_total",
    "Notifications this worker had claimed but another worker claimed after its lease ran out; nothing recorded "
    "(when: before_send, nothing sent; after_send, sent and possibly a duplicate; on_failure, no retry recorded)",
    ["notifier", "when"],
)
ESCALATIONS = Counter("warden_escalations_total", "Incidents escalated to the next step of their chain")
INTERACTION_REFUSALS = Counter(
    "warden_interaction_refusals_total",
    "Button clicks refused because the person who clicked is not the named owner on that notifier",
    ["action"],
)

REPLAYED = Counter("warden_replayed_messages_total",
                   "Activity messages read again after a rebalance and skipped: their events were already applied")
REBUILDS = Counter("warden_state_rebuilds_total", "Partitions whose detector state was rebuilt from the log",
                   ["outcome"])
REBUILD_EVENTS = Counter("warden_state_rebuild_events_total", "Events replayed into detector state from the log")
INGEST_COMMIT_FAILURES = Counter(
    "warden_ingest_commit_failures_total",
    "Ingest batch commits refused (a rebalance); the batch is read again by its next owner",
)
REBUILD_SECONDS = Histogram("warden_state_rebuild_seconds", "Time to rebuild one partition's detector state",
                            buckets=(0.01, 0.05, 0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0))

CONTAINMENT_ACTIONS = Counter(
    "warden_containment_actions_total",
    "Containment step outcomes by action (done, failed, retried, dry_run, denied; denied counts steps of a denial)",
    ["action", "outcome"],
)
CONTAINMENT_SECONDS = Histogram(
    "warden_containment_seconds", "From the event behind a finding to its containment step done",
    buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0),
)
INCIDENTS_OPEN = Gauge("warden_incidents_open", "Incidents open or acknowledged (not closed), by severity and tier",
                       ["severity", "tier"])
TIME_TO_NOTIFY = Histogram(
    "warden_time_to_notify_seconds", "From the event behind an incident to its root message delivered, per notifier",
    ["notifier"], buckets=(0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0),
)
NOTIFICATION_RETRIES = Counter("warden_notification_retries_total",
                               "Failed notification deliveries that will be tried again", ["notifier"])
DETECTION_SECONDS = Histogram(
    "warden_detection_seconds", "From an event's own time to the finding it raised (includes producer delay)",
    buckets=(0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0),
)
CONSUMER_LAG = Gauge("warden_consumer_lag", "Messages the worker group has not committed yet, per topic, from the "
                     "broker's high watermark", ["topic"])
API_REQUESTS = Counter("warden_api_requests_total", "Incident API requests by outcome (ok, unauthenticated, "
                       "forbidden, not_found, conflict, invalid)", ["outcome"])
QUARANTINED = Gauge("warden_quarantined_agents", "Agents quarantined on warden.control and not released")

PROVENANCE_VALUES = Gauge("warden_provenance_values", "Value fingerprints kept for provenance, over all sessions")
PROVENANCE_EVICTED = Counter(
    "warden_provenance_evicted_total", "Provenance fingerprints or sessions dropped: session_cap (a session past its "
    "own bound, oldest first), total_cap (the least recently active session past the total), ttl (idle)",
    ["reason"])


def total(counter: Counter) -> float:
    """A counter's sum over all its label sets (the demo and the benchmarks read deltas of these)."""
    return sum(s.value for m in counter.collect() for s in m.samples if s.name.endswith("_total"))
FLOW_SESSIONS_EVICTED = Counter(
    "warden_flow_sessions_evicted_total",
    "Sessions dropped from the flow rules' state (ttl: idle past the TTL in event time; cap: too many sessions)",
    ["reason"],
)
# issue 17: approval before action
APPROVAL_REQUESTS = Counter("warden_approval_requests_total", "Approval requests answered, by verdict and transport",
                            ["verdict", "transport"])
APPROVAL_DECISION_SECONDS = Histogram(
    "warden_approval_decision_seconds", "From an approval_required request to its decision (approved, denied, "
    "expired)", ["status"], buckets=(1, 5, 15, 30, 60, 120, 300, 600, 900, 1800, 3600, 7200))
APPROVAL_EXPIRIES = Counter("warden_approval_expiries_total", "Approval requests nobody on the chain answered in time")
APPROVAL_REFUSALS = Counter("warden_approval_refusals_total", "Approve/Deny clicks refused (not the named approver, "
                            "or already decided)", ["reason"])
APPROVAL_INVALID = Counter("warden_approval_invalid_requests_total", "Approval requests refused as malformed, by "
                           "transport", ["transport"])
OTLP_SPANS = Counter(
    "warden_otlp_spans_total",
    "OTLP spans read from the span topic (event: mapped to an event; unresolved: no agent found within the wait, an "
    "unowned_agent event; ignored: not a GenAI operation)",
    ["outcome"],
)
OTLP_LOG_RECORDS = Counter(
    "warden_otlp_log_records_total",
    "OTLP log records read from the log topic (event: a GenAI event mapped to events, its agent found; unresolved: "
    "none found within the wait; ignored: not a GenAI event Warden reads, or Warden's own verdicts)",
    ["outcome"],
)
OTLP_SPLIT_SPANS = Counter(
    "warden_otlp_split_trace_spans_total",
    "Spans whose trace this worker saw on more than one partition (the exporter's partition_traces_by_id is off)",
)
OTLP_HELD_SPANS = Gauge("warden_otlp_held_spans", "Spans waiting for an ancestor span that names their agent")
# issue 32: alert storms (grouping, the per-channel budget, silences, inhibition)
PAGES_CONTROLLED = Counter(
    "warden_pages_controlled_total",
    "Pages by what notification control decided: paged (led its group), grouped (carried by its group's digest), "
    "silenced, inhibited", ["outcome"])
CHANNEL_MESSAGES = Counter("warden_channel_messages_total", "Messages posted, per notifier and channel (Slack: "
                           "chat.postMessage, thread replies included)", ["notifier", "channel"])
NOTIFICATIONS_DEFERRED = Counter(
    "warden_notifications_deferred_total",
    "Due notifications a claim left for later because a channel's send budget had no message left for them",
    ["notifier"])
CHANNEL_RATE_LIMITED = Counter("warden_channel_rate_limited_total",
                               "Rate-limit answers (HTTP 429) a channel gave; its Retry-After holds for every worker",
                               ["notifier"])
DIGEST_MEMBERS_NAMED = Counter("warden_digest_members_named_total",
                               "Group members named in their group's digest (thread replies)", ["notifier"])
SILENCES_ACTIVE = Gauge("warden_silences_active", "Silences in effect now")


def counter(name: str, documentation: str, labels: tuple[str, ...] = ()) -> Counter:
    """A counter a notifier package defines for itself (its own metrics live in its package, not in this list)."""
    return Counter(name, documentation, list(labels))
