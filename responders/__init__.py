"""Responders: turn findings into alerts and incidents for the named responder."""
