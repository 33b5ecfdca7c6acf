"""The learned policy of the third-party bench: `warden policy learn` over the benign training sessions, on a current
matrix that holds only what is not learned (the owners, the catalogue read from the benchmarks' tool definitions,
one workflow per data set with its agent and roles, no scope), evaluated as it would be enforced."""

from __future__ import annotations

import json
from collections.abc import Iterable
from typing import Any

import yaml

from bench.third_party import author
from bench.third_party.convert import Session
from service.runtime.catalogue import CATALOGUE
from streams.ingest import FORMATS
from warden.contract.matrix import Matrix
from warden.policy import Policy, build_policy
from warden.policy.learn import SHADOWED, Learner, draft
from warden.policy.merge import merge


def current(training: list[Session], catalogue: bool = True) -> dict[str, Any]:
    """The hand-written author's matrix with every scope, list and flow exemption taken out: what a team has before
    it learns (owners, the catalogue, who owns which agent); without `catalogue`, no tool catalogue either."""
    doc = author.matrix(training)
    for wf in doc["workflows"].values():
        wf["scope"], wf["lists"] = {}, {}
    if not catalogue:
        doc["tools"] = {}
    return doc


def without_catalogue(training: Iterable[Session]) -> Policy:
    """As `policy`, on a current matrix with no tool catalogue: what learning alone gives."""
    return policy(training, catalogue=False)


def policy(training: Iterable[Session], catalogue: bool = True) -> Policy:
    """Learn from the benign training sessions, through the native strict decoder, and enforce the draft: its rules
    are in shadow mode as drafted, and a shadow rule never alerts, so they are flipped to enforce here."""
    sessions = list(training)
    base = current(sessions, catalogue)
    learner = Learner(build_policy(Matrix.model_validate(base), CATALOGUE, sha256="third-party-current"))
    decode = FORMATS["native"]
    for s in sessions:
        assert not s.hijacked, "learn sees benign sessions only"
        for e in s.events:
            decoded = decode(json.dumps(e).encode(), 1 << 20)
            assert not decoded.rejections, decoded.rejections
            for event in decoded.events:
                learner.observe(event)
    learned = yaml.safe_load(draft(learner).text)  # the file `warden policy learn` writes, read back
    merged, _ = merge([("current", base), ("learned", learned)])
    for rule in SHADOWED:
        merged["rules"]["builtin"][rule]["mode"] = "enforce"
    return build_policy(Matrix.model_validate(merged), CATALOGUE, sha256="third-party-learned")
