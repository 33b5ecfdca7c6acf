"""A gateway that holds an identity change until Warden says it may run (docs/approvals.md).

    WARDEN_GATEWAY_TOKEN=... python examples/hold_identity_change.py --warden http://127.0.0.1:6066 \\
        --agent iam-agent-1 --operation grant_role --target user:dana --entitlement support-agent
    python examples/hold_identity_change.py --kafka 127.0.0.1:9092 --agent iam-agent-1 ...

It asks (over HTTP with a gateway token, or over Kafka), waits for the named approver's decision, and runs the
change only on `allowed` or `approved`. Denied, expired, still pending at the deadline, or any error: it does not
run the change (fail closed) and exits 1.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import uuid

from warden.client.approval_transports import ApprovalError, HttpApprovals, KafkaApprovals, proceed
from warden.contract.approval_requests import ApprovalAnswer, ApprovalRequest
from warden.contract.events import Agent, IdentityChange


def request_of(args: argparse.Namespace) -> ApprovalRequest:
    return ApprovalRequest(
        request_id=args.request_id or uuid.uuid4().hex, correlation_id=f"example-{uuid.uuid4().hex[:8]}",
        agent=Agent(id=args.agent), session_id=args.session,
        identity_change=IdentityChange(operation=args.operation, target=args.target, entitlement=args.entitlement))


async def ask(args: argparse.Namespace, request: ApprovalRequest) -> ApprovalAnswer | None:
    """The answer Warden gave within --timeout seconds (None: none came)."""
    if args.kafka:
        async with KafkaApprovals(args.kafka, requests_topic=args.requests_topic,
                                  decisions_topic=args.decisions_topic) as warden:
            return await warden.hold(request, timeout_s=args.timeout)
    async with HttpApprovals(args.warden, os.environ["WARDEN_GATEWAY_TOKEN"]) as warden:
        return await warden.hold(request, timeout_s=args.timeout)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--warden", default="http://127.0.0.1:6066", help="The worker's web server (HTTP).")
    parser.add_argument("--kafka", help="Kafka bootstrap: ask over Kafka instead of HTTP.")
    parser.add_argument("--requests-topic", default="warden.approval.requests")
    parser.add_argument("--decisions-topic", default="warden.approval.decisions")
    parser.add_argument("--agent", required=True)
    parser.add_argument("--operation", required=True)
    parser.add_argument("--target", required=True)
    parser.add_argument("--entitlement")
    parser.add_argument("--session")
    parser.add_argument("--request-id")
    parser.add_argument("--timeout", type=float, default=900.0, help="Seconds to hold the change.")
    args = parser.parse_args(argv)
    request = request_of(args)
    print(f"holding {args.operation} on {args.target} for {args.agent} (request {request.request_id})", flush=True)
    try:
        answer = await ask(args, request)
    except (ApprovalError, OSError) as exc:
        print(f"not running the change: Warden could not answer ({exc})", flush=True)
        return 1
    except Exception as exc:  # noqa: BLE001 - fail closed on anything else too: the change must not run
        print(f"not running the change: {type(exc).__name__}: {exc}", flush=True)
        return 1
    if not proceed(answer):
        why = "no answer in time" if answer is None else f"{answer.status.value}: {answer.reason}"
        print(f"not running the change: {why}", flush=True)
        return 1
    assert answer is not None
    print(f"{answer.status.value} by {answer.decided_by or 'the matrix'}: running {args.operation} on {args.target}",
          flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
