"""The containment actions a playbook step may name. Adding one: a module with its class, and a line here."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from pydantic import ValidationError

from playbooks.actions import notify, quarantine_agent, release, revocation_list, revoke_token, webhook
from playbooks.actions.base import Action
from warden.contract.matrix import Matrix

ACTIONS: dict[str, Action] = {a.name: a for a in (
    revoke_token.RevokeToken(),
    webhook.Webhook(),
    quarantine_agent.QuarantineAgent(),
    revocation_list.RevocationList(),
    notify.Notify(),
)}
# Not a playbook step: the ledger entry an approver's release request adds. Run by the engine, never bindable.
RELEASE = release.Release()
RUNNABLE: dict[str, Action] = {**ACTIONS, RELEASE.name: RELEASE}


def checker(action: Action) -> Callable[[Mapping[str, Any], Matrix], list[tuple[str, str]]]:
    """The lint's view of an action: its parameter model, then its own checks against the matrix."""

    def check(params: Mapping[str, Any], matrix: Matrix) -> list[tuple[str, str]]:
        try:
            model = action.Params.model_validate(dict(params))
        except ValidationError as exc:
            return [(".".join(str(p) for p in err["loc"]), err["msg"]) for err in exc.errors()]
        return action.check(model, matrix)

    return check
