"""The condition language of conditional refresh (`refresh.conditions`): every operator,
precedence, `not`, parentheses, and the refusals (unknown names, Python in disguise, huge or
deeply nested conditions) that are a 400 INVALID_CONDITION listing the facts."""

import re

import pytest

from refresh.conditions import (
    CONDITION_PATTERN,
    FACTS,
    MAX_CONDITION_DEPTH,
    MAX_CONDITION_LENGTH,
    ConditionInvalidError,
    condition_normalized,
    condition_parse,
)

FACTS_NOW = {
    "file_count": 12,
    "new_files": 3,
    "changed_files": 0,
    "files_to_process": 12,
    "bytes_to_process": 4096,
    "failed_files": 1,
    "hours_since_last_refresh": 30.5,
}


def holds(text: str, **facts) -> bool:
    return condition_parse(text).evaluate({**FACTS_NOW, **facts})


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("new_files == 3", True),
        ("new_files == 4", False),
        ("new_files != 4", True),
        ("new_files != 3", False),
        ("new_files < 4", True),
        ("new_files < 3", False),
        ("new_files <= 3", True),
        ("new_files <= 2", False),
        ("new_files > 2", True),
        ("new_files > 3", False),
        ("new_files >= 3", True),
        ("new_files >= 4", False),
        ("hours_since_last_refresh > 30.25", True),
        ("hours_since_last_refresh >= 30.5", True),
        ("hours_since_last_refresh < 30.5", False),
        ("changed_files > -1", True),
        ("3 == new_files", True),  # a number on the left
        ("files_to_process == file_count", True),  # two facts
        ("1 < 2", True),  # two numbers
        ("new_files>2", True),  # no spaces needed
    ],
)
def test_every_comparison_operator(text, expected):
    assert holds(text) is expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        # and binds tighter than or: a or (b and c)
        ("new_files > 0 or changed_files > 0 and failed_files > 5", True),
        ("(new_files > 0 or changed_files > 0) and failed_files > 5", False),
        ("changed_files > 0 and failed_files > 0 or new_files > 0", True),
        ("changed_files > 0 and (failed_files > 0 or new_files > 0)", False),
        # not binds tighter than and / or
        ("not changed_files > 0 and new_files > 0", True),
        ("not (changed_files > 0 or new_files > 0)", False),
        ("not not new_files > 0", True),
        ("not new_files > 0 or failed_files == 1", True),
        ("((((new_files == 3))))", True),
        ("new_files > 0 and changed_files == 0 and failed_files == 1", True),
        ("changed_files > 0 or failed_files > 1 or new_files > 3", False),
    ],
)
def test_precedence_not_and_parentheses(text, expected):
    assert holds(text) is expected


def test_the_requirements_example_works():
    assert holds("file_count > 100") is False
    assert holds("file_count > 100", file_count=101) is True


def test_a_condition_names_its_facts_and_explains_each_comparison():
    condition = condition_parse("  changed_files > 0   or new_files >= 3 ")

    assert condition.text == "changed_files > 0 or new_files >= 3"
    assert condition.facts_used == ["new_files", "changed_files"]
    assert condition.explain(FACTS_NOW) == [
        {"comparison": "changed_files > 0", "left": 0, "right": 0, "result": False},
        {"comparison": "new_files >= 3", "left": 3, "right": 3, "result": True},
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("__import__('os').system('id')", "'__import__' is not a fact"),
        ("new_files.__class__ > 0", "'.' is not part of the language"),
        ("new_files[0] > 0", "'[' is not part of the language"),
        ("new_files > 'a'", '"\'" is not part of the language'),
        ('new_files > "0"', "'\"' is not part of the language"),
        ("lambda: 1", "'lambda' is not a fact"),
        ("(lambda x: x)(1) > 0", "'lambda' is not a fact"),
        ("open('/etc/passwd')", "'open' is not a fact"),
        ("file_count > 1e9", "'e9' is not a fact"),
        ("file_count > 0x10", "'x10' is not a fact"),
        ("new_files + 1 > 0", "'+' is not part of the language"),
        ("new_files - 1 > 0", "expected a comparison"),
        ("new_files = 1", "'=' is not part of the language"),
        ("new_files > 0 && changed_files > 0", "'&' is not part of the language"),
        ("new_files > 0 AND changed_files > 0", "write 'and' in lower case"),
        ("file_count", "expected a comparison"),
        ("file_count >", "expected a fact or a number, found the end"),
        ("> 3", "expected a fact or a number"),
        ("1 < new_files < 5", "one comparison at a time"),
        ("(new_files > 0", "is not closed"),
        ("new_files > 0)", "unexpected ')'"),
        ("new_files > 0 changed_files > 0", "join comparisons with and / or"),
        ("new_files > 0 and", "expected a fact or a number, found the end"),
        ("not", "expected a fact or a number, found the end"),
        ("", "it is empty"),
        ("   ", "it is empty"),
        ("file_count > 1" + "0" * 20, "at most 20 digits"),
        ("new_files > ٣", "'٣' is not part of the language"),  # another script's digit
        ("new_files\u00a0> 0", "is not part of the language"),  # a no-break space
        ("new_files > 0 ; import os", "';' is not part of the language"),
        ("files", "'files' is not a fact"),
    ],
)
def test_anything_else_is_refused_with_the_facts_listed(text, words):
    with pytest.raises(ConditionInvalidError) as refused:
        condition_parse(text)

    error = refused.value
    assert error.error_code == "INVALID_CONDITION" and error.status_code == 400
    assert words in error.detail, error.detail
    assert error.extra["facts"] == FACTS
    assert all(name in error.detail for name in FACTS)


def test_a_huge_condition_is_refused_before_it_is_read():
    huge = " or ".join(["new_files > 0"] * 1000)

    with pytest.raises(ConditionInvalidError, match=f"at most {MAX_CONDITION_LENGTH} characters"):
        condition_parse(huge)


@pytest.mark.parametrize(
    "text",
    [
        "(" * (MAX_CONDITION_DEPTH + 1) + "new_files > 0" + ")" * (MAX_CONDITION_DEPTH + 1),
        "not " * (MAX_CONDITION_DEPTH + 1) + "new_files > 0",
        "(" * 240 + "new_files > 0" + ")" * 240,  # would overflow Python's own parser's stack
    ],
)
def test_deep_nesting_is_refused(text):
    with pytest.raises(ConditionInvalidError, match="nested parentheses and nots"):
        condition_parse(text)


def test_nesting_up_to_the_bound_is_read():
    depth = MAX_CONDITION_DEPTH - 1
    assert holds("(" * depth + "new_files > 0" + ")" * depth) is True


@pytest.mark.parametrize("value", [None, 3, ["new_files > 0"], {"a": 1}])
def test_a_condition_is_a_string(value):
    with pytest.raises(ConditionInvalidError, match="a condition is a string"):
        condition_parse(value)


def test_an_empty_condition_clears_but_whitespace_alone_is_refused():
    assert condition_normalized(None) == condition_normalized("") == ""
    assert condition_normalized(" new_files  >0 ") == "new_files >0"
    with pytest.raises(ConditionInvalidError):
        condition_normalized("  ")


@pytest.mark.parametrize(
    "text",
    [
        "changed_files > 0",
        "not new_files>=1 and file_count != -2.5",
        "not not not hours_since_last_refresh >= 1234567890.1234567890 or 1 < 2",
        " or ".join(["not not not hours_since_last_refresh >= hours_since_last_refresh"] * 7),
    ],
)
def test_every_condition_the_schema_pattern_allows_is_accepted(text):
    """The OpenAPI pattern (conditions without parentheses) promises no more than the server
    reads, up to its longest case."""
    assert re.match(CONDITION_PATTERN, text)
    assert len(text) <= MAX_CONDITION_LENGTH
    condition_parse(text)
