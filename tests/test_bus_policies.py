"""Bus policies: PutPermission/RemovePermission through boto3 build and edit the policy
document AWS would, DescribeEventBus shows it, and PutEvents honours it per entry, on every
broker (bus/auth/buspolicy.py decides; its verdicts are tested here without Redis too)."""
from __future__ import annotations

import json

import botocore.exceptions
import pytest

from bus.auth import buspolicy
from tests.conftest import wait_for

ADMIN = ("AKIAADMIN0000001", "admin-secret")
SHOP = ("AKIASHOP00000001", "shop-secret")
CI = ("AKIACI0000000001", "ci-secret")
CREDENTIALS = f"""\
principals:
  - {{name: admin, access_key_id: {ADMIN[0]}, secret_access_key: {ADMIN[1]}, buses: ["*"], admin: true}}
  - {{name: shop, access_key_id: {SHOP[0]}, secret_access_key: {SHOP[1]}, buses: [shop, default]}}
  - {{name: ci, access_key_id: {CI[0]}, secret_access_key: {CI[1]}, buses: ["*"]}}
"""
RULES = "buses:\n  - name: shop\n"
ACCOUNT = "000000000000"
SHOP_ARN = f"arn:aws:events:us-east-1:{ACCOUNT}:event-bus/shop"


def entry(bus: str) -> dict:
    return {"Source": "s", "DetailType": "d", "Detail": "{}", "EventBusName": bus}


def codes(out: dict) -> list[str | None]:
    return [e.get("ErrorCode") for e in out["Entries"]]


@pytest.fixture
def brokers(stack, tmp_path, events_client):
    (tmp_path / "credentials.yaml").write_text(CREDENTIALS)
    stack.write_rules(RULES)
    stack.start_broker(extra=("--credentials", str(tmp_path / "credentials.yaml")))
    return stack, lambda key: events_client(stack.url, *key)


# --- the verdicts, pure ------------------------------------------------------------------------

CALLER = buspolicy.Caller("ci", CI[0], ACCOUNT)


def doc(*statements: dict) -> dict:
    return {"Version": buspolicy.VERSION, "Statement": list(statements)}


def test_a_statement_for_everyone_allows_any_caller():
    assert buspolicy.verdict(doc(buspolicy.statement("all", "*", SHOP_ARN)), CALLER, "shop") == "allow"


def test_a_statement_for_another_user_neither_allows_nor_denies():
    other = buspolicy.statement("other", "shop", SHOP_ARN)
    assert buspolicy.verdict(doc(other), CALLER, "shop") is None


def test_a_statement_naming_the_callers_user_arn_allows_it():
    mine = buspolicy.statement("mine", "ci", SHOP_ARN)  # written as arn:aws:iam::<account>:user/ci
    assert buspolicy.verdict(doc(mine), CALLER, "shop") == "allow"


def test_a_deny_wins_over_an_allow():
    deny = {**buspolicy.statement("no", "*", SHOP_ARN), "Effect": "Deny"}
    assert buspolicy.verdict(doc(buspolicy.statement("all", "*", SHOP_ARN), deny), CALLER, "shop") == "deny"


def test_a_statement_about_another_bus_does_not_apply():
    assert buspolicy.verdict(doc(buspolicy.statement("all", "*", SHOP_ARN.replace("/shop", "/other"))),
                             CALLER, "shop") is None


# --- through the API -------------------------------------------------------------------------

def test_put_permission_writes_awss_statement_and_describe_event_bus_shows_it(brokers):
    _, client = brokers
    admin = client(ADMIN)
    admin.put_permission(EventBusName="shop", Action="events:PutEvents", Principal="*", StatementId="all")
    policy = json.loads(admin.describe_event_bus(Name="shop")["Policy"])
    assert policy["Version"] == "2012-10-17"
    assert policy["Statement"] == [{"Sid": "all", "Effect": "Allow", "Principal": "*",
                                    "Action": "events:PutEvents", "Resource": SHOP_ARN}]


def test_remove_permission_removes_the_statement_and_then_the_policy(brokers):
    _, client = brokers
    admin = client(ADMIN)
    admin.put_permission(EventBusName="shop", Action="events:PutEvents", Principal="*", StatementId="a")
    admin.put_permission(EventBusName="shop", Action="events:PutEvents", Principal=ACCOUNT, StatementId="b")
    admin.remove_permission(EventBusName="shop", StatementId="a")
    assert [s["Sid"] for s in json.loads(admin.describe_event_bus(Name="shop")["Policy"])["Statement"]] == ["b"]
    admin.remove_permission(EventBusName="shop", RemoveAllPermissions=True)
    assert "Policy" not in admin.describe_event_bus(Name="shop")


def test_removing_an_unknown_statement_is_resource_not_found(brokers):
    _, client = brokers
    admin = client(ADMIN)
    admin.put_permission(EventBusName="shop", Action="events:PutEvents", Principal="*", StatementId="a")
    with pytest.raises(botocore.exceptions.ClientError) as err:
        admin.remove_permission(EventBusName="shop", StatementId="nope")
    assert err.value.response["Error"]["Code"] == "ResourceNotFoundException"


def test_permissions_are_for_admins_only(brokers):
    _, client = brokers
    with pytest.raises(botocore.exceptions.ClientError) as err:
        client(CI).put_permission(EventBusName="shop", Action="events:PutEvents", Principal="*", StatementId="a")
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"


def test_a_bus_with_a_policy_admits_only_the_principals_it_names_per_entry(brokers):
    _, client = brokers
    client(ADMIN).put_permission(EventBusName="shop", Action="events:PutEvents", Principal="ci", StatementId="ci-only")
    assert codes(client(CI).put_events(Entries=[entry("shop")])) == [None]
    # shop's own `buses:` list names the bus, but the policy now has the bus's say; default is untouched
    out = client(SHOP).put_events(Entries=[entry("shop"), entry("default")])
    assert codes(out) == ["AccessDeniedException", None]
    assert "because no resource-based policy allows the events:PutEvents action" in out["Entries"][0]["ErrorMessage"]
    assert codes(client(ADMIN).put_events(Entries=[entry("shop")])) == [None]  # admins pass unless denied


def test_an_explicit_deny_refuses_admins_too(brokers):
    _, client = brokers
    deny = doc({"Sid": "no", "Effect": "Deny", "Principal": "*", "Action": "events:PutEvents", "Resource": SHOP_ARN})
    client(ADMIN).put_permission(EventBusName="shop", Policy=json.dumps(deny))
    out = client(ADMIN).put_events(Entries=[entry("shop")])
    assert codes(out) == ["AccessDeniedException"] and "explicit deny" in out["Entries"][0]["ErrorMessage"]


def test_a_second_broker_enforces_a_policy_put_through_the_first(brokers, tmp_path, events_client):
    stack, client = brokers
    first_url = stack.url
    stack.start_broker(extra=("--credentials", str(tmp_path / "credentials.yaml")))
    second = events_client(stack.url, *SHOP)
    assert codes(second.put_events(Entries=[entry("shop")])) == [None]
    events_client(first_url, *ADMIN).put_permission(EventBusName="shop", Action="events:PutEvents",
                                                     Principal="ci", StatementId="ci-only")
    wait_for(lambda: codes(second.put_events(Entries=[entry("shop")])) == ["AccessDeniedException"],
             timeout=5, what="the second broker to load the policy")
