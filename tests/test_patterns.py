"""Event-pattern matching, operator by operator: the cases of AWS's EventBridge user guide
("Creating event patterns", "Content filtering", "Arrays", "Null values and empty strings")
and event-ruler's README, each as one named behaviour.

Every case is checked three ways: compile_pattern(p).matches, a Matcher holding the rule
alone (on each matching engine: compiled, when built, and pure Python), and the naive
reference evaluator.
"""
from __future__ import annotations

import json

import pytest

from bus.patterns import Matcher, compile_pattern
from bus.patterns.engine import ENGINES, using_engine
from bus.patterns.reference import reference_matches

EC2_EVENT = {
    "version": "0",
    "id": "6a7e8feb-b491-4cf7-a9f1-bf3703467718",
    "detail-type": "EC2 Instance State-change Notification",
    "source": "aws.ec2",
    "account": "111122223333",
    "time": "2017-12-22T18:43:48Z",
    "region": "us-west-1",
    "resources": ["arn:aws:ec2:us-west-1:123456789012:instance/i-1234567890abcdef0"],
    "detail": {"instance-id": "i-1234567890abcdef0", "state": "terminated"},
}


def case(name: str, pattern: dict, event: dict, expected: bool):
    return pytest.param(pattern, event, expected, id=name)


def check(pattern: dict | str, event: dict, expected: bool) -> None:
    assert compile_pattern(pattern).matches(event) is expected
    for engine in ENGINES:  # the compiled matching engine, when built, and the pure-Python one
        with using_engine(engine):
            matcher = Matcher()
            matcher.add("rule", pattern)
            assert matcher.matches(event) == (["rule"] if expected else []), engine
            assert matcher.matches_json(json.dumps(event)) == (["rule"] if expected else []), engine
    raw = json.loads(pattern) if isinstance(pattern, str) else pattern
    assert reference_matches(raw, event) is expected


STRUCTURE = [
    case("exact strings match the same string",
         {"source": ["aws.ec2"]}, EC2_EVENT, True),
    case("exact strings are case sensitive",
         {"source": ["AWS.EC2"]}, EC2_EVENT, False),
    case("several values in one list are alternatives",
         {"source": ["aws.fargate", "aws.ec2"]}, EC2_EVENT, True),
    case("several fields must all match",
         {"source": ["aws.ec2"], "detail-type": ["Something Else"]}, EC2_EVENT, False),
    case("fields of nested objects match at the same nesting",
         {"source": ["aws.ec2"], "detail": {"state": ["terminated"]}}, EC2_EVENT, True),
    case("a field at another nesting does not match",
         {"state": ["terminated"]}, EC2_EVENT, False),
    case("event fields the pattern does not mention are ignored",
         {"detail": {"instance-id": ["i-1234567890abcdef0"]}}, EC2_EVENT, True),
    case("a field missing from the event does not match",
         {"detail": {"reason": ["x"]}}, EC2_EVENT, False),
    case("an event array matches when one of its elements matches",
         {"resources": ["arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]},
         {"resources": ["arn:aws:autoscaling:us-east-1:123456789012:autoScalingGroup:x",
                        "arn:aws:ec2:us-east-1:123456789012:instance/i-b188560f"]}, True),
    case("an event array with no matching element does not match",
         {"resources": ["arn:b"]}, {"resources": ["arn:a", "arn:c"]}, False),
    case("an empty event array offers no value",
         {"resources": ["arn:a"]}, {"resources": []}, False),
    case("a leaf pattern does not match an object value",
         {"detail": ["terminated"]}, EC2_EVENT, False),
    case("a nested pattern does not match a scalar value",
         {"source": {"name": ["aws.ec2"]}}, EC2_EVENT, False),
]

ARRAYS_OF_OBJECTS = [
    case("a nested pattern matches an array of objects when one object matches",
         {"employees": {"firstName": ["Anna"]}},
         {"employees": [{"firstName": "John", "lastName": "Doe"}, {"firstName": "Anna", "lastName": "Smith"}]},
         True),
    case("fields of one nested pattern must come from the same array element",
         {"employees": {"firstName": ["Anna"], "lastName": ["Jones"]}},
         {"employees": [{"firstName": "Anna", "lastName": "Smith"}, {"firstName": "Peter", "lastName": "Jones"}]},
         False),
    case("fields of one nested pattern may both come from one array element",
         {"employees": {"firstName": ["Peter"], "lastName": ["Jones"]}},
         {"employees": [{"firstName": "Anna", "lastName": "Smith"}, {"firstName": "Peter", "lastName": "Jones"}]},
         True),
    case("arrays of arrays of objects are flattened",
         {"employees": {"firstName": ["Peter"]}},
         {"employees": [[{"firstName": "John"}], [{"firstName": "Peter"}]]}, True),
    case("exists false holds when one array element lacks the field",
         {"items": {"sku": ["a"], "gift": [{"exists": False}]}},
         {"items": [{"sku": "b", "gift": True}, {"sku": "a"}]}, True),
    case("exists false fails when the matching element has the field",
         {"items": {"sku": ["a"], "gift": [{"exists": False}]}},
         {"items": [{"sku": "a", "gift": True}, {"sku": "b"}]}, False),
]

VALUES = [
    case("numbers match numerically, so 300 matches 300.0",
         {"detail": {"count": [300]}}, {"detail": {"count": 300.0}}, True),
    case("a number does not match the same digits as a string",
         {"detail": {"count": [300]}}, {"detail": {"count": "300"}}, False),
    case("a string does not match the same digits as a number",
         {"detail": {"count": ["300"]}}, {"detail": {"count": 300}}, False),
    case("true matches true",
         {"detail": {"ok": [True]}}, {"detail": {"ok": True}}, True),
    case("true does not match the number 1",
         {"detail": {"ok": [True]}}, {"detail": {"ok": 1}}, False),
    case("the number 1 does not match true",
         {"detail": {"ok": [1]}}, {"detail": {"ok": True}}, False),
    case("false does not match 0",
         {"detail": {"ok": [False]}}, {"detail": {"ok": 0}}, False),
    case("null matches null",
         {"detail": {"responseElements": [None]}}, {"detail": {"responseElements": None}}, True),
    case("null does not match a missing field",
         {"detail": {"responseElements": [None]}}, {"detail": {}}, False),
    case("null does not match an empty string",
         {"detail": {"eventVersion": [None]}}, {"detail": {"eventVersion": ""}}, False),
    case("the empty string matches the empty string",
         {"detail": {"eventVersion": [""]}}, {"detail": {"eventVersion": ""}}, True),
    case("the empty string does not match null",
         {"detail": {"eventVersion": [""]}}, {"detail": {"eventVersion": None}}, False),
]

PREFIX_SUFFIX = [
    case("prefix matches a string starting with it",
         {"time": [{"prefix": "2017-10-02"}]}, {"time": "2017-10-02T18:43:48Z"}, True),
    case("prefix does not match a string containing it later",
         {"time": [{"prefix": "10-02"}]}, {"time": "2017-10-02T18:43:48Z"}, False),
    case("prefix does not match a number",
         {"year": [{"prefix": "20"}]}, {"year": 2017}, False),
    case("an empty prefix matches any string",
         {"name": [{"prefix": ""}]}, {"name": "anything"}, True),
    case("an empty prefix does not match a number",
         {"name": [{"prefix": ""}]}, {"name": 5}, False),
    case("prefix with equals-ignore-case ignores the case of the start",
         {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}, {"service": "eventbridge"}, True),
    case("prefix with equals-ignore-case still needs the start",
         {"service": [{"prefix": {"equals-ignore-case": "EventB"}}]}, {"service": "myeventbridge"}, False),
    case("suffix matches a string ending with it",
         {"FileName": [{"suffix": ".png"}]}, {"FileName": "image.png"}, True),
    case("suffix is case sensitive",
         {"FileName": [{"suffix": ".png"}]}, {"FileName": "image.PNG"}, False),
    case("suffix with equals-ignore-case ignores the case of the end",
         {"FileName": [{"suffix": {"equals-ignore-case": ".png"}}]}, {"FileName": "image.PNG"}, True),
]

IGNORE_CASE = [
    case("equals-ignore-case matches any casing",
         {"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "ALICE"}, True),
    case("equals-ignore-case needs the whole string",
         {"Name": [{"equals-ignore-case": "alice"}]}, {"Name": "Alicia"}, False),
    case("equals-ignore-case does not match a number",
         {"code": [{"equals-ignore-case": "1"}]}, {"code": 1}, False),
    case("equals-ignore-case accepts each letter's upper-case form, even a longer one",
         {"street": [{"equals-ignore-case": "straße"}]}, {"street": "STRASSE"}, True),
    case("equals-ignore-case does not fold the value beyond the operand's two forms",
         {"street": [{"equals-ignore-case": "STRASSE"}]}, {"street": "straße"}, False),
]

ANYTHING_BUT = [
    case("anything-but a string matches any other string",
         {"detail": {"state": [{"anything-but": "initializing"}]}}, {"detail": {"state": "running"}}, True),
    case("anything-but a string does not match that string",
         {"detail": {"state": [{"anything-but": "initializing"}]}}, {"detail": {"state": "initializing"}}, False),
    case("anything-but does not match a missing field",
         {"detail": {"state": [{"anything-but": "initializing"}]}}, {"detail": {}}, False),
    case("anything-but a number matches another number",
         {"detail": {"x-limit": [{"anything-but": 123}]}}, {"detail": {"x-limit": 124}}, True),
    case("anything-but a number excludes numerically equal numbers",
         {"detail": {"x-limit": [{"anything-but": [100, 200, 300]}]}}, {"detail": {"x-limit": 300.0}}, False),
    case("anything-but a number matches the same digits as a string",
         {"detail": {"x-limit": [{"anything-but": 123}]}}, {"detail": {"x-limit": "123"}}, True),
    case("anything-but a list excludes every listed string",
         {"detail": {"state": [{"anything-but": ["stopped", "overloaded"]}]}}, {"detail": {"state": "overloaded"}}, False),
    case("anything-but matches an event array holding one allowed value",
         {"detail": {"state": [{"anything-but": "stopped"}]}}, {"detail": {"state": ["stopped", "running"]}}, True),
    case("anything-but does not match an event array of only excluded values",
         {"detail": {"state": [{"anything-but": "stopped"}]}}, {"detail": {"state": ["stopped", "stopped"]}}, False),
    case("anything-but prefix excludes strings with that prefix",
         {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}, {"detail": {"state": "initializing"}}, False),
    case("anything-but prefix matches strings without that prefix",
         {"detail": {"state": [{"anything-but": {"prefix": "init"}}]}}, {"detail": {"state": "running"}}, True),
    case("anything-but suffix excludes strings with that suffix",
         {"FileName": [{"anything-but": {"suffix": ".png"}}]}, {"FileName": "a.png"}, False),
    case("anything-but equals-ignore-case excludes every casing",
         {"state": [{"anything-but": {"equals-ignore-case": "initializing"}}]}, {"state": "INITIALIZING"}, False),
    case("anything-but equals-ignore-case list matches other strings",
         {"state": [{"anything-but": {"equals-ignore-case": ["a", "b"]}}]}, {"state": "C"}, True),
    case("anything-but wildcard excludes matching strings",
         {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}, {"FilePath": "/usr/lib/libc.so"}, False),
    case("anything-but wildcard matches other strings",
         {"FilePath": [{"anything-but": {"wildcard": "*/lib/*"}}]}, {"FilePath": "/usr/bin/ls"}, True),
]

NUMERIC = [
    case("numeric range includes its closed upper bound",
         {"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}, {"detail": {"c-count": 5}}, True),
    case("numeric range excludes its open lower bound",
         {"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}, {"detail": {"c-count": 0}}, False),
    case("numeric range excludes values above it",
         {"detail": {"c-count": [{"numeric": [">", 0, "<=", 5]}]}}, {"detail": {"c-count": 5.5}}, False),
    case("numeric less-than matches smaller numbers",
         {"detail": {"d-count": [{"numeric": ["<", 10]}]}}, {"detail": {"d-count": -3}}, True),
    case("numeric greater-or-equal includes the bound",
         {"price": [{"numeric": [">=", 10]}]}, {"price": 10}, True),
    case("numeric equals compares numbers, so 3.018e2 matches 301.8",
         {"detail": {"x-limit": [{"numeric": ["=", 3.018e2]}]}}, {"detail": {"x-limit": 301.8}}, True),
    case("numeric never matches a string",
         {"price": [{"numeric": [">", 0]}]}, {"price": "5"}, False),
    case("numeric never matches a boolean",
         {"price": [{"numeric": [">", 0]}]}, {"price": True}, False),
    case("numeric matches any element of an event array",
         {"price": [{"numeric": [">", 100]}]}, {"price": [5, 500]}, True),
]

EXISTS = [
    case("exists true matches a present leaf",
         {"detail": {"state": [{"exists": True}]}}, EC2_EVENT, True),
    case("exists true does not match a missing field",
         {"detail": {"c-count": [{"exists": True}]}}, EC2_EVENT, False),
    case("exists true counts null as present",
         {"detail": {"state": [{"exists": True}]}}, {"detail": {"state": None}}, True),
    case("exists true does not match an intermediate object",
         {"detail": {"c-count": [{"exists": True}]}}, {"detail": {"c-count": {"c1": 100}}}, False),
    case("exists false matches a missing field",
         {"detail": {"c-count": [{"exists": False}]}}, EC2_EVENT, True),
    case("exists false matches when the field is an intermediate object",
         {"detail": {"c-count": [{"exists": False}]}}, {"detail": {"c-count": {"c1": 100}}}, True),
    case("exists false does not match a present leaf",
         {"detail": {"state": [{"exists": False}]}}, EC2_EVENT, False),
    case("exists false matches when the parent object is missing",
         {"detail": {"state": [{"exists": False}]}}, {"source": "x"}, True),
    case("exists false or a value matches the value",
         {"detail": {"state": ["terminated", {"exists": False}]}}, EC2_EVENT, True),
]

CIDR = [
    case("cidr matches an IPv4 address inside the block",
         {"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}}, {"detail": {"sourceIPAddress": "10.0.0.255"}}, True),
    case("cidr does not match an IPv4 address outside the block",
         {"detail": {"sourceIPAddress": [{"cidr": "10.0.0.0/24"}]}}, {"detail": {"sourceIPAddress": "10.0.1.1"}}, False),
    case("cidr ignores host bits in the block",
         {"ip": [{"cidr": "10.0.0.5/24"}]}, {"ip": "10.0.0.1"}, True),
    case("cidr matches an IPv6 address inside the block",
         {"ip": [{"cidr": "2001:db8::/32"}]}, {"ip": "2001:db8:0:1::7"}, True),
    case("cidr does not match an address of the other family",
         {"ip": [{"cidr": "0.0.0.0/0"}]}, {"ip": "::1"}, False),
    case("cidr does not match a string that is not an address",
         {"ip": [{"cidr": "10.0.0.0/8"}]}, {"ip": "example.com"}, False),
    case("cidr does not match a number",
         {"ip": [{"cidr": "0.0.0.0/0"}]}, {"ip": 167772161}, False),
]

WILDCARD = [
    case("wildcard matches any run of characters",
         {"source": [{"wildcard": "Simple*Service"}]}, {"source": "SimpleQueueService"}, True),
    case("wildcard matches an empty run",
         {"source": [{"wildcard": "Simple*Service"}]}, {"source": "SimpleService"}, True),
    case("wildcard must match the whole string",
         {"source": [{"wildcard": "Simple*Service"}]}, {"source": "SimpleQueueServices"}, False),
    case("wildcard with several stars",
         {"key": [{"wildcard": "dir/*/*.png"}]}, {"key": "dir/a/b.png"}, True),
    case("an escaped star matches a literal star",
         {"key": [{"wildcard": "a\\*b"}]}, {"key": "a*b"}, True),
    case("an escaped star does not act as a wildcard",
         {"key": [{"wildcard": "a\\*b"}]}, {"key": "axb"}, False),
    case("wildcard does not match a number",
         {"key": [{"wildcard": "*"}]}, {"key": 1}, False),
]

OR = [
    case("$or matches when one branch matches",
         {"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}]},
         {"source": "aws.cloudwatch", "namespace": "AWS/EC2"}, True),
    case("$or does not match when no branch matches",
         {"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}]},
         {"source": "aws.cloudwatch", "namespace": "AWS/ES"}, False),
    case("$or still requires the fields beside it",
         {"source": ["aws.cloudwatch"], "$or": [{"metricName": ["CPUUtilization"]}, {"namespace": ["AWS/EC2"]}]},
         {"source": "aws.ec2", "namespace": "AWS/EC2"}, False),
    case("$or inside a nested object",
         {"detail": {"$or": [{"c-count": [{"numeric": [">", 0, "<=", 5]}]}, {"d-count": [{"numeric": ["<", 10]}]}]}},
         {"detail": {"c-count": 50, "d-count": 3}}, True),
    case("$or branches can hold several fields and another $or",
         {"source": ["aws.cloudwatch"],
          "$or": [{"metricName": ["CPUUtilization"]},
                  {"metricType": ["MetricType"], "$or": [{"metricId": [1234]}, {"spaceId": [1000]}]}]},
         {"source": "aws.cloudwatch", "metricType": "MetricType", "spaceId": 1000}, True),
    case("$or with an object value is an ordinary field name",
         {"$or": {"metricType": ["MetricType"]}}, {"$or": {"metricType": "MetricType"}}, True),
    case("a leaf written both beside and inside $or keeps the last write",
         {"a": ["1"], "$or": [{"a": ["2"]}, {"b": ["3"]}]}, {"a": "2"}, True),
]


@pytest.mark.parametrize("pattern, event, expected",
                         STRUCTURE + ARRAYS_OF_OBJECTS + VALUES + PREFIX_SUFFIX + IGNORE_CASE
                         + ANYTHING_BUT + NUMERIC + EXISTS + CIDR + WILDCARD)
def test_pattern_semantics(pattern, event, expected):
    check(pattern, event, expected)


@pytest.mark.parametrize("pattern, event, expected", OR)
def test_or_semantics(pattern, event, expected):
    # The reference reads $or directly; the last case is one where only expansion is right.
    assert compile_pattern(pattern).matches(event) is expected
    for engine in ENGINES:
        with using_engine(engine):
            matcher = Matcher()
            matcher.add("rule", pattern)
            assert matcher.matches(event) == (["rule"] if expected else []), engine


def test_numbers_in_json_text_match_numerically():
    check('{"detail": {"count": [3.0e2]}}', {"detail": {"count": 300}}, True)


def test_a_repeated_key_keeps_its_last_value():
    pattern = '{"detail": {"location": [{"prefix": "us-"}], "location": [{"anything-but": "us-east"}]}}'
    assert compile_pattern(pattern).matches({"detail": {"location": "eu-west"}})
    assert not compile_pattern(pattern).matches({"detail": {"location": "us-east"}})


def test_a_leaf_written_beside_and_inside_or_loses_the_earlier_write():
    pattern = {"a": ["1"], "$or": [{"a": ["2"]}, {"b": ["3"]}]}
    assert not compile_pattern(pattern).matches({"a": "1"})
    assert compile_pattern(pattern).matches({"a": "1", "b": "3"})


def test_a_non_object_event_matches_nothing():
    assert not compile_pattern({"a": [{"exists": False}]}).matches([1, 2])
