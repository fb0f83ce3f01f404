"""bus.transform.jsonpath: EventBridge's JSONPath subset, its matches and its refusals."""
import pytest

from bus.transform.jsonpath import MAX_PATH_CHARS, PathError, compile_path

DOC = {
    "detail-type": "x",
    "detail": {
        "instance-id": "i-1",
        "under_score": 1,
        "a/b": "slash",
        "nothing": None,
        "items": [{"id": 1, "tags": ["t1", "t2"]}, {"name": "no id"}, {"id": 3, "tags": []}],
        "matrix": [[1, 2], [3, 4]],
        "0": "zero key",
    },
    "resources": ["r0", "r1"],
}


def find(path: str, doc=DOC):
    return compile_path(path).find(doc)


def test_dollar_alone_is_the_whole_document():
    assert find("$") == [DOC]


def test_names_may_have_dashes_underscores_and_slashes():
    assert find("$.detail-type") == ["x"]
    assert find("$.detail.instance-id") == ["i-1"]
    assert find("$.detail.under_score") == [1]
    assert find("$.detail.a/b") == ["slash"]


def test_a_digit_name_is_a_member_not_an_index():
    assert find("$.detail.0") == ["zero key"]
    assert find("$.resources.0") == []


def test_array_indices_pick_one_element():
    assert find("$.resources[1]") == ["r1"]
    assert find("$.detail.matrix[1][0]") == [3]
    assert find("$.detail.items[0].tags[1]") == ["t2"]


def test_an_index_past_the_end_matches_nothing():
    assert find("$.resources[2]") == []


def test_an_index_on_an_object_and_a_name_on_an_array_match_nothing():
    assert find("$.detail[0]") == []
    assert find("$.resources.length") == []


def test_a_missing_member_matches_nothing_but_a_null_member_matches_null():
    assert find("$.detail.nope") == []
    assert find("$.detail.nope.deeper") == []
    assert find("$.detail.nothing") == [None]


def test_stepping_into_a_scalar_matches_nothing():
    assert find("$.detail-type.inner") == []
    assert find("$.detail-type[0]") == []


def test_wildcard_on_an_array_is_every_element_in_order():
    assert find("$.resources[*]") == ["r0", "r1"]
    assert find("$.resources.*") == ["r0", "r1"]


def test_wildcard_on_an_object_is_every_member_value_in_document_order():
    assert find("$.detail.items[0].*") == [1, ["t1", "t2"]]
    assert find("$.detail.items[0][*]") == [1, ["t1", "t2"]]


def test_wildcard_then_name_skips_elements_without_it():
    assert find("$.detail.items[*].id") == [1, 3]


def test_nested_wildcards_flatten_in_document_order():
    assert find("$.detail.items[*].tags[*]") == ["t1", "t2"]
    assert find("$.detail.matrix[*][*]") == [1, 2, 3, 4]


def test_wildcard_on_a_scalar_matches_nothing():
    assert find("$.detail-type.*") == []


def test_a_path_on_a_document_that_is_not_an_object():
    assert find("$.a", ["x"]) == []
    assert find("$[0]", ["x"]) == ["x"]
    assert find("$", "text") == ["text"]


def test_definite_paths_know_they_have_at_most_one_match():
    assert compile_path("$.detail.items[0].id").definite
    assert not compile_path("$.detail.items[*].id").definite


@pytest.mark.parametrize("path, says", [
    ("detail.id", "must start with $"),
    ("", "must start with $"),
    ("$..id", "deep scan"),
    ("$['detail']", "use dot notation"),
    ('$["detail"]', "use dot notation"),
    ("$.items[-1]", "array index"),
    ("$.items[0:2]", "array index"),
    ("$.items[?(@.id)]", "array index"),
    ("$.items[]", "array index"),
    ("$.detail.", "expected a member name"),
    ("$.detail id", "unexpected ' '"),
    ("$ .detail", "unexpected ' '"),
    ("$.a.b$", "unexpected '$'"),
    ("$.a@b", "unexpected '@'"),
    ("$.a*", "unexpected '*'"),
])
def test_paths_aws_does_not_accept_are_refused_with_a_reason(path, says):
    with pytest.raises(PathError, match=None) as refused:
        compile_path(path)
    assert says in str(refused.value)


def test_a_refusal_says_where():
    with pytest.raises(PathError, match=r"at character 9"):
        compile_path("$.detail..x")


def test_a_path_may_have_256_characters_not_257():
    name = "a" * (MAX_PATH_CHARS - 2)
    assert compile_path("$." + name).find({name: 1}) == [1]
    with pytest.raises(PathError, match="at most 256 characters"):
        compile_path("$." + name + "b")


def test_a_path_that_is_not_text_is_refused():
    with pytest.raises(PathError, match="text"):
        compile_path(5)
