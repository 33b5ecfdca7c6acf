"""The policy layer: load, check and compile the ownership matrix. Registries are passed in, never imported."""

from warden.policy.loader import build_policy, load_policy, policy_files
from warden.policy.model import Assignment, Catalogue, Policy, PolicyError, PolicyIssue

__all__ = ["Assignment", "Catalogue", "Policy", "PolicyError", "PolicyIssue", "build_policy", "load_policy",
           "policy_files"]
