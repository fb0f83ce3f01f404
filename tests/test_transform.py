"""bus.transform: what a target receives after its input option (pure: no Redis, no processes).

The first tests are the examples of AWS's "Amazon EventBridge input transformation" page
(https://docs.aws.amazon.com/eventbridge/latest/userguide/eb-transform-target-input.html), one
each, on the page's EC2 event and input paths; then the InputTransformer examples of the API
reference, the page's "Common issues", and the outputs AWS gave for cases the page leaves out
(recorded against AWS in LocalStack's snapshots, tests/aws/services/events/test_events_inputs.snapshot.json).
"""
import json

import msgspec
import pytest

from bus.config.model import BusTarget, FunctionTarget, HttpTarget, InputTransformer
from bus.transform import Shaped, TransformFailed, shaper_for

DOC_EVENT = {
    "version": "0",
    "id": "7bf73129-1428-4cd3-a780-95db273d1602",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "123456789012",
    "time": "2015-11-11T21:29:54Z",
    "region": "us-east-1",
    "resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"],
    "detail": {"instance-id": "i-0123456789", "state": "RUNNING"},
}
DOC_PATHS = {"timestamp": "$.time", "instance": "$.detail.instance-id", "state": "$.detail.state",
             "resource": "$.resources[0]"}
RULE_ARN = "arn:aws:events:us-east-2:123456789012:rule/example"
INGESTED = 1447277394.25  # 2015-11-11T21:29:54.25Z


def target(**options) -> FunctionTarget:
    return FunctionTarget(id="t", function="handlers.f", **options)


def transformer(template: str, paths: dict | None = None) -> FunctionTarget:
    return target(input_transformer=InputTransformer(input_template=template,
                                                     input_paths_map=DOC_PATHS if paths is None else paths))


def shape(t, event=DOC_EVENT) -> Shaped:
    raw = event if isinstance(event, bytes) else json.dumps(event).encode()
    return shaper_for(t).apply(raw, rule_arn=RULE_ARN, rule_name="example", ingestion_time=INGESTED)


def body(t, event=DOC_EVENT) -> str:
    shaped = shape(t, event)
    assert shaped.is_json
    return shaped.body.decode()


# --- the user guide's examples, one test each ------------------------------------------------

def test_doc_simple_string():
    assert body(transformer('"instance <instance> is in <state>"')) == '"instance i-0123456789 is in RUNNING"'


def test_doc_string_with_escaped_quotes():
    # The page: the console shows `"instance \"i-0123456789\" is in RUNNING"` (the CLI shows the
    # backslashes unescaped); the JSON the target gets is the former.
    got = body(transformer(r'"instance \"<instance>\" is in <state>"'))
    assert got == r'"instance \"i-0123456789\" is in RUNNING"'
    assert json.loads(got) == 'instance "i-0123456789" is in RUNNING'


def test_doc_simple_json():
    template = '{\n  "instance" : <instance>,\n  "state": <state>\n}'
    assert body(transformer(template)) == '{"instance":"i-0123456789","state":"RUNNING"}'


def test_doc_json_with_strings_and_variables():
    template = '{\n "instance" : <instance>,\n "state": "<state>",\n "instanceStatus": "instance \\"<instance>\\" is in <state>"\n}'
    got = body(transformer(template))
    assert got == '{"instance":"i-0123456789","state":"RUNNING","instanceStatus":"instance \\"i-0123456789\\" is in RUNNING"}'


def test_doc_json_with_a_mix_of_variables_and_static_information():
    template = '{\n  "instance" : <instance>,\n  "state": [ 9, <state>, true ],\n  "Transformed" : "Yes"\n}\n'
    assert body(transformer(template)) == '{"instance":"i-0123456789","state":[9,"RUNNING",true],"Transformed":"Yes"}'


def test_doc_including_reserved_variables_in_json():
    template = ('{\n  "instance" : <instance>,\n  "state": <state>,\n  "ruleArn" : <aws.events.rule-arn>,\n'
                '  "ruleName" : <aws.events.rule-name>,\n  "originalEvent" : <aws.events.event>\n}')
    got = json.loads(body(transformer(template)))
    assert got["instance"] == "i-0123456789" and got["state"] == "RUNNING"
    assert got["ruleArn"] == RULE_ARN and got["ruleName"] == "example"
    assert got["originalEvent"]["id"] == DOC_EVENT["id"]


def test_doc_including_reserved_variables_in_a_string():
    assert body(transformer('"<aws.events.rule-name> triggered"')) == '"example triggered"'


def test_doc_cloudwatch_log_group():
    # The page prints `{"timestamp" : 2015-11-11T21:29:54Z, "message": "instance "i-0123456789" ...`,
    # which is not JSON (a log line as the console shows it); under the page's own rule that a
    # bare string variable gets quotes, the JSON sent is this:
    template = '{\n  "timestamp" : <timestamp>,\n  "message": "instance \\"<instance>\\" is in <state>"\n}'
    got = body(transformer(template))
    assert got == '{"timestamp":"2015-11-11T21:29:54Z","message":"instance \\"i-0123456789\\" is in RUNNING"}'


def test_doc_input_path_resource_from_an_array_index():
    assert body(transformer('{"resource": <resource>}')) == \
        '{"resource":"arn:aws:ec2:us-east-1:123456789012:instance/i-abcd1111"}'


# --- the API reference's InputTransformer examples -------------------------------------------

API_PATHS = {"instance": "$.detail.instance", "status": "$.detail.status"}
API_EVENT = {**DOC_EVENT, "detail": {"instance": "i-0123456789", "status": "RUNNING"}}


def test_api_reference_template_that_is_not_json_is_sent_as_text():
    shaped = shape(transformer("<instance> is in state <status>", API_PATHS), API_EVENT)
    assert shaped == Shaped(b"i-0123456789 is in state RUNNING", False)


def test_api_reference_text_template_with_quotes_keeps_them():
    shaped = shape(transformer('<instance> is in state "<status>"', API_PATHS), API_EVENT)
    assert shaped == Shaped(b'i-0123456789 is in state "RUNNING"', False)


def test_api_reference_json_with_variables_in_quotes_or_out():
    template = '{"myInstance": <instance>,"myStatus": "<instance> is in state \\"<status>\\""}'
    got = json.loads(body(transformer(template, API_PATHS), API_EVENT))
    assert got == {"myInstance": "i-0123456789", "myStatus": 'i-0123456789 is in state "RUNNING"'}


# --- quoting: the page's "Common issues" and AWS's recorded answers ---------------------------

DETAIL = {"payload": {"acc_id": "0a787ecb-4015", "sf_id": "baz"}, "listmulti": ["ACTIVE", "INACTIVE"],
          "listsingle": ["HIGH"], "valid": True, "count": 5, "nothing": None}
EVENT = {**DOC_EVENT, "detail": DETAIL}
PATHS = {"payload": "$.detail.payload", "userId": "$.detail.payload.acc_id", "listmulti": "$.detail.listmulti",
         "listsingle": "$.detail.listsingle", "valid": "$.detail.valid", "count": "$.detail.count",
         "nothing": "$.detail.nothing", "absent": "$.detail.absent"}


def transformed(template: str, event=EVENT) -> str:
    return body(transformer(template, PATHS), event)


def test_a_bare_string_variable_gets_quotes():
    assert transformed('{"id": <userId>}') == '{"id":"0a787ecb-4015"}'


def test_a_quoted_string_variable_is_not_quoted_twice():
    assert transformed('{"id": "<userId>"}') == '{"id":"0a787ecb-4015"}'


def test_a_variable_inside_a_longer_string_goes_in_as_it_is():
    assert transformed('{"path": "users/<userId>/second/<userId>"}') == \
        '{"path":"users/0a787ecb-4015/second/0a787ecb-4015"}'


def test_an_object_variable_as_a_bare_value_is_json():
    assert transformed('{"bod": <payload>}') == '{"bod":{"acc_id":"0a787ecb-4015","sf_id":"baz"}}'


def test_an_object_inside_a_string_loses_its_internal_quotes():
    assert transformed('"Payload of <payload>"') == '"Payload of {acc_id:0a787ecb-4015,sf_id:baz}"'


def test_an_object_inside_a_string_of_a_json_object_loses_its_internal_quotes_too():
    # AWS fails such a delivery (LocalStack's recordings); busway writes it as AWS documents it.
    assert transformed('{"note": "Payload of <payload>"}') == '{"note":"Payload of {acc_id:0a787ecb-4015,sf_id:baz}"}'


def test_arrays_inside_a_string_lose_their_quotes():
    assert transformed('"<listsingle> and <listmulti>"') == '"[HIGH] and [ACTIVE,INACTIVE]"'


def test_an_array_variable_as_a_bare_value_is_json():
    assert transformed('{"items": <listmulti>}') == '{"items":["ACTIVE","INACTIVE"]}'


def test_numbers_and_booleans_inside_a_string_are_their_json_text():
    assert transformed('"Command is <valid>! (<count>)"') == '"Command is true! (5)"'


def test_numbers_booleans_and_null_as_bare_values_are_json():
    assert transformed('[<count>, <valid>, <nothing>]') == '[5,true,null]'


def test_a_missing_path_leaves_nothing_inside_a_string():
    assert transformed('"value: <absent>."') == '"value: ."'


def test_a_missing_path_is_an_empty_string_where_a_bare_value_stood():
    assert transformed('{"command": <absent>, "id": <userId>}') == '{"command":"","id":"0a787ecb-4015"}'


def test_a_missing_path_leaves_nothing_in_a_text_template():
    assert shape(transformer("value: <absent>.", PATHS), EVENT) == Shaped(b"value: .", False)


def test_a_wildcard_variable_is_the_array_of_its_matches():
    paths = {"ids": "$.detail.items[*].id"}
    event = {**EVENT, "detail": {"items": [{"id": 1}, {"x": 0}, {"id": 3}]}}
    assert body(transformer('{"ids": <ids>}', paths), event) == '{"ids":[1,3]}'


def test_the_output_is_minified_but_strings_keep_their_spaces():
    assert transformed('{ "a" :\t[ 1 ,\n 2 ] , "b" : " x  y " }') == '{"a":[1,2],"b":" x  y "}'


def test_a_json_string_template_keeps_its_outer_quotes():
    assert shape(transformer('"<userId>"', PATHS), EVENT) == Shaped(b'"0a787ecb-4015"', True)


def test_a_template_that_is_only_a_placeholder_sends_the_value_as_json():
    assert transformed("<payload>") == '{"acc_id":"0a787ecb-4015","sf_id":"baz"}'


def test_angle_brackets_with_spaces_are_plain_text():
    assert transformed('"1 < 2 > 0 and <count>"') == '"1 < 2 > 0 and 5"'


# --- busway's escaping policy (AWS does not escape; see bus/transform/values.py) ---------------

def test_a_quote_or_newline_in_an_event_value_is_escaped_inside_a_string():
    event = {**EVENT, "detail": {"payload": {"acc_id": 'say "hi"\nbye'}}}
    got = transformed('{"m": "user <userId> said"}', event)
    assert json.loads(got) == {"m": 'user say "hi"\nbye said'}


def test_a_quote_in_an_event_value_is_escaped_as_a_bare_value():
    event = {**EVENT, "detail": {"payload": {"acc_id": 'a"b\\c'}}}
    assert json.loads(transformed('{"id": <userId>}', event)) == {"id": 'a"b\\c'}


def test_quotes_inside_an_object_written_into_a_string_stay_valid_json():
    event = {**EVENT, "detail": {"payload": {"k": 'v"w'}}}
    assert json.loads(transformed('"<payload>"', event)) == '{k:v"w}'


def test_a_text_template_writes_values_unescaped():
    event = {**EVENT, "detail": {"payload": {"acc_id": 'a"b'}}}
    assert shape(transformer("id=<userId>", PATHS), event) == Shaped(b'id=a"b', False)


def test_unicode_values_stay_unicode():
    event = {**EVENT, "detail": {"payload": {"acc_id": "Zoë ✓"}}}
    assert json.loads(transformed('{"id": <userId>, "s": "<userId>"}', event)) == {"id": "Zoë ✓", "s": "Zoë ✓"}


# --- the predefined variables ----------------------------------------------------------------

def test_rule_arn_and_name_can_stand_inside_strings():
    assert transformed('"<aws.events.rule-name> at <aws.events.rule-arn>"') == f'"example at {RULE_ARN}"'


def test_ingestion_time_is_iso_8601_in_utc():
    assert transformed('{"at": <aws.events.event.ingestion-time>}') == '{"at":"2015-11-11T21:29:54Z"}'


def test_aws_events_event_is_the_event_without_detail_with_detail_type_as_aws_spells_it():
    got = json.loads(transformed('{"e": <aws.events.event>}'))["e"]
    expected = {k: v for k, v in EVENT.items() if k not in ("detail", "detail-type")}
    assert got == {**expected, "detailType": EVENT["detail-type"]}


def test_aws_events_event_json_is_the_whole_event():
    assert json.loads(transformed('{"e": <aws.events.event.json>}')) == {"e": EVENT}


def test_predefined_variables_need_no_paths_map():
    t = target(input_transformer=InputTransformer(input_template='"<aws.events.rule-name>"'))
    assert body(t) == '"example"'


# --- the other options -----------------------------------------------------------------------

def test_a_target_without_options_gets_the_event_as_stored_never_decoded():
    shaper = shaper_for(target())
    assert shaper.identity
    not_json = b"\xff not even json"
    assert shaper.apply(not_json, rule_arn=RULE_ARN, rule_name="example", ingestion_time=INGESTED) == Shaped(not_json, True)


def test_input_is_sent_as_written_whatever_the_event():
    t = target(input='{"fixed": [1, 2]}')
    assert not shaper_for(t).identity
    assert shape(t, b"not json") == Shaped(b'{"fixed": [1, 2]}', True)


def test_input_path_to_an_object_sends_it_as_json():
    assert body(target(input_path="$.detail")) == '{"instance-id":"i-0123456789","state":"RUNNING"}'


def test_input_path_to_a_string_sends_a_json_string():
    assert body(target(input_path="$.detail.state")) == '"RUNNING"'


def test_input_path_dollar_sends_the_whole_event_minified():
    assert json.loads(body(target(input_path="$"))) == DOC_EVENT


def test_input_path_that_matches_nothing_sends_null():
    assert body(target(input_path="$.detail.nope")) == "null"


def test_input_path_with_a_wildcard_sends_every_match():
    assert body(target(input_path="$.detail.*")) == '["i-0123456789","RUNNING"]'


def test_input_jmespath_sends_the_result_as_json():
    t = target(input_jmespath="{id: detail.\"instance-id\", where: region}")
    assert json.loads(body(t)) == {"id": "i-0123456789", "where": "us-east-1"}


def test_input_jmespath_without_a_result_sends_null():
    assert body(target(input_jmespath="detail.nope")) == "null"


def test_input_jmespath_runtime_error_fails_the_delivery():
    with pytest.raises(TransformFailed, match="abs"):
        shape(target(input_jmespath="abs(detail.state)"))


def test_every_target_kind_is_shaped_the_same():
    for t in (HttpTarget(id="h", http="dest", input_path="$.detail.state"),
              BusTarget(id="b", bus="other", input_path="$.detail.state")):
        assert body(t) == '"RUNNING"'


# --- failures and caching --------------------------------------------------------------------

def test_an_event_that_is_not_json_fails_a_transformer():
    with pytest.raises(TransformFailed, match="not JSON"):
        shape(transformer('"<state>"'), b"{broken")


def test_an_option_that_escaped_validation_fails_each_delivery_with_its_reason():
    with pytest.raises(TransformFailed, match="deep scan"):
        shape(target(input_path="$..state"))


def test_the_shaper_is_built_once_per_target_object():
    t = transformer('"<state>"')
    assert shaper_for(t) is shaper_for(t)


def test_equal_target_objects_get_equal_results():
    a, b = transformer('{"s": <state>}'), transformer('{"s": <state>}')
    assert shape(a) == shape(b)


def test_the_shaped_body_decodes_as_the_json_it_claims():
    shaped = shape(transformer('{"e": <aws.events.event.json>, "s": "<payload>"}', PATHS), EVENT)
    assert shaped.is_json and isinstance(msgspec.json.decode(shaped.body), dict)
