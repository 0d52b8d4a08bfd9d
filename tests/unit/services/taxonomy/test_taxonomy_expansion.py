"""GLAN expansion: slugs, merging sampled subject lists, proposed nodes, and the model calls."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from services.taxonomy import expansion
from services.taxonomy.document import SLUG
from services.taxonomy.expansion import (
    Expander,
    SessionItem,
    SubjectItem,
    SubjectList,
    Syllabus,
    graft_expansions,
    merge_subjects,
    screen_subjects,
    screen_syllabus,
    session_nodes,
    slugify,
    subject_node,
)
from services.taxonomy.tree import SESSION
from taxoforge.prompts import load_template
from taxoforge.v1 import common_pb2 as pb


def _subject(title: str, level: str = "introductory", description: str = "") -> SubjectItem:
    return SubjectItem(title=title, level=level, description=description or f"about {title}")


def _titles(merged: list[tuple[SubjectItem, int]]) -> list[tuple[str, int]]:
    return [(item.title, votes) for item, votes in merged]


class StubLLM:
    """Answers ``structured`` calls with the replies given, and records each call."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.calls: list[dict[str, Any]] = []

    async def structured(self, role, cfg, messages, output, **kwargs):
        self.calls.append(
            {"role": role, "cfg": cfg, "messages": messages, "output": output, **kwargs}
        )
        return self.replies.pop(0), pb.LLMCall(model="stub")


# ---- slugify ----


@pytest.mark.parametrize(
    ("text", "slug"),
    [
        ("Quantum Mechanics I", "quantum-mechanics-i"),
        ("  Café & Économie!  ", "cafe-economie"),
        ("C++ / Rust: Systems", "c-rust-systems"),
        ("Über-Straße", "uber-strae"),
        ("2D Graphics", "2d-graphics"),
        ("", "item"),
        ("!!!", "item"),
        ("日本語", "item"),
    ],
)
def test_slugify(text: str, slug: str) -> None:
    assert slugify(text) == slug


def test_slugify_respects_the_limit_without_a_trailing_dash() -> None:
    slug = slugify("Introduction to the Theory of Computation and Formal Languages", limit=20)

    assert len(slug) <= 20
    assert slug == "introduction-to-the"
    assert not slug.endswith("-")


def test_slugs_are_valid_node_ids() -> None:
    for text in ("Quantum Mechanics I", "a" * 100, "-x-", "Ünïcödé Tïtlé"):
        assert SLUG.match(slugify(text))


# ---- merge_subjects ----


def test_near_duplicate_titles_are_one_subject() -> None:
    samples = [
        [_subject("Linear Algebra"), _subject("Calculus")],
        [_subject("linear algebra."), _subject("Linear Algebras")],
    ]

    merged = merge_subjects(samples, [], limit=10)

    assert _titles(merged) == [("Linear Algebra", 2), ("Calculus", 1)]


def test_a_title_counts_once_per_sample() -> None:
    samples = [
        [_subject("Topology"), _subject("topology"), _subject("TOPOLOGY!")],
        [_subject("Number Theory")],
        [_subject("Number Theory")],
    ]

    merged = merge_subjects(samples, [], limit=10)

    assert _titles(merged) == [("Number Theory", 2), ("Topology", 1)]


def test_subjects_are_ordered_by_samples_then_first_appearance() -> None:
    samples = [
        [_subject("A Subject"), _subject("Botany"), _subject("Chemistry")],
        [_subject("Geology"), _subject("Chemistry")],
        [_subject("Zoology"), _subject("Geology"), _subject("Chemistry")],
    ]

    merged = merge_subjects(samples, [], limit=10)

    assert _titles(merged) == [
        ("Chemistry", 3),
        ("Geology", 2),
        ("A Subject", 1),
        ("Botany", 1),
        ("Zoology", 1),
    ]


def test_the_first_wording_of_a_subject_is_kept() -> None:
    samples = [
        [_subject("Game Theory", level="advanced", description="first")],
        [_subject("game theory", level="intermediate", description="second")],
    ]

    ((item, votes),) = merge_subjects(samples, [], limit=5)

    assert (item.title, item.level, item.description, votes) == (
        "Game Theory",
        "advanced",
        "first",
        2,
    )


def test_existing_children_are_left_out() -> None:
    samples = [[_subject("Calculus"), _subject("Real Analysis"), _subject("Geometry")]]

    merged = merge_subjects(samples, ["calculus", "Geometry."], limit=10)

    assert _titles(merged) == [("Real Analysis", 1)]


def test_titles_without_letters_are_left_out() -> None:
    merged = merge_subjects([[_subject("!!!"), _subject("Ethics")]], [], limit=10)

    assert _titles(merged) == [("Ethics", 1)]


def test_the_limit_keeps_the_most_proposed() -> None:
    samples = [
        [_subject("Optics"), _subject("Acoustics")],
        [_subject("Acoustics"), _subject("Mechanics")],
    ]

    assert _titles(merge_subjects(samples, [], limit=2)) == [("Acoustics", 2), ("Optics", 1)]
    assert merge_subjects(samples, [], limit=0) == []


def test_merging_nothing_gives_nothing() -> None:
    assert merge_subjects([], ["x"], limit=5) == []
    assert merge_subjects([[], []], [], limit=5) == []


@pytest.mark.parametrize(
    ("first", "second"),
    [
        ("Microeconomics", "Macroeconomics"),
        ("Organic Chemistry", "Inorganic Chemistry"),
        ("Calculus I", "Calculus II"),
    ],
)
def test_distinct_subjects_with_similar_spelling_stay_apart(first: str, second: str) -> None:
    merged = merge_subjects([[_subject(first)], [_subject(second)]], [], limit=10)

    assert _titles(merged) == [(first, 1), (second, 1)]


# ---- proposed nodes ----


def test_subject_node_is_a_proposed_subject_scoped_by_its_parent() -> None:
    item = _subject("  Linear Algebra ", level=" intermediate ", description=" Vectors. ")

    node = subject_node("mathematics", item, votes=3, samples=5, origin="expansion:job-1")

    assert node.id == "mathematics-linear-algebra"
    assert node.title == "Linear Algebra"
    assert node.description == "Vectors."
    assert node.kind == "subject"
    assert node.weight == 1.0
    assert node.status == pb.NODE_STATUS_PROPOSED
    assert node.origin == "expansion:job-1"
    assert node.attributes["level"].text == "intermediate"
    assert node.attributes["proposed_by"].text == "3 of 5 samples"


def test_subject_node_ids_stay_valid_slugs_for_long_names() -> None:
    item = _subject("A Very Long Subject Title That Goes On And On Beyond Any Limit")

    node = subject_node("a-very-long-discipline-identifier-indeed", item, 1, 1, "expansion:j")

    assert node.id.startswith("a-very-long-discipli-")
    assert SLUG.match(node.id)


def test_session_nodes_carry_key_concepts() -> None:
    sessions = [
        SessionItem(title=" Vectors ", key_concepts=[" span ", "basis", "  "]),
        SessionItem(title="  ", key_concepts=["rank"]),
    ]

    nodes = session_nodes("mathematics-linear-algebra", sessions, "expansion:job-1")

    assert [n.id for n in nodes] == [
        "mathematics-linear-algebra-s01",
        "mathematics-linear-algebra-s02",
    ]
    assert [n.title for n in nodes] == ["Vectors", "Session 2"]
    assert [list(n.attributes["key_concepts"].items) for n in nodes] == [
        ["span", "basis"],
        ["rank"],
    ]
    for node in nodes:
        assert node.kind == SESSION
        assert node.status == pb.NODE_STATUS_PROPOSED
        assert node.origin == "expansion:job-1"
        assert node.weight == 1.0


def test_session_ids_stay_valid_slugs_for_long_subject_ids() -> None:
    nodes = session_nodes("s" * 63, [SessionItem(title="T", key_concepts=["k"])], "o")

    assert nodes[0].id == "s" * 55 + "-s01"
    assert SLUG.match(nodes[0].id)


# ---- Expander: the model calls ----


def _discipline() -> pb.TaxonomyNode:
    return pb.TaxonomyNode(
        id="economics", title="Economics", description="Markets, incentives and policy."
    )


async def test_subjects_prompt_names_the_discipline_and_its_path() -> None:
    reply = SubjectList(subjects=[_subject("Microeconomics"), _subject("Econometrics")])
    llm = StubLLM(reply)
    cfg = pb.ModelConfig(model="some/model")

    subjects, call = await Expander(llm).subjects(
        _discipline(), ["Social Sciences", "Economics"], cfg, count=12, sample=3, temperature=1.0
    )

    assert [s.title for s in subjects] == ["Microeconomics", "Econometrics"]
    assert (call.template, call.template_version) == ("subjects", "1")
    (sent,) = llm.calls
    assert sent["role"] == "generator"
    assert sent["cfg"] is cfg
    assert sent["output"] is SubjectList
    assert sent["temperature"] == 1.0
    assert sent["seed"] == 1003
    text = "\n".join(m["content"] for m in sent["messages"])
    assert "Economics" in text
    assert "Social Sciences > Economics" in text
    assert "Markets, incentives and policy." in text
    assert "up to 12 distinct subjects" in text


async def test_subjects_passes_each_sample_its_temperature_and_seed() -> None:
    llm = StubLLM(SubjectList(subjects=[_subject("A")]), SubjectList(subjects=[_subject("B")]))
    expander = Expander(llm)

    await expander.subjects(_discipline(), [], pb.ModelConfig(), 5, sample=0, temperature=0.7)
    await expander.subjects(_discipline(), [], pb.ModelConfig(), 5, sample=1, temperature=1.3)

    assert [(c["temperature"], c["seed"]) for c in llm.calls] == [(0.7, 1000), (1.3, 1001)]
    # with no path the discipline's own title stands in
    assert "field: Economics." in llm.calls[0]["messages"][-1]["content"]


async def test_syllabus_prompt_names_the_subject_discipline_and_path() -> None:
    sessions = [SessionItem(title=f"Week {i}", key_concepts=["k"]) for i in range(1, 6)]
    llm = StubLLM(Syllabus(sessions=sessions))
    subject = subject_node("economics", _subject("Game Theory", level="advanced"), 2, 3, "e:j")

    got, call = await Expander(llm).syllabus(
        subject, _discipline(), ["Social Sciences", "Economics"], pb.ModelConfig(), 2, 3
    )

    assert [s.title for s in got] == ["Week 1", "Week 2", "Week 3"]  # at most max_sessions
    assert (call.template, call.template_version) == ("syllabus", "1")
    (sent,) = llm.calls
    assert sent["role"] == "generator"
    assert sent["output"] is Syllabus
    text = "\n".join(m["content"] for m in sent["messages"])
    assert '"Game Theory" (advanced)' in text
    assert "part of Economics (Social Sciences > Economics)" in text
    assert "2 to 3 class sessions" in text


async def test_syllabus_of_a_subject_without_a_level_says_any_level() -> None:
    llm = StubLLM(Syllabus(sessions=[SessionItem(title="One", key_concepts=["k"])]))
    subject = pb.TaxonomyNode(id="x", title="Auctions")

    await Expander(llm).syllabus(subject, _discipline(), [], pb.ModelConfig(), 1, 5)

    assert '"Auctions" (any level)' in llm.calls[0]["messages"][-1]["content"]


async def test_syllabus_does_not_change_the_subject() -> None:
    llm = StubLLM(Syllabus(sessions=[SessionItem(title="One", key_concepts=["k"])]))
    subject = pb.TaxonomyNode(id="x", title="Auctions")

    await Expander(llm).syllabus(subject, _discipline(), [], pb.ModelConfig(), 1, 5)

    assert "level" not in subject.attributes


def test_grafted_children_get_unique_ids_and_a_pruned_node_is_passed_over() -> None:
    root = pb.TaxonomyNode(id="root", children=[pb.TaxonomyNode(id="physics")])
    root.children[0].children.add(id="physics.optics")
    physics = pb.TaxonomyNode(id="physics", children=[pb.TaxonomyNode(id="physics.optics")])
    physics.children[0].children.add(id="physics.optics.s1")
    gone = pb.TaxonomyNode(id="chemistry", children=[pb.TaxonomyNode(id="chemistry.x")])

    grafted = graft_expansions(root, [physics, gone])

    ids = [c.id for c in grafted.children[0].children]
    assert ids == ["physics.optics", "physics.optics-2"]
    assert grafted.children[0].children[1].children[0].id == "physics.optics.s1"
    assert [c.id for c in grafted.children] == ["physics"]
    assert len(root.children[0].children) == 1, "the given tree is left as it was"


# ---- labels copied from the prompt or malformed never reach the taxonomy ----

_SYLLABUS_PROMPT = load_template(Path(expansion.__file__).parent / "prompts" / "syllabus.yaml")
_SUBJECTS_PROMPT = load_template(Path(expansion.__file__).parent / "prompts" / "subjects.yaml")


def test_copied_or_malformed_key_concepts_and_sessions_are_dropped() -> None:
    sessions = [
        SessionItem(
            title="Newton's laws",
            key_concepts=["inertia", "Key Concepts: force", "{mass}", "a few words", "momentum"],
        ),
        SessionItem(title="Key Concepts: energy", key_concepts=["work"]),
        SessionItem(title="Short title", key_concepts=["power"]),
        SessionItem(title="Waves", key_concepts=["about five key concepts", "   "]),
    ]

    kept = screen_syllabus(sessions, _SYLLABUS_PROMPT, "Mechanics Physics Forces and motion")

    assert [(s.title, s.key_concepts) for s in kept] == [("Newton's laws", ["inertia", "momentum"])]


def test_copied_or_malformed_subjects_are_dropped() -> None:
    subjects = [
        SubjectItem(title="Classical Mechanics", level="introductory", description="Forces."),
        SubjectItem(title="Subject 2: Optics", level="intermediate", description="Light."),
        SubjectItem(title="short title", level="advanced", description="x"),
        SubjectItem(title="{title}", level="advanced", description="x"),
    ]

    kept = screen_subjects(subjects, _SUBJECTS_PROMPT, "Physics Natural Sciences")

    assert [s.title for s in kept] == ["Classical Mechanics"]
