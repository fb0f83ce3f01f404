"""Invalid event patterns: each is refused with AWS's reason and says where.

Reasons are EventBridge's wording (event-ruler's messages, as EventBridge returns them in
InvalidEventPatternException); the location is the dotted path of the offending field.
"""
from __future__ import annotations

import pytest

from bus.patterns import Matcher, PatternError, compile_pattern


def invalid(name: str, pattern, reason: str, path: str | None):
    return pytest.param(pattern, reason, path, id=name)


CASES = [
    # the pattern as a whole
    invalid("a pattern must be a JSON object", "[1, 2]", "Filter is not an object", None),
    invalid("a pattern must be JSON", '{"source": ["aws.ec2"]', None, None),
    invalid("an empty pattern is refused", {}, "Empty objects are not allowed", None),
    invalid("an empty nested object is refused", {"detail": {}}, "Empty objects are not allowed", "detail"),
    # leaves
    invalid("a leaf must be a list", {"source": "aws.ec2"}, '"source" must be an object or an array', "source"),
    invalid("a nested leaf must be a list", {"detail": {"slug": "x"}}, '"slug" must be an object or an array', "detail.slug"),
    invalid("a leaf list may not be empty", {"source": []}, "Empty arrays are not allowed", "source"),
    invalid("a leaf list may not hold a list", {"source": [["a"]]},
            "Match value must be String, number, true, false, or null", "source"),
    # match expressions
    invalid("an unknown operator is refused", {"detail": {"type": [{"contains": "x"}]}},
            "Unrecognized match type contains", "detail.type"),
    invalid("an empty match expression is refused", {"a": [{}]}, "Match expression name not found", "a"),
    invalid("a match expression has one operator", {"a": [{"prefix": "x", "suffix": "y"}]},
            "Only one key allowed in match expression", "a"),
    invalid("prefix takes a string", {"a": [{"prefix": 5}]}, "prefix match pattern must be a string", "a"),
    invalid("suffix takes a string", {"a": [{"suffix": None}]}, "suffix match pattern must be a string", "a"),
    invalid("prefix nests only equals-ignore-case", {"a": [{"prefix": {"wildcard": "x"}}]},
            "Unsupported prefix pattern: wildcard", "a"),
    invalid("suffix equals-ignore-case takes a string", {"a": [{"suffix": {"equals-ignore-case": 1}}]},
            "equals-ignore-case match pattern must be a string", "a"),
    invalid("equals-ignore-case takes a string", {"a": [{"equals-ignore-case": ["x"]}]},
            "equals-ignore-case match pattern must be a string", "a"),
    invalid("exists takes a boolean", {"a": [{"exists": "yes"}]},
            "exists match pattern must be either true or false.", "a"),
    # numeric
    invalid("numeric takes an array", {"detail": {"c-count": [{"numeric": 5}]}},
            "Value of numeric must be an array.", "detail.c-count"),
    invalid("numeric may not be empty", {"a": [{"numeric": []}]}, "Invalid member in numeric match: ]", "a"),
    invalid("numeric starts with an operator", {"a": [{"numeric": [5, ">"]}]}, "Invalid member in numeric match: 5", "a"),
    invalid("numeric operators are =, <, <=, >, >=", {"a": [{"numeric": ["!=", 5]}]},
            "Unrecognized numeric range operator: !=", "a"),
    invalid("numeric compares with numbers", {"a": [{"numeric": [">", "5"]}]}, "Value of > must be numeric", "a"),
    invalid("numeric equals compares with a number", {"a": [{"numeric": ["=", True]}]},
            "Value of equals must be numeric", "a"),
    invalid("numeric equals takes one number", {"a": [{"numeric": ["=", 5, "<", 6]}]},
            "Too many elements in numeric expression", "a"),
    invalid("a numeric range starts with its lower bound", {"a": [{"numeric": ["<", 5, ">", 1]}]},
            "Too many elements in numeric expression", "a"),
    invalid("a numeric range ends with < or <=", {"a": [{"numeric": [">", 0, ">", 5]}]},
            "Bad numeric range operator: >", "a"),
    invalid("a numeric range upper bound is a number", {"a": [{"numeric": [">", 0, "<", None]}]},
            "Value of < must be numeric", "a"),
    invalid("a numeric range has at most two comparisons", {"a": [{"numeric": [">", 0, "<", 5, "<", 6]}]},
            "Too many terms in numeric range expression", "a"),
    invalid("a numeric range must not be empty", {"a": [{"numeric": [">", 5, "<=", 5]}]},
            "Bottom must be less than top", "a"),
    invalid("numeric bounds stay within AWS's range", {"a": [{"numeric": [">", 6e9]}]},
            "Value must be between -5.0E9 and 5.0E9, inclusive", "a"),
    invalid("numeric and another key is too many elements", {"a": [{"numeric": [">", 1], "prefix": "x"}]},
            "Too many elements in numeric expression", "a"),
    # anything-but
    invalid("anything-but may not mix strings and numbers", {"a": [{"anything-but": ["x", 1]}]},
            "Inside anything but list, either all values are number or string, mixed type is not supported", "a"),
    invalid("anything-but lists hold no null or booleans", {"a": [{"anything-but": ["x", None]}]},
            "Inside anything but list, start|null|boolean is not supported.", "a"),
    invalid("anything-but takes a string, a number or a list", {"a": [{"anything-but": True}]},
            "Value of anything-but must be an array or single string/number value.", "a"),
    invalid("anything-but nests only prefix, suffix, equals-ignore-case and wildcard",
            {"a": [{"anything-but": {"numeric": [">", 1]}}]}, "Unsupported anything-but pattern: numeric", "a"),
    invalid("anything-but prefix may not be empty", {"a": [{"anything-but": {"prefix": ""}}]},
            "Null prefix/suffix not allowed", "a"),
    invalid("anything-but suffix takes strings", {"a": [{"anything-but": {"suffix": [1]}}]},
            "prefix/suffix match pattern must be a string", "a"),
    invalid("anything-but equals-ignore-case takes strings", {"a": [{"anything-but": {"equals-ignore-case": 5}}]},
            "Inside anything-but/equals-ignore-case list, number|start|null|boolean is not supported.", "a"),
    invalid("anything-but numbers stay within AWS's range", {"a": [{"anything-but": [1, 6e9]}]},
            "Value must be between -5.0E9 and 5.0E9, inclusive", "a"),
    # wildcard
    invalid("wildcard takes a string", {"a": [{"wildcard": 5}]}, "wildcard match pattern must be a string", "a"),
    invalid("wildcard refuses consecutive stars", {"a": [{"wildcard": "h**o"}]},
            "Consecutive wildcard characters at pos 2", "a"),
    invalid("wildcard positions count UTF-8 bytes of the quoted operand", {"a": [{"wildcard": "é**"}]},
            "Consecutive wildcard characters at pos 3", "a"),
    invalid("wildcard escapes only star and backslash", {"a": [{"wildcard": "a\\b"}]},
            "Invalid escape character at pos 2", "a"),
    invalid("wildcard may not end with a lone backslash", {"a": [{"wildcard": "ab\\"}]},
            "Invalid escape character at pos 3", "a"),
    invalid("anything-but wildcard is checked too", {"a": [{"anything-but": {"wildcard": ["x", "**"]}}]},
            "Consecutive wildcard characters at pos 1", "a"),
    invalid("too many wildcard paths on one field is too complex",
            {"key": [{"wildcard": f"*/datasync/*.{ext}"} for ext in ("bif", "tif", "tiff", "svs")]},
            "Rule is too complex - try using fewer wildcard characters or fewer repeating character "
            "sequences after a wildcard character", "key"),
    invalid("a wildcard with many stars is too complex", {"key": [{"wildcard": "*a*b*c*d*e*f*g*h*i*j*k*"}]},
            "Rule is too complex - try using fewer wildcard characters or fewer repeating character "
            "sequences after a wildcard character", "key"),
    # cidr
    invalid("cidr takes a string", {"ip": [{"cidr": 10}]}, "prefix match pattern must be a string", "ip"),
    invalid("cidr needs a slash", {"ip": [{"cidr": "10.0.0.0"}]}, "Malformed CIDR, one '/' required", "ip"),
    invalid("cidr mask bits are an integer", {"ip": [{"cidr": "10.0.0.0/x"}]},
            "Malformed CIDR, mask bits must be an integer", "ip"),
    invalid("cidr mask bits are not negative", {"ip": [{"cidr": "10.0.0.0/-1"}]},
            "Malformed CIDR, mask bits must not be negative", "ip"),
    invalid("cidr needs a whole address", {"ip": [{"cidr": "10.0.0/8"}]}, "Nonstandard IP address: 10.0.0", "ip"),
    invalid("IPv4 cidr mask is below 32", {"ip": [{"cidr": "10.0.0.0/32"}]}, "IPv4 mask bits must be < 32", "ip"),
    invalid("IPv6 cidr mask is below 128", {"ip": [{"cidr": "2001:db8::/128"}]}, "IPv6 mask bits must be < 128", "ip"),
    # $or
    invalid("$or needs at least two branches", {"$or": [{"a": ["x"]}]},
            "There must have at least 2 Objects in $or relationship.", "$or"),
    invalid("$or branches are objects", {"detail": {"$or": [{"a": ["x"]}, "b"]}},
            "Only JSON object is allowed in array of $or relationship.", "detail.$or[1]"),
    invalid("operator names are reserved inside $or", {"$or": [{"a": ["x"]}, {"b": {"prefix": ["y"]}}]},
            "prefix is Ruler reserved fieldName which cannot be used inside $or.", "$or[1].b.prefix"),
    invalid("errors inside $or branches name the branch", {"$or": [{"a": ["x"]}, {"b": [{"numeric": [">", "1"]}]}]},
            "Value of > must be numeric", "$or[1].b"),
    invalid("$or may not multiply out to more than 1000 combinations",
            {f"k{i}": {"$or": [{f"x{j}": ["1"]} for j in range(6)]} for i in range(4)},
            "Event pattern contains more than 1000 rule combinations", None),
]


@pytest.mark.parametrize("pattern, reason, path", CASES)
def test_invalid_pattern_is_refused_with_aws_reason_and_location(pattern, reason, path):
    with pytest.raises(PatternError) as caught:
        compile_pattern(pattern)
    err = caught.value
    assert str(err).startswith("Event pattern is not valid. Reason: ")
    if reason is not None:
        assert err.reason == reason
    assert err.path == path
    if path:
        assert str(err).endswith(f" at [path: {path}]")


def test_error_message_reads_like_aws():
    with pytest.raises(PatternError) as caught:
        compile_pattern('{"detail": {"c-count": [{"numeric": 5}]}}')
    assert str(caught.value) == ("Event pattern is not valid. Reason: Value of numeric must be an array."
                                 " at [path: detail.c-count]")


def test_invalid_json_error_says_where_parsing_stopped():
    with pytest.raises(PatternError) as caught:
        compile_pattern('{"source": ["aws.ec2"],, "detail": {}}')
    assert caught.value.reason.startswith("Filter is not valid JSON: ")
    assert "(byte 23)" in caught.value.reason


def test_pattern_error_is_a_value_error():
    assert issubclass(PatternError, ValueError)


def test_matcher_refuses_an_invalid_pattern_and_keeps_its_rules():
    matcher = Matcher()
    matcher.add("good", {"source": ["a"]})
    with pytest.raises(PatternError):
        matcher.add("bad", {"source": "a"})
    assert matcher.matches({"source": "a"}) == ["good"]
    assert "bad" not in matcher


VALID = [
    pytest.param({"$or": [{"numeric": [">", 1]}, {"prefix": "a"}]},
                 id="$or holding operator objects is an ordinary field named $or"),
    pytest.param({"a": [{"exactly": "x"}]}, id="exactly is event-ruler's spelling of a string match"),
    pytest.param({"a": [{"prefix": ""}]}, id="an empty prefix is allowed"),
    pytest.param({"a": [{"numeric": [">=", -5e9, "<=", 5e9]}]}, id="numeric bounds may be the range limits"),
    pytest.param({"a": [{"anything-but": {"prefix": ["x", "y"]}}]}, id="anything-but prefix takes a list"),
    pytest.param({"key": [{"wildcard": f"*.{ext}"} for ext in ("bif", "tiff", "tif", "svs")]},
                 id="four suffix-like wildcards on one field are not too complex"),
    pytest.param({"key": [{"wildcard": f"*/datasync/*.{ext}"} for ext in ("bif", "tif")]},
                 id="two two-star wildcards on one field are not too complex"),
    pytest.param({"a": [{"cidr": "10.0.0.0/31"}, {"cidr": "::/0"}]}, id="cidr blocks of both families"),
    pytest.param({"a": [1e20]}, id="exact numbers are not limited to the numeric range"),
]


@pytest.mark.parametrize("pattern", VALID)
def test_valid_pattern_compiles(pattern):
    compile_pattern(pattern)
