"""Who acted on an incident, as the channel that carried the act knows them: notifier-neutral.

A person acts through a notifier (a Slack click, a Teams card, ...) or through Warden itself (the incident API's
bearer token, the CLI's break-glass database access). The core records the three parts, never a notifier's own
string format; each notifier package maps its inbound payloads to an `Actor`."""

from __future__ import annotations

from dataclasses import dataclass

API = "api"  # user: the fingerprint of the incident API's bearer token (the first 12 hex digits of its sha256)
BREAK_GLASS = "break-glass"  # user: the unix user of `warden incident --database-url` (direct database access)
# Channels Warden authenticated itself (not a notifier's user id): the owner id they name was checked as they ran.
WARDEN_AUTHENTICATED = frozenset({API, BREAK_GLASS})
# Identities stored bare (the user id alone) before the actor had parts: the trail's hash chain was computed over
# that text, so `identity` keeps it for this notifier.
BARE = frozenset({"slack"})


@dataclass(frozen=True)
class Actor:
    """`notifier`: the channel the act came through (slack, api, break-glass, ...); `user`: the id within it (what
    a matrix names in an owner's `contacts`/`members` for that notifier); `address`: where it came from (a channel,
    a workspace), empty when the channel has no such notion."""

    notifier: str
    user: str
    address: str = ""

    @property
    def warden_authenticated(self) -> bool:
        return self.notifier in WARDEN_AUTHENTICATED

    @property
    def identity(self) -> str:
        """The one-string form shown in the trail and the API (`identity`) and hashed into the audit chain: the
        user id bare for a notifier in BARE, else `notifier:user`."""
        return self.user if self.notifier in BARE else f"{self.notifier}:{self.user}"

    @classmethod
    def of(cls, identity: str, address: str = "") -> Actor:
        """The actor a `notifier:user` string names (the API's and the CLI's `api:<fingerprint>`,
        `break-glass:<user>`). A string without a prefix is a ValueError: no notifier is assumed."""
        notifier, sep, user = identity.partition(":")
        if not sep or not notifier or not user:
            raise ValueError(f"an identity is notifier:user, not {identity!r}")
        return cls(notifier, user, address)
