"""The incidents database, one room per job (incidents, timeline, outbox, claims, escalation, decisions, security)."""
