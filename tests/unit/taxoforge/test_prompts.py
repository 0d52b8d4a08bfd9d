"""Prompt templates: rendering, loading and stamping calls."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from taxoforge.prompts import PromptTemplate, load_template
from taxoforge.v1 import common_pb2 as pb


def _write(tmp_path: Path, text: str, name: str = "t.yaml") -> Path:
    path = tmp_path / name
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def test_render_gives_system_and_user_messages() -> None:
    template = PromptTemplate(
        name="t",
        version="1",
        system="You answer in ${language}.\n",
        user="Explain ${topic} in $n sentences.\n",
    )

    messages = template.render(language="French", topic="tides", n=3)

    assert messages == [
        {"role": "system", "content": "You answer in French."},
        {"role": "user", "content": "Explain tides in 3 sentences."},
    ]


def test_render_without_system_gives_only_the_user_message() -> None:
    template = PromptTemplate(name="t", version="1", system="  \n", user="Hi ${who}")

    assert template.render(who="there") == [{"role": "user", "content": "Hi there"}]


def test_render_missing_field_raises_key_error() -> None:
    template = PromptTemplate(name="t", version="1", system="", user="About ${topic} in ${lang}")

    with pytest.raises(KeyError, match="lang"):
        template.render(topic="tides")


def test_field_values_are_not_expanded_again() -> None:
    template = PromptTemplate(name="t", version="1", system="", user="Q: ${q}")

    messages = template.render(q="costs $5 or ${price}")

    assert messages[0]["content"] == "Q: costs $5 or ${price}"


def test_load_template_reads_every_part(tmp_path: Path) -> None:
    path = _write(
        tmp_path,
        """\
        name: greet
        version: 3
        system: Be kind.
        user: Say hello to ${name}.
        """,
    )

    template = load_template(path)

    assert template == PromptTemplate(
        name="greet", version="3", system="Be kind.", user="Say hello to ${name}."
    )
    assert template.render(name="Ada")[1]["content"] == "Say hello to Ada."


def test_load_template_without_system(tmp_path: Path) -> None:
    template = load_template(_write(tmp_path, "name: a\nversion: '1'\nuser: hi\n"))

    assert template.system == ""
    assert template.render() == [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("text", "missing"),
    [
        ("version: '1'\nuser: hi\n", "name"),
        ("name: a\nuser: hi\n", "version"),
        ("name: a\nversion: '1'\nsystem: s\n", "user"),
        ("system: s\n", "name, user, version"),
        ("", "name, user, version"),
    ],
)
def test_load_template_rejects_incomplete_files(tmp_path: Path, text: str, missing: str) -> None:
    path = _write(tmp_path, text)

    with pytest.raises(ValueError, match=rf"t\.yaml: template lacks {missing}$"):
        load_template(path)


def test_stamp_records_name_and_version() -> None:
    template = PromptTemplate(name="rubric", version="7", system="", user="u")
    call = pb.LLMCall(role="judge", model="m")

    stamped = template.stamp(call)

    assert stamped is call
    assert (call.template, call.template_version) == ("rubric", "7")
    assert (call.role, call.model) == ("judge", "m")
