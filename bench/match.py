"""Pattern-matching throughput: one bus with 10 / 100 / 1,000 / 10,000 rules, one core.

Generates a realistic event stream (an e-commerce/infra mix: nested objects, arrays of
objects, numbers, ~30 leaves, ~1 KB of JSON each) and rule sets that mix every operator,
checks that the Matcher agrees with the rule-by-rule reference on a sample, then prints
events/s including JSON decoding for:

- Matcher.matches_json (all rules compiled into one index),
- the simplest reference: decode, then the naive evaluator (bus.patterns.reference) on
  each rule in turn,
- rule-by-rule with each pattern compiled (compile_pattern(p).matches on each rule).

The Matcher runs on the compiled engine (bus/patterns/_cengine.c) when it is built, else on the
pure-Python one; the first line says which. `--engine python` measures the pure-Python one
where both exist.

Where the Matcher is timed. A broker process holds one Matcher per bus, not also a list of
every rule compiled on its own and the reference's structures, and at 10,000 rules the
Matcher is memory bound, so what else lives in the process changes its figure. By default
the Matcher is therefore timed twice: in a fresh subprocess that builds the same events and
rules (same seed, same generators) and only the Matcher ("own process", the figure the
ratios use), and in this process next to the rule-by-rule and reference structures ("same
process", how this bench measured before). `--same-process-only` skips the subprocess.

Usage: .venv/bin/python bench/match.py [--seconds 2] [--sizes 10,100,1000,10000] [--engine c|python]
                                       [--same-process-only]
"""
from __future__ import annotations

import argparse
import json
import platform
import random
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import msgspec  # noqa: E402

from bus.patterns import Matcher, compile_pattern  # noqa: E402
from bus.patterns import engine as patterns_engine  # noqa: E402
from bus.patterns.reference import reference_matches  # noqa: E402

# --- the event stream ----------------------------------------------------------------------

SOURCES = {
    "com.shop.orders": ["Order Placed", "Order Cancelled", "Order Shipped", "Order Refunded"],
    "com.shop.payments": ["Payment Authorized", "Payment Failed", "Payment Captured"],
    "com.shop.inventory": ["Stock Low", "Stock Replenished", "Item Discontinued"],
    "com.shop.shipping": ["Label Created", "Parcel Delivered", "Parcel Lost"],
    "com.shop.users": ["User Signed Up", "User Deleted", "Password Reset"],
    "com.shop.uploads": ["Object Created", "Object Deleted"],
    "com.shop.fraud": ["Score Computed", "Account Flagged"],
    "com.shop.search": ["Query Logged"],
    "com.partner.acme": ["Invoice Issued", "Invoice Paid"],
    "com.partner.globex": ["Catalog Synced"],
}
STATUSES = ["PLACED", "PAID", "SHIPPED", "DELIVERED", "CANCELLED", "FAILED", "REFUNDED", "ON_HOLD"]
CURRENCIES = ["EUR", "USD", "GBP", "CHF", "SEK"]
TIERS = ["bronze", "silver", "gold", "platinum"]
COUNTRIES = ["DE", "FR", "NL", "BE", "AT", "CH", "IT", "ES", "PT", "PL", "CZ", "SE", "NO", "DK", "FI",
             "IE", "GB", "US", "CA", "MX", "BR", "AR", "JP", "KR", "CN", "IN", "AU", "NZ", "ZA", "EG"]
CITIES = [f"City{i:02d}" for i in range(50)]
DOMAINS = [f"mail{i}.example.com" for i in range(20)]
REGIONS = ["eu-west-1", "eu-central-1", "us-east-1", "us-west-2", "ap-south-1", "ap-northeast-1",
           "sa-east-1", "ca-central-1"]
ACCOUNTS = [f"{100000000000 + i * 7919:012d}" for i in range(20)]
EXTENSIONS = ["png", "jpg", "pdf", "csv", "json", "tiff"]
TAGS = ["promo", "new", "vip", "b2b", "gift", "sale", "repeat", "mobile", "web", "app", "beta",
        "newsletter", "coupon", "bundle", "clearance"]
AGENTS = ["Mozilla/5.0 (X11; Linux x86_64) Firefox/126.0", "Mozilla/5.0 (iPhone; CPU iPhone OS 17_4)",
          "curl/8.5.0", "python-requests/2.32", "okhttp/4.12.0", "Mozilla/5.0 (Windows NT 10.0) Chrome/125.0"]
SHIPPING = ["standard", "express", "pickup", "freight"]
CUSTOMERS, SKUS = 10_000, 1_000


def make_event(rng: random.Random) -> dict:
    source = rng.choice(list(SOURCES))
    country = rng.choice(COUNTRIES)
    customer = rng.randrange(CUSTOMERS)
    items = [{"sku": f"SKU-{rng.randrange(SKUS):04d}", "qty": rng.randint(1, 5),
              "price": round(rng.uniform(1, 400), 2)} for _ in range(rng.randint(1, 3))]
    return {
        "version": "0",
        "id": f"{rng.getrandbits(128):032x}",
        "detail-type": rng.choice(SOURCES[source]),
        "source": source,
        "account": rng.choice(ACCOUNTS),
        "time": f"2024-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T{rng.randint(0, 23):02d}:"
                f"{rng.randint(0, 59):02d}:{rng.randint(0, 59):02d}Z",
        "region": rng.choice(REGIONS),
        "resources": [f"arn:aws:shop:{rng.choice(REGIONS)}:{rng.choice(ACCOUNTS)}:order/ord-{rng.randrange(10**6):06d}"],
        "detail": {
            "orderId": f"ord-{rng.randrange(10**6):06d}",
            "status": rng.choice(STATUSES),
            "amount": round(rng.uniform(0, 2000), 2),
            "currency": rng.choice(CURRENCIES),
            "customer": {
                "id": f"cust-{customer:05d}",
                "tier": rng.choice(TIERS),
                "country": country,
                "email": f"user{customer}@{rng.choice(DOMAINS)}",
            },
            "items": items,
            "shipping": {"method": rng.choice(SHIPPING),
                         "address": {"city": rng.choice(CITIES), "zip": f"{rng.randrange(10**5):05d}"}},
            "clientIp": f"10.{rng.randrange(16)}.{rng.randrange(256)}.{rng.randrange(256)}",
            "userAgent": rng.choice(AGENTS),
            "file": {"key": f"uploads/{country}/{rng.choice([2023, 2024])}/f{rng.randrange(10**4)}.{rng.choice(EXTENSIONS)}",
                     "size": rng.randrange(10**7)},
            "tags": rng.sample(TAGS, rng.randint(0, 3)),
            "flags": {"gift": rng.random() < 0.2, "express": rng.random() < 0.3},
            "retries": rng.choice([0, 0, 0, 1, 2, 3]),
            "note": rng.choice([None, None, "leave at door", "call first"]),
        },
    }


# --- rules that mix every operator ---------------------------------------------------------
#
# Like a real bus with thousands of rules, most rules route a specific slice of traffic:
# each has a source, usually a detail-type, one selective "key" condition (a customer, a
# SKU, an order-id prefix, a /24, a narrow amount band...) and zero to two broad filters.
# Between them the key and filter generators use every operator of the language.

Condition = tuple[tuple[str, ...], list]


def _key_condition(r: random.Random) -> Condition:
    generators: list[Callable[[], Condition]] = [
        lambda: (("customer", "id"), [f"cust-{r.randrange(CUSTOMERS):05d}" for _ in range(r.randint(1, 3))]),
        lambda: (("items", "sku"), [f"SKU-{r.randrange(SKUS):04d}"]),
        lambda: (("orderId",), [{"prefix": f"ord-{r.randrange(1000):03d}"}]),
        lambda: (("customer", "email"), [{"prefix": {"equals-ignore-case": f"USER{r.randrange(CUSTOMERS)}@"}}]),
        lambda: (("file", "key"), [{"wildcard": f"uploads/{r.choice(COUNTRIES)}/*/f{r.randrange(10, 100)}*.{r.choice(EXTENSIONS)}"}]),
        lambda: (("clientIp",), [{"cidr": f"10.{r.randrange(16)}.{r.randrange(256)}.0/24"}]),
        lambda: (("shipping", "address", "zip"), [{"prefix": f"{r.randrange(1000):03d}"}]),
        lambda: (("amount",), [{"numeric": [">=", (low := r.randrange(0, 1995)), "<", low + 5]}]),
        lambda: (("resources",), [{"prefix": f"arn:aws:shop:{r.choice(REGIONS)}:{r.choice(ACCOUNTS)}:order/ord-{r.randrange(100):02d}"}]),
        lambda: (("shipping", "address", "city"), [{"equals-ignore-case": r.choice(CITIES).upper()}]),
    ]
    return r.choice(generators)()


def _filter_condition(r: random.Random) -> Condition:
    generators: list[Callable[[], Condition]] = [
        lambda: (("status",), r.sample(STATUSES, r.randint(1, 3))),
        lambda: (("customer", "country"), r.sample(COUNTRIES, r.randint(1, 5))),
        lambda: (("customer", "tier"), [r.choice(TIERS)]),
        lambda: (("currency",), [r.choice(CURRENCIES)]),
        lambda: (("retries",), [{"numeric": ["=", 0]}]),
        lambda: (("file", "key"), [{"prefix": f"uploads/{r.choice(COUNTRIES)}/"}]),
        lambda: (("file", "key"), [{"suffix": f".{r.choice(EXTENSIONS)}"}]),
        lambda: (("customer", "email"), [{"suffix": {"equals-ignore-case": f"@{r.choice(DOMAINS).upper()}"}}]),
        lambda: (("status",), [{"anything-but": r.sample(STATUSES, 2)}]),
        lambda: (("currency",), [{"anything-but": r.choice(CURRENCIES)}]),
        lambda: (("retries",), [{"anything-but": [0]}]),
        lambda: (("orderId",), [{"anything-but": {"prefix": f"ord-{r.randrange(10)}"}}]),
        lambda: (("file", "key"), [{"anything-but": {"suffix": f".{r.choice(EXTENSIONS)}"}}]),
        lambda: (("shipping", "method"), [{"anything-but": {"equals-ignore-case": r.choice(SHIPPING).upper()}}]),
        lambda: (("userAgent",), [{"anything-but": {"wildcard": "Mozilla/*"}}]),
        lambda: (("amount",), [{"numeric": [">", (low := r.randrange(0, 1900)), "<=", low + r.randrange(100, 1000)]}]),
        lambda: (("amount",), [{"numeric": [">=", r.randrange(500, 2000)]}]),
        lambda: (("items", "qty"), [{"numeric": [">=", r.randint(2, 5)]}]),
        lambda: (("items", "price"), [{"numeric": ["<", r.randrange(5, 100)]}]),
        lambda: (("note",), [{"exists": r.random() < 0.5}]),
        lambda: (("note",), [None]),
        lambda: (("flags", "gift"), [True]),
        lambda: (("flags", "express"), [{"exists": True}]),
        lambda: (("clientIp",), [{"cidr": f"10.{r.randrange(16)}.0.0/16"}]),
        lambda: (("userAgent",), [{"wildcard": f"*{r.choice(['Firefox', 'iPhone', 'Chrome', 'curl'])}*"}]),
        lambda: (("tags",), r.sample(TAGS, r.randint(1, 2))),
    ]
    return r.choice(generators)()


def _nest(conditions: list[Condition]) -> dict:
    tree: dict = {}
    for path, values in conditions:
        node = tree
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = values
    return tree


def make_rule(rng: random.Random) -> dict:
    source = rng.choice(list(SOURCES))
    pattern: dict = {"source": [source]}
    if rng.random() < 0.7:
        pattern["detail-type"] = rng.sample(SOURCES[source], min(len(SOURCES[source]), rng.randint(1, 2)))
    if rng.random() < 0.1:
        pattern["region"] = [{"prefix": rng.choice(["eu-", "us-", "ap-"])}]
    if rng.random() < 0.05:
        pattern["account"] = [rng.choice(ACCOUNTS)]
    filters = [_filter_condition(rng) for _ in range(rng.choice([0, 1, 1, 2]))]
    key = _key_condition(rng)
    if key[0] == ("resources",):
        pattern["resources"] = key[1]
        detail = _nest(filters)
    else:
        detail = _nest(filters + [key])
    if rng.random() < 0.1:
        # an $or of two more key conditions, on fields the rule does not use yet
        first, second = _key_condition(rng), _key_condition(rng)
        if first[0][0] != second[0][0] and not {first[0][0], second[0][0]} & set(detail) and "resources" not in (first[0][0], second[0][0]):
            detail["$or"] = [_nest([first]), _nest([second])]
    if detail:
        pattern["detail"] = detail
    return pattern


# --- measuring -----------------------------------------------------------------------------

def throughput(run_one: Callable[[bytes], object], events: list[bytes], seconds: float, trial_events: int) -> float:
    """Best events/s over several trials of `trial_events` events, measured in CPU time of
    this process: the machine may be shared, and best-of-trials CPU time is what one core
    can do (the same reasoning as timeit's min)."""
    best, spent, position = 0.0, 0.0, 0
    while spent < seconds:
        batch = [events[(position + i) % len(events)] for i in range(trial_events)]
        position += trial_events
        started = time.process_time()
        for raw in batch:
            run_one(raw)
        elapsed = time.process_time() - started
        spent += elapsed
        if elapsed > 0:
            best = max(best, trial_events / elapsed)
    return best


def _workload(n_events: int, n_rules: int) -> tuple[list[bytes], list[dict]]:
    """The events and the rules (the first `n_rules`; a prefix of any longer list)."""
    rng = random.Random(2024)
    raw_events = [json.dumps(make_event(rng), separators=(", ", ": ")).encode() for _ in range(n_events)]
    return raw_events, [make_rule(rng) for _ in range(n_rules)]


def _matcher_only(n: int, args: argparse.Namespace) -> None:
    """The subprocess: the workload, one Matcher over the first n rules, nothing else;
    prints its events/s (as JSON on the last line)."""
    raw_events, all_rules = _workload(args.events, n)
    matcher = Matcher()
    for i, pattern in enumerate(all_rules):
        matcher.add(f"rule{i}", pattern)  # (the rules stay alive, as a broker's config does)
    for raw in raw_events[:50]:
        matcher.matches_json(raw)  # the first match builds the automaton
    fast = throughput(matcher.matches_json, raw_events, args.seconds, trial_events=2000)
    print(json.dumps({"rules": n, "engine": patterns_engine.engine(), "events_per_s": fast}))


def _matcher_in_own_process(n: int, args: argparse.Namespace) -> float:
    command = [sys.executable, str(Path(__file__).resolve()), "--matcher-only", str(n),
               "--seconds", str(args.seconds), "--events", str(args.events), "--engine", args.engine]
    out = subprocess.run(command, check=True, capture_output=True, text=True).stdout
    result = json.loads(out.strip().splitlines()[-1])
    assert result["rules"] == n and result["engine"] == args.engine, result
    return result["events_per_s"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--sizes", default="10,100,1000,10000")
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--engine", choices=["c", "python"], default=patterns_engine.engine(),
                        help="the Matcher's engine (default: %(default)s, the one Matchers use here)")
    parser.add_argument("--same-process-only", action="store_true",
                        help="time the Matcher only in this process, next to the reference structures")
    parser.add_argument("--matcher-only", type=int, metavar="N", help=argparse.SUPPRESS)
    args = parser.parse_args()
    patterns_engine.use_engine(args.engine)
    if args.matcher_only is not None:
        _matcher_only(args.matcher_only, args)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    raw_events, all_rules = _workload(args.events, max(sizes))
    for rule in all_rules:
        compile_pattern(rule)  # every generated rule must be valid
    decode = msgspec.json.Decoder().decode
    sample = [decode(raw) for raw in raw_events[:200]]
    leaves = sum(_count_leaves(e) for e in sample) / len(sample)
    size = sum(len(raw) for raw in raw_events) / len(raw_events)

    print(f"python {platform.python_version()} on {platform.machine()}, one core (best-of-trials CPU time); "
          f"{len(raw_events)} distinct events, {size:.0f} bytes and {leaves:.0f} leaves on average")
    print(f"Matcher engine: {patterns_engine.engine()} "
          f"({'compiled, bus/patterns/_cengine.c' if patterns_engine.engine() == 'c' else 'pure Python'}; "
          f"available here: {', '.join(patterns_engine.ENGINES)})")
    own = not args.same_process_only
    if own:
        print("Matcher timed in its own process (a fresh subprocess holding only the workload and the "
              "Matcher, like a broker) and, for comparison, in this process next to the reference and "
              "rule-by-rule structures; the x columns and the ratio use the own-process figure")
    else:
        print("Matcher timed in this process only, next to the reference and rule-by-rule structures")
    print()
    print("| rules | Matcher events/s" + (" (own process) | Matcher events/s (same process)" if own else "")
          + " | matches/event | reference events/s | x reference "
          "| compiled rule-by-rule events/s | x rule-by-rule |")
    print("|---:|---:" + ("|---:" if own else "") + "|---:|---:|---:|---:|---:|")
    results, same_results = {}, {}
    for n in sizes:
        isolated = _matcher_in_own_process(n, args) if own else None
        rules = {f"rule{i}": p for i, p in enumerate(all_rules[:n])}
        matcher = Matcher()
        for name, pattern in rules.items():
            matcher.add(name, pattern)
        compiled = [(name, compile_pattern(p)) for name, p in rules.items()]
        items = list(rules.items())

        def reference(raw: bytes) -> list[str]:
            event = decode(raw)
            return [name for name, pattern in items if reference_matches(pattern, event)]

        def rule_by_rule(raw: bytes) -> list[str]:
            event = decode(raw)
            return [name for name, c in compiled if c.matches(event)]

        matched = 0
        for raw in raw_events[: 200 if n <= 1000 else 50]:
            got = matcher.matches_json(raw)
            assert got == reference(raw) == rule_by_rule(raw), f"disagreement at {n} rules"
            matched += len(got)
        per_event = matched / (200 if n <= 1000 else 50)

        same = throughput(matcher.matches_json, raw_events, args.seconds, trial_events=2000)
        fast = isolated if own else same
        slow_trial = max(10, 20_000 // n)
        ref = throughput(reference, raw_events, args.seconds / 2, trial_events=slow_trial)
        rbr = throughput(rule_by_rule, raw_events, args.seconds / 2, trial_events=slow_trial)
        results[n], same_results[n] = fast, same
        print(f"| {n:,} | {fast:,.0f}" + (f" | {same:,.0f}" if own else "")
              + f" | {per_event:.1f} | {ref:,.0f} | {fast / ref:,.0f}x "
              f"| {rbr:,.0f} | {fast / rbr:,.0f}x |", flush=True)
    if 10 in results and 10_000 in results:
        print()
        if own:
            print(f"10,000 rules run at {results[10_000] / results[10]:.2f} of the 10-rule throughput "
                  f"(Matcher in its own process; {same_results[10_000] / same_results[10]:.2f} "
                  f"timed in this process)")
        else:
            print(f"10,000 rules run at {results[10_000] / results[10]:.2f} of the 10-rule throughput "
                  f"(Matcher timed in this process)")


def _count_leaves(value) -> int:
    if isinstance(value, dict):
        return sum(_count_leaves(v) for v in value.values())
    if isinstance(value, list):
        return sum(_count_leaves(v) for v in value)
    return 1


if __name__ == "__main__":
    main()
