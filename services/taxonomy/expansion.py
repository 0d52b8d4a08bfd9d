"""GLAN expansion: subjects for a discipline (several samples at high temperature, merged),
and a syllabus of class sessions with key concepts for a subject."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import structlog
from pydantic import BaseModel, Field

from services.taxonomy.tree import SESSION, attribute_text, index, walk
from taxoforge.degenerate import label_problem, schema_wording, template_wording
from taxoforge.labels import canonical
from taxoforge.llm import LLMClient
from taxoforge.llm.schema import string_list
from taxoforge.prompts import PromptTemplate, load_template
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "Expander",
    "SubjectItem",
    "graft_expansions",
    "merge_subjects",
    "screen_subjects",
    "screen_syllabus",
    "slugify",
]

_PROMPTS = Path(__file__).parent / "prompts"
log = structlog.get_logger(__name__)


class SubjectItem(BaseModel):
    """One subject a model proposes."""

    title: str = Field(json_schema_extra={"maxLength": 80})
    level: str = Field(json_schema_extra={"maxLength": 20})
    description: str = Field(json_schema_extra={"maxLength": 240})


class SubjectList(BaseModel):
    """A model's list of subjects for a discipline."""

    subjects: list[SubjectItem] = Field(json_schema_extra={"minItems": 1, "maxItems": 20})


class SessionItem(BaseModel):
    """One class session of a syllabus."""

    title: str = Field(json_schema_extra={"maxLength": 80})
    key_concepts: list[str] = Field(json_schema_extra=string_list(1, 8, 60))


class Syllabus(BaseModel):
    """A model's syllabus for a subject."""

    sessions: list[SessionItem] = Field(json_schema_extra={"minItems": 1, "maxItems": 30})


def slugify(text: str, limit: int = 40) -> str:
    """A lowercase slug of ``text`` ("Quantum Mechanics I" -> "quantum-mechanics-i")."""
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    slug = re.sub(r"[^a-z0-9]+", "-", ascii_text.lower()).strip("-")
    return (slug[:limit].rstrip("-")) or "item"


def _key(title: str) -> str:
    """Titles that differ only in case, punctuation, inflection or word order are one subject
    ("Quantum mechanics" = "Mechanics, Quantum"); "Calculus I" and "Calculus II" stay two."""
    return " ".join(sorted(canonical(title).split()))


@dataclass
class _Merged:
    item: SubjectItem
    votes: int
    first: int


def merge_subjects(
    samples: Sequence[Sequence[SubjectItem]], existing: Sequence[str], limit: int
) -> list[tuple[SubjectItem, int]]:
    """One list from several: the same subject written differently counts once per sample.

    Subjects proposed by more samples come first (GLAN merges repeated queries); titles the
    node already has are left out. Returns (subject, samples that proposed it).
    """
    merged: list[_Merged] = []
    taken = {_key(t) for t in existing}
    order = 0
    for sample in samples:
        seen_here: set[int] = set()
        for item in sample:
            key = _key(item.title)
            if not key or key in taken:
                continue
            match = next((i for i, m in enumerate(merged) if _key(m.item.title) == key), None)
            if match is None:
                merged.append(_Merged(item, 1, order))
                seen_here.add(len(merged) - 1)
            elif match not in seen_here:
                merged[match].votes += 1
                seen_here.add(match)
            order += 1
    merged.sort(key=lambda m: (-m.votes, m.first))
    return [(m.item, m.votes) for m in merged[:limit]]


def _wording(template: PromptTemplate, schema: type[BaseModel]) -> tuple[list[str], list[str]]:
    wording, _ = template_wording(template.system, template.user)
    own, names = schema_wording(schema.model_json_schema())
    return [*wording, *own], [*names, *(w for w in own if len(w.split()) <= 3)]


def screen_subjects(
    subjects: Sequence[SubjectItem], template: PromptTemplate, data: str
) -> list[SubjectItem]:
    """Subjects whose title is a real label: not copied from the prompt that asked for them
    (its wording, its schema) nor malformed ("Subject 1:", braces, empty)."""
    wording, names = _wording(template, SubjectList)
    out = []
    for item in subjects:
        finding = label_problem(item.title, wording, data, names)
        if finding is None:
            out.append(item)
        else:
            log.info("label_dropped", kind="subject", label=item.title[:80], reason=finding.reason)
    return out


def screen_syllabus(
    sessions: Sequence[SessionItem], template: PromptTemplate, data: str
) -> list[SessionItem]:
    """Sessions with real titles and key concepts: copied or malformed ones ("Key Concepts:
    ...", a field description, stray braces) are dropped, and a session left with no key
    concept with them."""
    wording, names = _wording(template, Syllabus)
    out = []
    for session in sessions:
        problem = label_problem(session.title, wording, data, names)
        concepts = []
        for concept in session.key_concepts:
            found = label_problem(concept, wording, f"{data} {session.title}", names)
            if found is None:
                concepts.append(concept.strip())
            else:
                log.info(
                    "label_dropped", kind="key_concept", label=concept[:80], reason=found.reason
                )
        if problem is not None or not concepts:
            reason = problem.reason if problem is not None else "no key concept left"
            log.info("label_dropped", kind="session", label=session.title[:80], reason=reason)
            continue
        out.append(SessionItem(title=session.title.strip(), key_concepts=concepts))
    return out


class Expander:
    """The model calls of an expansion; results are turned into proposed nodes."""

    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm
        self._subjects = load_template(_PROMPTS / "subjects.yaml")
        self._syllabus = load_template(_PROMPTS / "syllabus.yaml")

    async def subjects(
        self,
        node: pb.TaxonomyNode,
        path: Sequence[str],
        cfg: pb.ModelConfig,
        count: int,
        sample: int,
        temperature: float,
    ) -> tuple[list[SubjectItem], pb.LLMCall]:
        """One sample of subjects for a discipline."""
        messages = self._subjects.render(
            count=count,
            discipline=node.title,
            path=" > ".join(path) or node.title,
            description=node.description or node.title,
        )
        reply, call = await self._llm.structured(
            "generator",
            cfg,
            messages,
            SubjectList,
            temperature=temperature,
            seed=1000 + sample,
            max_tokens=2048,
        )
        data = " ".join([node.title, *path, node.description])
        return screen_subjects(reply.subjects, self._subjects, data), self._subjects.stamp(call)

    async def syllabus(
        self,
        subject: pb.TaxonomyNode,
        discipline: pb.TaxonomyNode,
        path: Sequence[str],
        cfg: pb.ModelConfig,
        min_sessions: int,
        max_sessions: int,
    ) -> tuple[list[SessionItem], pb.LLMCall]:
        """A syllabus for a subject."""
        messages = self._syllabus.render(
            subject=subject.title,
            level=attribute_text(subject, "level") or "any level",
            discipline=discipline.title,
            path=" > ".join(path) or discipline.title,
            description=subject.description or subject.title,
            min_sessions=min_sessions,
            max_sessions=max_sessions,
        )
        reply, call = await self._llm.structured(
            "generator", cfg, messages, Syllabus, max_tokens=3072
        )
        data = " ".join(
            [subject.title, subject.description, discipline.title, *path, discipline.description]
        )
        sessions = screen_syllabus(reply.sessions, self._syllabus, data)
        return sessions[:max_sessions], self._syllabus.stamp(call)


def subject_node(
    parent_id: str, item: SubjectItem, votes: int, samples: int, origin: str
) -> pb.TaxonomyNode:
    """A proposed subject under ``parent_id`` (ids are scoped by the parent, so they cannot
    collide with another node's proposals)."""
    node = pb.TaxonomyNode(
        id=f"{parent_id[:20]}-{slugify(item.title)}",
        title=item.title.strip(),
        description=item.description.strip(),
        kind="subject",
        weight=1.0,
        status=pb.NODE_STATUS_PROPOSED,
        origin=origin,
    )
    node.attributes["level"].text = item.level.strip()
    node.attributes["proposed_by"].text = f"{votes} of {samples} samples"
    return node


def session_nodes(
    subject_id: str, sessions: Sequence[SessionItem], origin: str
) -> list[pb.TaxonomyNode]:
    """A subject's syllabus as session nodes (proposed with their subject)."""
    out = []
    for i, session in enumerate(sessions, 1):
        node = pb.TaxonomyNode(
            id=f"{subject_id[:55]}-s{i:02d}",
            title=session.title.strip() or f"Session {i}",
            kind=SESSION,
            weight=1.0,
            status=pb.NODE_STATUS_PROPOSED,
            origin=origin,
        )
        node.attributes["key_concepts"].items.extend(
            c.strip() for c in session.key_concepts if c.strip()
        )
        out.append(node)
    return out


def graft_expansions(root: pb.TaxonomyNode, results: Sequence[pb.TaxonomyNode]) -> pb.TaxonomyNode:
    """A copy of ``root`` with each expanded node's proposed children added under it (a node
    pruned since the expansion started is passed over), every id kept unique in the tree."""
    out = pb.TaxonomyNode()
    out.CopyFrom(root)
    nodes = index(out)
    taken = set(nodes)
    for result in sorted(results, key=lambda r: r.id):
        if result.id not in nodes:
            continue
        parent = nodes[result.id].node
        for child in result.children:
            parent.children.append(_unique_ids(child, taken))
    return out


def _unique_ids(node: pb.TaxonomyNode, taken: set[str]) -> pb.TaxonomyNode:
    """The node with ids made unique in the tree (a subject's sessions follow its new id)."""
    out = pb.TaxonomyNode()
    out.CopyFrom(node)
    for located in [out, *(loc.node for loc in walk(out))]:
        base, n = located.id, 2
        while located.id in taken:
            located.id = f"{base[:58]}-{n}"
            n += 1
        taken.add(located.id)
    return out
