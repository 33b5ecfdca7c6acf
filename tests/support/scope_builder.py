"""A matrix with a tool catalogue, named lists, argument constraints and flow rules, for the pure detector tests."""

from __future__ import annotations

import copy
from typing import Any

from service.runtime.catalogue import CATALOGUE
from tests.support.matrix_builder import BASE
from warden.contract.matrix import Matrix
from warden.policy import Policy, build_policy

LISTS = {"payees": ["acme", "globex"], "company": ["example.com", "*.example.com"], "roles": ["viewer"]}
TOOLS = {
    "mail.read": {"categories": ["untrusted_input"]},
    "web.*": {"categories": ["untrusted_input"], "resource": "url"},
    "mail.send": {"categories": ["external_comm"], "resource": "to"},
    "pay": {"categories": ["payment"], "resource": "payee"},
    "vault.read": {"categories": ["secret_store"], "resource": "path"},
    "directory.grant_role": {"categories": ["identity_admin"], "resource": "user", "operation": "grant_role"},
    "shell": {"categories": ["code_exec"]},
}
# The agentic, critical `provisioner` workflow (agent iam-agent) gets every tool above.
SCOPE = {
    "tools": ["directory.lookup_user", "directory.grant_role", "crm.read_*", "mail.read", "web.get", "mail.send",
              "pay", "vault.read", "shell"],
    "arguments": {
        "pay": {"type": "object", "required": ["payee", "amount"],
                "properties": {"payee": {"type": "string", "pattern": "^[a-z]+$"},
                               "amount": {"type": "number", "minimum": 1, "maximum": 1000},
                               "memo": {"type": "string", "maxLength": 10}}},
        "mail.send": {"type": "object", "required": ["to"],
                      "properties": {"to": {"type": "array", "items": {"email_domain_in": "company"}}}},
        "web.get": {"properties": {"url": {"anyOf": [{"url_host_in": "company"}, {"const": "about:blank"}]}}},
        "directory.grant_role": {"properties": {"user": {"type": "string"}, "role": {"in_list": "roles"}}},
    },
    "untrusted_flow": {"within_steps": 3, "within": "10m",
                       "unless": {"pay": {"properties": {"payee": {"in_list": "payees"}}, "required": ["payee"]}}},
}


def scoped(scope: dict[str, Any] | None = None, *, top: dict[str, Any] | None = None,
           workflow: dict[str, Any] | None = None) -> Policy:
    """BASE with the catalogue and lists, and the provisioner's scope extended by SCOPE and `scope`."""
    doc = copy.deepcopy(BASE)
    doc.update({"lists": copy.deepcopy(LISTS), "tools": copy.deepcopy(TOOLS)})
    doc.update(top or {})
    wf = doc["workflows"]["provisioner"]
    wf["scope"].update(copy.deepcopy(SCOPE))
    wf["scope"].update(scope or {})
    wf["scope"]["limits"] = {}
    wf.update(workflow or {})
    return build_policy(Matrix.model_validate(doc), CATALOGUE, sha256="sha-test")
