"""One check for every http(s) URL a setting names, so the notifiers and the runtime refuse the same mistakes."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from yarl import URL


def http_url(value: str, example: str = "") -> URL:
    """`value` parsed as a `yarl.URL`; ValueError when it is not http(s) with a host, or holds credentials."""
    from yarl import URL  # lazy: every CLI command loads the settings

    try:
        url = URL(value)
    except (ValueError, TypeError):
        raise ValueError("not a URL") from None
    if url.scheme not in ("http", "https") or not url.host:
        raise ValueError("must be an http:// or https:// URL with a host" + (f", e.g. {example}" if example else ""))
    if url.user is not None or url.password is not None:
        raise ValueError("must not hold credentials (they would show in logs)")
    return url
