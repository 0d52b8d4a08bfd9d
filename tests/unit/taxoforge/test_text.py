"""Text that can be stored: lone surrogates found wherever JSON or YAML put them."""

from __future__ import annotations

import pytest

from taxoforge.text import InvalidText, json_text_problem, storable


def test_pairs_are_joined_and_lone_halves_refused_with_where() -> None:
    assert storable("plain") == "plain"
    assert storable("a\ud83d\ude00b") == "a\N{GRINNING FACE}b"  # as PyYAML leaves an emoji
    for text, at in (("ab\ud800c", 2), ("\udc00", 0), ("x\ud83d", 1), ("\ude00\ud83d", 0)):
        with pytest.raises(InvalidText, match=f"at character {at}"):
            storable(text)


@pytest.mark.parametrize(
    ("body", "found"),
    [
        (b'{"a": [1, {"b": "x\\ud800"}]}', "a[1].b"),
        (b'{"a": "\\uDFFF"}', "a"),
        (b'{"a": {"\\udfff": 1}}', "a"),
        ('{"a": "\ud800"}'.encode("utf-8", "surrogatepass"), "a"),
        ('{"a": "\ud800"}'.encode("utf-16-le", "surrogatepass"), "a"),
        # A pair as raw bytes (CESU-8) is not UTF-8: JSON's parser keeps two lone halves.
        ('["\ud83d\ude00"]'.encode("utf-8", "surrogatepass"), "[0]"),
    ],
)
def test_json_bodies_with_a_lone_surrogate_say_where(body: bytes, found: str) -> None:
    problem = json_text_problem(body)
    assert problem is not None and problem[0] == found
    assert "not valid Unicode" in problem[1]


@pytest.mark.parametrize(
    "body",
    [
        b'{"a": "\\ud83d\\ude00"}',  # an escaped pair is one character
        b'{"a": "\\\\ud800"}',  # an escaped backslash, then plain text
        b'{"a": "caf\\u00e9"}',
        b"not json at all \\ud800",  # the parser's to refuse
        b"",
    ],
)
def test_json_bodies_without_one_pass(body: bytes) -> None:
    assert json_text_problem(body) is None
