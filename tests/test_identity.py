"""bus.identity: the account and region, and the ARNs built from them and read back."""
from bus import identity
from bus.identity import Identity

WHO = Identity(account="123456789012", region="eu-west-1")


def test_account_and_region_come_from_the_environment_when_asked(monkeypatch):
    monkeypatch.setenv("BUS_ACCOUNT", "111122223333")
    monkeypatch.setenv("BUS_REGION", "ap-south-1")
    assert identity.from_env() == Identity(account="111122223333", region="ap-south-1")


def test_without_the_environment_the_account_and_region_are_the_local_defaults(monkeypatch):
    monkeypatch.delenv("BUS_ACCOUNT", raising=False)
    monkeypatch.delenv("BUS_REGION", raising=False)
    assert identity.from_env() == Identity(account="000000000000", region="us-east-1")


def test_a_signed_region_wins_over_bus_region(monkeypatch):
    monkeypatch.setenv("BUS_REGION", "ap-south-1")
    assert identity.from_env(region_override="eu-west-1").region == "eu-west-1"


def test_a_default_bus_rule_arn_has_no_bus_segment():
    assert identity.rule_arn(WHO, "default", "nightly") == "arn:aws:events:eu-west-1:123456789012:rule/nightly"


def test_a_custom_bus_rule_arn_names_its_bus():
    assert identity.rule_arn(WHO, "shop", "hourly") == "arn:aws:events:eu-west-1:123456789012:rule/shop/hourly"


def test_event_bus_function_and_queue_arns():
    assert identity.event_bus_arn(WHO, "shop") == "arn:aws:events:eu-west-1:123456789012:event-bus/shop"
    assert identity.function_arn(WHO, "orders.record") == "arn:aws:lambda:eu-west-1:123456789012:function:orders.record"
    assert identity.queue_arn(WHO, "dlq") == "arn:aws:sqs:eu-west-1:123456789012:dlq"


def test_a_function_name_is_read_from_a_lambda_arn_of_any_partition_with_or_without_a_qualifier():
    assert identity.function_name("arn:aws:lambda:us-east-1:1:function:m.f") == "m.f"
    assert identity.function_name("arn:aws-cn:lambda:cn-north-1:1:function:m.f:prod") == "m.f"
    assert identity.function_name("arn:aws:sqs:us-east-1:1:queue") is None
    assert identity.function_name("m.f") is None


def test_a_bus_name_is_read_from_an_event_bus_arn():
    assert identity.bus_name("arn:aws:events:us-east-1:1:event-bus/shop") == "shop"
    assert identity.bus_name("shop") is None


def test_a_queue_name_is_the_last_arn_segment():
    assert identity.queue_name("arn:aws:sqs:us-east-1:1:my-dlq") == "my-dlq"
    assert identity.queue_name("my-dlq") == "my-dlq"
