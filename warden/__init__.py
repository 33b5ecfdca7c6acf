"""Warden's shared contract: events, findings, the ownership matrix, settings and the CLI."""
