"""Approval before action (issue 17): records, the approver's Slack message, decisions, escalation and expiry."""
