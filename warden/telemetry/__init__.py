"""Prometheus metric definitions the stages count into: the one floor package that imports prometheus_client."""
