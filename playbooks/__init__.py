"""Playbooks: the containment actions a finding can trigger once the matrix's approver allows it."""
