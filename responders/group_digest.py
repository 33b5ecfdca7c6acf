"""A group's digest as notifiers render it (pure): the group's labels and counts, the agents and targets seen most
(top N, then "and K more"), how to list the group, and the member incidents this refresh names for the first time.

Every member is named once per notifier, in a thread reply under the digest message (`lines`): that reply is what
tells the responder each incident exists. The digest message itself is updated in place with the counts."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from warden.contract.findings import OwnerRef

LINES_PER_REPLY = 40  # members named in one thread reply; more are named by the next refresh (at once)


@dataclass(frozen=True)
class GroupLine:
    """One member incident as a digest names it (strings as recorded: redacted, not escaped)."""

    id: int
    agent_id: str
    target: str
    severity: str
    count: int


@dataclass(frozen=True)
class GroupView:
    """One refresh of a group's digest for one notifier."""

    id: int
    key: str
    epoch: int  # which announcement of the group this digest message is (1, then +1 per repeat interval)
    labels: dict[str, str]
    severity: str
    responder: OwnerRef
    leader_id: int
    leaders: int  # incidents of the group that paged (the first, and any of a higher severity)
    members: int  # incidents carried by the digest instead of paging
    findings: int  # findings of the members
    opened_at: datetime
    last_at: datetime
    agents: tuple[tuple[str, int], ...]
    agents_total: int
    targets: tuple[tuple[str, int], ...]
    targets_total: int
    lines: tuple[GroupLine, ...]  # members named for the first time by this refresh
    unnamed: int = 0  # members still to name after these (the next refresh names them)
    api_url: str | None = None  # the incident API's base URL, for a link; None: the path only

    @property
    def api_query(self) -> str:
        return f"GET /incidents?group={self.id}"

    @property
    def api_link(self) -> str | None:
        return None if not self.api_url else f"{self.api_url.rstrip('/')}/incidents?group={self.id}"

    @property
    def list_command(self) -> str:
        return f"warden incidents list --group {self.id}"

    @property
    def title(self) -> str:
        shown = ", ".join(f"{k}={v or '-'}" for k, v in self.labels.items())
        return f"group #{self.id} ({shown})" if shown else f"group #{self.id}"

    def more(self, shown: int, total: int) -> int:
        """How many distinct values a top list left out: the "and K more"."""
        return max(0, total - shown)
