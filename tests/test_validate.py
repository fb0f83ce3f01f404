"""bus.config.validate: one rule's checks, the same for YAML and the AWS API (pure, no files)."""
from bus.config.model import FunctionTarget, RetryPolicy, Rule
from bus.config.validate import Problem, validate_rule, validate_target

BUSES = {"default", "results"}


def rule(**kw) -> Rule:
    return Rule(**{"name": "r", "event_pattern": {"source": ["x"]}, **kw})


def test_a_good_rule_has_no_problems():
    target = FunctionTarget(id="t", function="m.f", on_success="results", on_failure="default")
    assert validate_rule(rule(targets=[target]), BUSES) == []


def test_a_destination_on_an_undeclared_bus_is_a_problem_at_its_key():
    target = FunctionTarget(id="t", function="m.f", on_failure="nowhere")
    [p] = validate_rule(rule(targets=[target]), BUSES)
    assert (p.check, p.path, p.target) == ("destination", ("targets", 0, "on_failure"), 0)
    assert p.message == "bus 'nowhere' is not declared (declared: default, results)"


def test_target_problems_have_paths_from_the_target():
    [p] = validate_target(FunctionTarget(id="t", function="nodots"), BUSES)
    assert p == Problem("function", ("function",), "'nodots' is not module.handler")


def test_problems_come_in_a_fixed_order_rule_first_then_each_target():
    bad = rule(name="no spaces", bus="nowhere", targets=[
        FunctionTarget(id="t", function="m.f", retry_policy=RetryPolicy(maximum_retry_attempts=186)),
        FunctionTarget(id="t", function="m.f")])
    assert [p.check for p in validate_rule(bad, BUSES)] == ["name", "bus", "retry_policy", "target_id_twice"]


def test_a_rule_may_have_both_a_pattern_and_a_schedule_as_aws_allows():
    assert validate_rule(rule(schedule="rate(1 hour)"), BUSES) == []


def test_a_rule_needs_a_pattern_or_a_schedule():
    [p] = validate_rule(rule(event_pattern=None), BUSES)
    assert (p.check, p.path, p.key) == ("pattern_or_schedule", (), "r")


def test_a_schedule_that_is_not_text_is_a_problem_not_a_crash():
    [p] = validate_rule(rule(event_pattern=None, schedule=5), BUSES)
    assert (p.check, p.path) == ("type", ("schedule",))


def test_a_value_of_the_wrong_type_is_a_type_problem_at_its_path():
    """The AWS API builds Rules in code, where msgspec checks no types: validate_rule must."""
    [p] = validate_rule(rule(description=123), BUSES)
    assert (p.check, p.path) == ("type", ("description",))
    bad_retry = FunctionTarget(id="t", function="m.f", retry_policy=RetryPolicy(maximum_retry_attempts="5"))
    [p] = validate_rule(rule(targets=[bad_retry]), BUSES)
    assert (p.check, p.path) == ("type", ("targets", 0, "retry_policy", "maximum_retry_attempts"))


def test_a_rule_that_passes_validation_loads_again_from_its_builtins():
    import msgspec
    good = rule(description="d", targets=[FunctionTarget(id="t", function="m.f", dead_letter="q")])
    assert validate_rule(good, BUSES) == []
    assert msgspec.convert(msgspec.to_builtins(good), Rule) == good
