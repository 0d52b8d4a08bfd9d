"""The three instruction strategies' prompts: GLAN sampling, TaP, CodecLM metadata and decoding."""

from __future__ import annotations

import random

import pytest

from services.generator.strategies import DIFFICULTY_TEXT, Prompter, codeclm_metadata, sample_glan
from taxoforge.langid import check_language
from taxoforge.testing.fake_llm import _text_reply
from taxoforge.v1 import common_pb2 as pb

SYLLABUS = [
    pb.Session(
        title=f"Session {n}: {topic}",
        key_concepts=[f"{topic} concept {k}" for k in range(4)],
    )
    for n, topic in enumerate(["Limits", "Derivatives", "Integrals", "Series"], start=1)
]


def _glan_seed(**fields: object) -> pb.Seed:
    defaults: dict[str, object] = {
        "job_id": "job",
        "item_id": "i0000001",
        "node_id": "calculus",
        "node_title": "Calculus",
        "node_path": "Mathematics > Analysis > Calculus",
        "strategy": "glan",
        "language": "en",
        "syllabus": SYLLABUS,
    }
    defaults.update(fields)
    return pb.Seed(**defaults)  # type: ignore[arg-type]


def _text(messages: list[dict[str, str]]) -> str:
    return "\n".join(m["content"] for m in messages)


# ---- GLAN: sampling ----


def test_glan_picks_one_or_two_sessions_and_their_key_concepts() -> None:
    seed = _glan_seed()
    titles = {s.title for s in SYLLABUS}

    for n in range(300):
        sessions, concepts = sample_glan(seed, random.Random(n))

        assert 1 <= len(sessions) <= 2
        assert {s.title for s in sessions} <= titles
        assert len({s.title for s in sessions}) == len(sessions)
        assert 1 <= len(concepts) <= 5
        offered = {c for s in sessions for c in s.key_concepts}
        assert set(concepts) <= offered, "every concept comes from a chosen session"


def test_two_sessions_give_at_least_one_concept_from_each() -> None:
    seed = _glan_seed()
    seen_two = 0

    for n in range(300):
        sessions, concepts = sample_glan(seed, random.Random(n))
        if len(sessions) != 2:
            continue
        seen_two += 1
        assert len(concepts) >= 2
        for session in sessions:
            assert set(concepts) & set(session.key_concepts), session.title

    assert seen_two > 0


def test_over_many_seeds_every_session_and_concept_count_occurs() -> None:
    seed = _glan_seed()

    picks = [sample_glan(seed, random.Random(n)) for n in range(300)]

    assert {len(sessions) for sessions, _ in picks} == {1, 2}
    assert {len(concepts) for _, concepts in picks} == {1, 2, 3, 4, 5}


def test_one_session_never_gives_more_concepts_than_it_has() -> None:
    seed = _glan_seed(syllabus=[pb.Session(title="Only", key_concepts=["a", "b"])])

    for n in range(50):
        sessions, concepts = sample_glan(seed, random.Random(n))
        assert [s.title for s in sessions] == ["Only"]
        assert 1 <= len(concepts) <= 2
        assert len(set(concepts)) == len(concepts)


def test_two_sessions_sharing_a_concept_still_give_distinct_concepts() -> None:
    seed = _glan_seed(
        syllabus=[
            pb.Session(title="Limits", key_concepts=["limits", "derivatives"]),
            pb.Session(title="Integration", key_concepts=["derivatives", "integrals"]),
        ]
    )

    for n in range(200):
        sessions, concepts = sample_glan(seed, random.Random(n))
        assert len(set(concepts)) == len(concepts), (n, concepts)
        if len(sessions) == 2:
            assert len(concepts) >= 2


def test_sessions_without_key_concepts_are_never_chosen() -> None:
    seed = _glan_seed(
        syllabus=[
            pb.Session(title="Empty session"),
            pb.Session(title="Full session", key_concepts=["x", "y", "z"]),
        ]
    )

    for n in range(50):
        sessions, _ = sample_glan(seed, random.Random(n))
        assert [s.title for s in sessions] == ["Full session"]


def test_without_a_syllabus_the_node_key_concepts_stand_in() -> None:
    items = ["photosynthesis", "respiration", "osmosis"]
    seed = _glan_seed(
        node_title="Cell Biology",
        syllabus=[],
        node_attributes={"key_concepts": pb.AttributeValue(items=items)},
    )

    for n in range(50):
        sessions, concepts = sample_glan(seed, random.Random(n))
        assert len(sessions) == 1
        assert sessions[0].title == "Cell Biology"
        assert list(sessions[0].key_concepts) == items
        assert 1 <= len(concepts) <= 3
        assert set(concepts) <= set(items)


def test_without_syllabus_or_key_concepts_the_subject_is_the_concept() -> None:
    seed = _glan_seed(node_title="Cell Biology", syllabus=[])

    sessions, concepts = sample_glan(seed, random.Random(0))

    assert [s.title for s in sessions] == ["Cell Biology"]
    assert concepts == ["Cell Biology"]


def test_glan_sampling_is_reproducible_for_the_same_rng_seed() -> None:
    seed = _glan_seed()

    first = sample_glan(seed, random.Random(1234))
    again = sample_glan(seed, random.Random(1234))
    others = {repr(sample_glan(seed, random.Random(n))) for n in range(20)}

    assert first == again
    assert len(others) > 1, "different rng seeds sample differently"


# ---- GLAN: the prompt ----


def test_glan_prompt_names_sessions_concepts_subject_difficulty_and_language() -> None:
    seed = _glan_seed(language="fr", difficulty="hard")
    sessions, concepts = sample_glan(seed, random.Random(7))

    draft = Prompter().draft(seed, random.Random(7))
    prompt = _text(draft.messages)

    assert draft.template.name == "glan"
    assert draft.sessions == sessions
    assert draft.concepts == concepts
    for session in sessions:
        assert f"Class session: {session.title}" in prompt
    for other in SYLLABUS:
        if other not in sessions:
            assert other.title not in prompt, "sessions not chosen stay out of the prompt"
    assert f"Key concepts to combine: {', '.join(concepts)}" in prompt
    assert "Subject: Calculus (Mathematics > Analysis > Calculus)" in prompt
    assert DIFFICULTY_TEXT["hard"] in prompt
    assert "French" in prompt
    assert "homework question" in prompt


def test_glan_draft_is_reproducible() -> None:
    seed = _glan_seed()
    prompter = Prompter()

    assert prompter.draft(seed, random.Random(3)) == prompter.draft(seed, random.Random(3))


# ---- TaP ----


def _tap_seed(**fields: object) -> pb.Seed:
    defaults: dict[str, object] = {
        "job_id": "job",
        "item_id": "i0000002",
        "node_id": "thermo",
        "node_title": "Thermodynamics",
        "node_path": "Natural Sciences > Physics > Thermodynamics",
        "node_description": "Heat, work and energy in physical systems.",
        "strategy": "tap",
        "language": "de",
        "difficulty": "medium",
        "task_type": "compare",
        "task_title": "Comparison",
        "task_description": "Ask to compare two things along several criteria.",
        "task_attributes": {
            "guidance": pb.AttributeValue(text="name both things and the criteria"),
            "example": pb.AttributeValue(text="Compare Python and Rust for web servers."),
        },
    }
    defaults.update(fields)
    return pb.Seed(**defaults)  # type: ignore[arg-type]


def test_tap_prompt_is_of_the_seeds_task_type_about_its_subject() -> None:
    draft = Prompter().draft(_tap_seed(), random.Random(0))
    prompt = _text(draft.messages)

    assert draft.template.name == "tap"
    assert draft.sessions == []
    assert draft.concepts == []
    assert "Write one request of this kind: Comparison." in prompt
    assert "Ask to compare two things along several criteria." in prompt
    assert "A good one: name both things and the criteria" in prompt
    assert "An example of the kind (another topic): Compare Python and Rust" in prompt
    assert "Thermodynamics (Natural Sciences > Physics > Thermodynamics)" in prompt
    assert "Heat, work and energy in physical systems." in prompt
    assert DIFFICULTY_TEXT["medium"] in prompt
    assert "in German" in prompt
    assert draft.messages[0]["role"] == "system"
    assert "German" in draft.messages[0]["content"]


def test_tap_without_task_type_asks_for_an_explanation() -> None:
    seed = _tap_seed(
        task_type="", task_title="", task_description="", task_attributes={}, node_description=""
    )

    prompt = _text(Prompter().draft(seed, random.Random(0)).messages)

    assert "a question that asks for an explanation" in prompt
    assert "A good one:" not in prompt
    assert "An example of the kind" not in prompt
    assert "Thermodynamics (Natural Sciences > Physics > Thermodynamics): Thermodynamics" in prompt


@pytest.mark.parametrize("strategy", ["", "tap"])
def test_tap_is_the_default_strategy(strategy: str) -> None:
    draft = Prompter().draft(_tap_seed(strategy=strategy), random.Random(0))

    assert draft.template.name == "tap"


@pytest.mark.parametrize("difficulty", ["", "unheard-of"])
def test_no_or_unknown_difficulty_uses_the_neutral_text(difficulty: str) -> None:
    prompt = _text(Prompter().draft(_tap_seed(difficulty=difficulty), random.Random(0)).messages)

    assert DIFFICULTY_TEXT[""] in prompt


# ---- CodecLM: metadata ----


def test_codeclm_metadata_of_an_induced_taxonomy_is_use_case_and_skill() -> None:
    seed = pb.Seed(
        node_title="Debugging",
        node_path="My instructions > Coding help > Debugging",
        node_attributes={"frequency": pb.AttributeValue(text="12")},
        task_title="Comparison",
    )

    assert codeclm_metadata(seed) == ("Coding help", ["Debugging"])


def test_codeclm_metadata_needs_frequency_to_read_the_path_as_induced() -> None:
    seed = pb.Seed(node_title="Debugging", node_path="Software > Coding help > Debugging")

    assert codeclm_metadata(seed) == ("questions about Debugging", ["Debugging"])


def test_codeclm_metadata_a_root_level_induced_node_falls_back() -> None:
    seed = pb.Seed(
        node_title="Debugging",
        node_path="Debugging",
        node_attributes={"frequency": pb.AttributeValue(text="3")},
    )

    assert codeclm_metadata(seed) == ("questions about Debugging", ["Debugging"])


def test_codeclm_metadata_task_title_and_skills_attribute() -> None:
    skills = ["reading", "arithmetic", "unit conversion", "estimation", "charts"]
    seed = pb.Seed(
        node_title="Physics",
        task_title="Worked problem",
        node_attributes={"skills": pb.AttributeValue(items=skills)},
    )

    assert codeclm_metadata(seed) == ("Worked problem", skills[:4])


def test_codeclm_metadata_key_concepts_are_the_skills_without_a_skills_attribute() -> None:
    concepts = ["inertia", "force", "acceleration", "friction"]
    seed = pb.Seed(
        node_title="Mechanics",
        node_attributes={"key_concepts": pb.AttributeValue(items=concepts)},
    )

    assert codeclm_metadata(seed) == ("questions about Mechanics", concepts[:3])


def test_codeclm_metadata_falls_back_to_the_node_title_as_skill() -> None:
    seed = pb.Seed(node_title="Mechanics", task_title="Explanation")

    assert codeclm_metadata(seed) == ("Explanation", ["Mechanics"])


# ---- CodecLM: decoding ----


def test_codeclm_decode_prompt_contains_use_case_and_skills() -> None:
    seed = pb.Seed(
        node_title="Debugging",
        node_path="Mine > Coding help > Debugging",
        node_attributes={"frequency": pb.AttributeValue(text="5")},
        strategy="codeclm",
        language="es",
        difficulty="expert",
    )

    draft = Prompter().draft(seed, random.Random(0))
    prompt = _text(draft.messages)

    assert draft.template.name == "codeclm_decode"
    assert draft.use_case == "Coding help"
    assert draft.skills == ["Debugging"]
    assert "Use case: Coding help" in prompt
    assert "Skills it needs: Debugging" in prompt
    assert DIFFICULTY_TEXT["expert"] in prompt
    assert "in Spanish" in prompt


def test_codeclm_decode_joins_several_skills() -> None:
    seed = pb.Seed(
        node_title="Physics",
        strategy="codeclm",
        task_title="Worked problem",
        node_attributes={"skills": pb.AttributeValue(items=["algebra", "units"])},
    )

    prompt = _text(Prompter().draft(seed, random.Random(0)).messages)

    assert "Use case: Worked problem" in prompt
    assert "Skills it needs: algebra, units" in prompt


# ---- Every template names the language so the FAKE server answers in it ----


@pytest.mark.parametrize("strategy", ["glan", "tap", "codeclm"])
@pytest.mark.parametrize(("code", "name"), [("fr", "French"), ("de", "German"), ("es", "Spanish")])
def test_each_strategy_prompt_asks_for_its_language(strategy: str, code: str, name: str) -> None:
    seed = _glan_seed(strategy=strategy, language=code)

    messages = Prompter().draft(seed, random.Random(0)).messages

    assert f"in {name}" in _text(messages)
    reply = _text_reply(messages, b"fixed-seed")
    assert check_language(reply, code).ok, reply
