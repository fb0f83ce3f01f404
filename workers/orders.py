"""Example handler: appends each placed order to a file (its visible effect) and logs it."""
import json
import logging
import os
from pathlib import Path

log = logging.getLogger("workers.orders")
ORDERS_FILE = Path(os.environ.get("BUSWAY_ORDERS_FILE", ".busway/orders.jsonl"))


def record_order(event, context):
    order = event["detail"]
    log.info("order %s recorded: amount=%s (request %s, attempt %s)",
             event["id"], order.get("amount"), context.aws_request_id, context.attempt)
    ORDERS_FILE.parent.mkdir(parents=True, exist_ok=True)
    with ORDERS_FILE.open("a") as f:
        f.write(json.dumps({"event_id": event["id"], "amount": order.get("amount"),
                            "rule": context.rule_name}) + "\n")
    return {"recorded": event["id"]}


def refund(event, context):
    amount = event["detail"].get("amount", 0)
    if amount < 0:
        raise ValueError(f"cannot refund a negative amount ({amount})")
    log.info("refund of %s for %s (attempt %s)", amount, event["id"], context.attempt)


def quote(event, context):
    """Called directly (Lambda's Invoke, see the README's tour): a price with tax, the rate from its environment."""
    amount = float(event.get("amount", 0))
    tax = round(amount * float(os.environ["TAX_RATE"]), 2)
    return {"amount": amount, "tax": tax, "total": amount + tax}
