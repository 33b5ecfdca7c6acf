"""The tests' local Slack Web API: it ships with the demo as warden.cli.slack_api_server (see its docstring)."""

from warden.cli.slack_api_server import Fault, Message, Request, SlackApiServer

__all__ = ["Fault", "Message", "Request", "SlackApiServer"]
