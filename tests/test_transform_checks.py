"""bus.transform.input_problems: a target's input options checked before any event arrives,
each problem at its path inside the target (as YAML spells it), as bus.config.validate needs."""
from bus.config.model import FunctionTarget, InputTransformer
from bus.config.validate import Problem, validate_target
from bus.transform import input_problems

T = ("input_transformer", "input_template")
M = ("input_transformer", "input_paths_map")


def target(**options) -> FunctionTarget:
    return FunctionTarget(id="t", function="handlers.f", **options)


def transformer(template: str, paths: dict | None = None) -> FunctionTarget:
    return target(input_transformer=InputTransformer(input_template=template, input_paths_map=paths or {}))


def paths_of(problems) -> list:
    return [path for path, _ in problems]


def test_good_options_have_no_problems():
    for t in (target(), target(input='{"a": 1}'), target(input_path="$.detail.items[0].id"),
              target(input_jmespath="detail.items[?id > `1`].id"),
              transformer('{"s": <s>, "m": "at <aws.events.event.ingestion-time>", "e": <aws.events.event>}',
                          {"s": "$.detail.state"})):
        assert input_problems(t) == [], t


def test_two_options_are_one_problem_at_the_second():
    [(path, message)] = input_problems(target(input='{}', input_path="$.detail"))
    assert path == ("input_path",)
    assert message == ("at most one of input, input_path, input_transformer, input_jmespath may be set "
                       "(found input, input_path)")


def test_input_must_be_json():
    [(path, message)] = input_problems(target(input="not json"))
    assert path == ("input",) and message.startswith("must be JSON text")


def test_input_may_have_8192_characters_not_8193():
    assert input_problems(target(input='"' + "x" * 8190 + '"')) == []
    [(path, message)] = input_problems(target(input='"' + "x" * 8191 + '"'))
    assert (path, message) == (("input",), "at most 8192 characters (this has 8193)")


def test_input_path_must_be_a_path_aws_accepts():
    [(path, message)] = input_problems(target(input_path="$['detail']"))
    assert path == ("input_path",) and "dot notation" in message


def test_input_path_may_have_256_characters():
    assert input_problems(target(input_path="$." + "a" * 254)) == []
    assert paths_of(input_problems(target(input_path="$." + "a" * 255))) == [("input_path",)]


def test_a_bad_path_in_the_map_is_a_problem_at_its_variable():
    [(path, message)] = input_problems(transformer('"<id>"', {"id": "$..id"}))
    assert path == M + ("id",) and "deep scan" in message


def test_at_most_100_variables():
    hundred = {f"v{i}": "$.detail" for i in range(100)}
    assert input_problems(transformer('"x"', hundred)) == []
    [(path, message)] = input_problems(transformer('"x"', {**hundred, "one_more": "$.detail"}))
    assert (path, message) == (M, "at most 100 variables (this has 101)")


def test_variable_names_are_letters_digits_underscores_and_dashes():
    [(path, message)] = input_problems(transformer('"x"', {"has space": "$.a"}))
    assert path == M + ("has space",) and "invalid variable name" in message
    assert input_problems(transformer('"<a-b_9>"', {"a-b_9": "$.a"})) == []


def test_variable_names_may_not_start_with_aws():
    [(path, message)] = input_problems(transformer('"x"', {"AWSregion": "$.region"}))
    assert path == M + ("AWSregion",) and "may not start with AWS" in message


def test_a_predefined_name_cannot_be_defined():
    [(path, message)] = input_problems(transformer('"x"', {"aws.events.rule-name": "$.source"}))
    assert path == M + ("aws.events.rule-name",) and "predefined" in message


def test_a_template_has_1_to_8192_characters():
    assert paths_of(input_problems(transformer(""))) == [T]
    assert input_problems(transformer('"' + "x" * 8190 + '"')) == []
    [(path, message)] = input_problems(transformer('"' + "x" * 8191 + '"'))
    assert (path, message) == (T, "must have 1 to 8192 characters (this has 8193)")


def test_a_placeholder_that_names_no_variable_is_refused_as_aws_refuses_it():
    [(path, message)] = input_problems(transformer('"<known> and <unknown> and <unknown>"', {"known": "$.a"}))
    assert (path, message) == (T, "placeholder <unknown> is neither in input_paths_map nor predefined")


def test_a_jsonpath_written_in_the_template_is_not_a_placeholder_aws_knows():
    [(_, message)] = input_problems(transformer('{"id": <$.detail.id>}'))
    assert "<$.detail.id> is neither" in message


def test_a_bare_placeholder_cannot_be_an_object_key():
    [(path, message)] = input_problems(transformer('{<k>: 1}', {"k": "$.a"}))
    assert (path, message) == (T, "placeholder <k> cannot be used as an object key")


def test_a_quoted_placeholder_cannot_be_an_object_key_either():
    [(_, message)] = input_problems(transformer('{"a": {"key <k>" : 1}}', {"k": "$.a"}))
    assert message == "placeholder <k> cannot be used as an object key"


def test_a_colon_after_a_placeholder_in_a_text_template_is_just_text():
    assert input_problems(transformer("<k>: happened", {"k": "$.a"})) == []


def test_the_event_placeholders_are_json_values_only():
    for name in ("aws.events.event", "aws.events.event.json"):
        assert input_problems(transformer(f'{{"e": <{name}>}}')) == []
        for template in (f'"the event: <{name}>"', f'{{"e": "<{name}>"}}', f"event <{name}>"):
            [(path, message)] = input_problems(transformer(template))
            assert path == T and f"<{name}> can only be used as a JSON value" in message, template


def test_rule_name_arn_and_ingestion_time_may_stand_inside_strings():
    template = '"<aws.events.rule-name> <aws.events.rule-arn> <aws.events.event.ingestion-time>"'
    assert input_problems(transformer(template)) == []


def test_an_invalid_jmespath_expression_is_a_problem_on_one_line():
    [(path, message)] = input_problems(target(input_jmespath="detail.["))
    assert (path, message) == (("input_jmespath",), "invalid JMESPath expression 'detail.[': it ends too early")
    [(_, message)] = input_problems(target(input_jmespath="a b"))
    assert message == "invalid JMESPath expression 'a b': unexpected token: b at character 3"


def test_validate_target_reports_input_problems_as_input_checks():
    assert validate_target(target(input_jmespath=""), {"default"}) == [
        Problem("input", ("input_jmespath",), "invalid JMESPath expression '': it is empty")]
