"""The three instruction strategies as prompts built from a seed (design §1).

- GLAN: 1 or 2 class sessions of the subject's syllabus and 1 to 5 of their key concepts (at
  least 2 when two sessions, one from each), combined into a homework question.
- TaP: a prompt of the seed's task type about the seed's subject, at its difficulty, written
  directly in its language.
- CodecLM: metadata (one use case and a set of skills) decoded into an instruction; Self-Rubrics
  rounds then make it harder (see ``instructions``).

Sampling is seeded per item, so a plan's instructions are reproducible.
"""

from __future__ import annotations

import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from taxoforge.languages import language_name
from taxoforge.prompts import PromptTemplate, load_template
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "DIFFICULTY_TEXT",
    "FIELD_WORDING",
    "Draft",
    "Prompter",
    "codeclm_metadata",
    "sample_glan",
]

_PROMPTS = Path(__file__).parent / "prompts"

DIFFICULTY_TEXT = {
    "": "at a level a motivated learner can answer",
    "easy": "easy: one idea, answerable by a beginner",
    "medium": "of medium difficulty: combining two or three ideas with some reasoning",
    "hard": "hard: several steps or concepts, needing real expertise",
    "expert": "expert-level: open-ended, several interacting ideas",
}
_GUIDANCE = "A good one:"
_EXAMPLE = "An example of the kind (another topic):"
_SESSION = "Class session:"
# Our own wording that reaches prompts through fields: a reply must not repeat it either.
FIELD_WORDING = (*DIFFICULTY_TEXT.values(), _GUIDANCE, _EXAMPLE, _SESSION)


@dataclass
class Draft:
    """A rendered prompt and what it was built from."""

    template: PromptTemplate
    messages: list[dict[str, str]]
    sessions: list[pb.Session] = field(default_factory=list)
    concepts: list[str] = field(default_factory=list)
    use_case: str = ""
    skills: list[str] = field(default_factory=list)


def _attr(attrs: Mapping[str, pb.AttributeValue], name: str) -> pb.AttributeValue | None:
    """An attribute, or None (a membership test never adds an entry to a protobuf map)."""
    return attrs[name] if name in attrs else None  # noqa: SIM401 - .get may add to a proto map


def sample_glan(seed: pb.Seed, rng: random.Random) -> tuple[list[pb.Session], list[str]]:
    """GLAN's sampling: 1 or 2 sessions, then 1-5 key concepts (2-5 from two sessions, at least
    one from each). Without a syllabus the node's key concepts stand in as one session."""
    sessions = [s for s in seed.syllabus if s.key_concepts]
    if not sessions:
        concepts = _attr(seed.node_attributes, "key_concepts")
        items = list(concepts.items) if concepts else []
        sessions = [pb.Session(title=seed.node_title, key_concepts=items or [seed.node_title])]
    chosen = rng.sample(sessions, k=min(len(sessions), rng.choice((1, 2))))
    if len(chosen) == 2:
        first, second = (list(dict.fromkeys(s.key_concepts)) for s in chosen)
        picked = [rng.choice(first)]
        others = [c for c in second if c not in picked]
        if others:  # one from each session, unless the second only repeats the first
            picked.append(rng.choice(others))
        rest = [c for c in dict.fromkeys(first + second) if c not in picked]
        extra = rng.randint(max(0, 2 - len(picked)), min(5 - len(picked), len(rest)))
        picked += rng.sample(rest, extra)
    else:
        pool = list(dict.fromkeys(chosen[0].key_concepts))
        picked = rng.sample(pool, rng.randint(1, min(5, len(pool))))
    return chosen, picked


def codeclm_metadata(seed: pb.Seed) -> tuple[str, list[str]]:
    """The seed as CodecLM metadata. An induced taxonomy gives it directly (use case > skill);
    otherwise the task type (or subject) is the use case and key concepts are the skills."""
    path = [p.strip() for p in seed.node_path.split(">") if p.strip()]
    skills_attr = _attr(seed.node_attributes, "skills")
    if len(path) >= 2 and _attr(seed.node_attributes, "frequency") is not None:
        return path[-2], [seed.node_title]  # induced: a skill under its use case
    use_case = seed.task_title or f"questions about {seed.node_title}"
    if skills_attr and skills_attr.items:
        return use_case, list(skills_attr.items)[:4]
    concepts = _attr(seed.node_attributes, "key_concepts")
    skills = list(concepts.items)[:3] if concepts else []
    return use_case, skills or [seed.node_title]


class Prompter:
    """Builds each strategy's prompt from a seed."""

    def __init__(self) -> None:
        self.glan = load_template(_PROMPTS / "glan.yaml")
        self.tap = load_template(_PROMPTS / "tap.yaml")
        self.decode = load_template(_PROMPTS / "codeclm_decode.yaml")
        self.rubrics = load_template(_PROMPTS / "codeclm_rubrics.yaml")
        self.improve = load_template(_PROMPTS / "codeclm_improve.yaml")
        self.response = load_template(_PROMPTS / "response.yaml")

    def draft(self, seed: pb.Seed, rng: random.Random) -> Draft:
        """The first prompt of the seed's strategy."""
        language = language_name(seed.language)
        difficulty = DIFFICULTY_TEXT.get(seed.difficulty, DIFFICULTY_TEXT[""])
        if seed.strategy == "glan":
            sessions, concepts = sample_glan(seed, rng)
            listed = "\n".join(f"{_SESSION} {s.title}" for s in sessions)
            messages = self.glan.render(
                subject=seed.node_title,
                path=seed.node_path,
                sessions=listed,
                concepts=", ".join(concepts),
                difficulty=difficulty,
                language=language,
            )
            return Draft(self.glan, messages, sessions=sessions, concepts=concepts)
        if seed.strategy == "codeclm":
            use_case, skills = codeclm_metadata(seed)
            messages = self.decode.render(
                use_case=use_case,
                skills=", ".join(skills),
                difficulty=difficulty,
                language=language,
            )
            return Draft(self.decode, messages, use_case=use_case, skills=skills)
        guidance = _attr(seed.task_attributes, "guidance")
        example = _attr(seed.task_attributes, "example")
        messages = self.tap.render(
            task=seed.task_title or "a question that asks for an explanation",
            task_description=seed.task_description,
            guidance=f"{_GUIDANCE} {guidance.text}" if guidance and guidance.text else "",
            subject=seed.node_title,
            path=seed.node_path,
            description=seed.node_description or seed.node_title,
            difficulty=difficulty,
            example=f"{_EXAMPLE} {example.text}" if example and example.text else "",
            language=language,
        )
        return Draft(self.tap, messages)
