"""The playbook ids a policy may bind findings to, so `warden policy lint` can reject an unknown one.

This is only the catalogue. The engine that runs a playbook (approval gate, action ledger, idempotent effects)
is a later issue; until it exists, a binding is validated but nothing is executed.
"""

from __future__ import annotations

PLAYBOOKS: dict[str, str] = {
    "revoke_token": "Revoke the credential the agent used (OAuth RFC 7009 revocation at its issuer).",
    "quarantine_agent": "Stop routing work to the agent until its owner releases it.",
    "signed_hook": "Call an owner-provided webhook with an HMAC-signed request describing the finding.",
    "revocation_list": "Add the credential or agent to the revocation list that gateways consult.",
}
