"""Warden's shared contract: events, findings, the ownership matrix, settings and the CLI."""

__version__ = "0.1.0"  # the one place: the package metadata, `warden --version` and the chart's appVersion read it
