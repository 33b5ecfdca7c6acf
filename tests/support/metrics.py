"""Metric values read through prometheus_client's public registry, never a metric's private attributes."""

from __future__ import annotations

from prometheus_client import REGISTRY, Counter, Gauge


def metric_value(metric: Counter | Gauge, **labels: str) -> float:
    """One series' value as /metrics serves it (a counter's `_total`), from the default registry.

    With labels, the series is made first, as the code would make it (`labels()` refuses a wrong label name), so a
    series nothing has counted into yet reads 0 and a series the registry does not hold is an error, not a 0."""
    if labels:
        metric.labels(**labels)
    (family,) = metric.describe()
    name = f"{family.name}_total" if family.type == "counter" else family.name
    found = REGISTRY.get_sample_value(name, labels)
    if found is None:
        raise LookupError(f"{name}{labels} is not in the default registry")
    return found
