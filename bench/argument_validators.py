"""jsonschema-rs against fastjsonschema on Warden's argument constraints, in one run (the choice in
warden/policy/arguments.py).

    .venv/bin/python bench/argument_validators.py [--calls 50000] [--reps 5]

Both validate the same expanded schemas (named lists already rewritten to `enum`, domain checks as `format`
callbacks) on the same arguments: calls that pass (the hot path: almost every call) and calls that break a
constraint. jsonschema-rs is asked `is_valid`; fastjsonschema raises on the first error, so its "valid" path is a
call that returns. Printed: µs/call min/median/max over the reps, and the ratio rs/fast per rep.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fastjsonschema

from warden.policy.arguments import _expand, _Expansion

LISTS = {"known_payees": ["acme-logistics", "globex-cloud", "initech-office"],
         "company_domains": ["example.com", "*.example.com"]}
SCHEMAS: dict[str, dict[str, Any]] = {
    "pay_vendor": {"type": "object", "required": ["payee", "amount"],
                   "properties": {"payee": {"in_list": "known_payees"},
                                  "amount": {"type": "number", "exclusiveMinimum": 0, "maximum": 5000},
                                  "currency": {"enum": ["EUR", "USD", "GBP"]}}},
    "mail_send": {"type": "object", "required": ["to"],
                  "properties": {"to": {"type": "array", "maxItems": 20,
                                        "items": {"email_domain_in": "company_domains"}},
                                 "subject": {"type": "string", "maxLength": 200}}},
}
CALLS = {
    "pay_vendor": ({"payee": "globex-cloud", "amount": 420.5, "currency": "EUR"},
                   {"payee": "offshore-77", "amount": 420.5, "currency": "EUR"}),
    "mail_send": ({"to": ["ana@example.com", "ops@eu.example.com"], "subject": "Q4 numbers"},
                  {"to": ["ana@example.com", "Eve <e@evil.example.net>"], "subject": "Q4 numbers"}),
}


def compile_both(schema: dict[str, Any]) -> tuple[Callable[[Any], bool], Callable[[Any], bool]]:
    import jsonschema_rs

    ex = _Expansion(LISTS)
    expanded = _expand(schema, (), (), ex)
    rs = jsonschema_rs.validator_for(expanded, formats=ex.formats, validate_formats=True)
    fast = fastjsonschema.compile(expanded, formats=ex.formats)

    def fast_ok(value: Any) -> bool:
        try:
            fast(value)
        except fastjsonschema.JsonSchemaValueException:
            return False
        return True

    return rs.is_valid, fast_ok


def per_call(check: Callable[[Any], bool], value: Any, n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        check(value)
    return (time.perf_counter() - t0) / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--calls", type=int, default=50_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    print(f"{args.calls} calls per measure, {args.reps} reps; µs/call min/median/max; ratio rs/fast per rep")
    for name, schema in SCHEMAS.items():
        rs, fast = compile_both(schema)
        for label, value in zip(("valid", "invalid"), CALLS[name], strict=True):
            assert rs(value) == fast(value) == (label == "valid")
            a = [per_call(rs, value, args.calls) for _ in range(args.reps)]
            b = [per_call(fast, value, args.calls) for _ in range(args.reps)]
            ratios = [x / y for x, y in zip(a, b, strict=True)]
            fmt = lambda v: " / ".join(f"{x:.2f}" for x in (min(v), statistics.median(v), max(v)))  # noqa: E731
            print(f"{name:<11} {label:<8} jsonschema-rs {fmt(a)}   fastjsonschema {fmt(b)}   rs/fast {fmt(ratios)}")


if __name__ == "__main__":
    main()
