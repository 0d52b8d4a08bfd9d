"""Induction: a taxonomy from a user's own instructions.

Each instruction is encoded (CodecLM: one use case and a set of skills) and tagged (TACOS and
InsTag: open-domain tags) by the tagger role. The labels are normalized (canonical form,
near-synonyms merged by embedding similarity, rare labels dropped), and the taxonomy has use
cases at its top level and skills under them, each weighted by how often it occurs.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Sequence
from pathlib import Path

from pydantic import BaseModel, Field

from services.taxonomy.expansion import slugify
from taxoforge.degenerate import (
    Finding,
    copied_examples,
    label_problem,
    schema_wording,
    template_wording,
)
from taxoforge.embeddings import Embedder
from taxoforge.labels import Normalized, normalize_labels
from taxoforge.llm import LLMClient
from taxoforge.llm.schema import string_list
from taxoforge.markers import fence_for
from taxoforge.prompts import load_template
from taxoforge.v1 import common_pb2 as pb

__all__ = ["CHUNK", "Encoder", "InstructionMeta", "build_induced", "chunk_id", "screen_labels"]

_PROMPTS = Path(__file__).parent / "prompts"
_EXAMPLES = 3
# Instructions encoded per induce message.
CHUNK = 8


def chunk_id(chunk: int) -> str:
    """The item id of an induction chunk."""
    return f"c{chunk:06d}"


class InstructionMeta(BaseModel):
    """The tagger's reply for one instruction."""

    use_case: str = Field(json_schema_extra={"maxLength": 60})
    skills: list[str] = Field(json_schema_extra=string_list(1, 4, 40))
    tags: list[str] = Field(json_schema_extra=string_list(1, 5, 40))


class Encoder:
    """Encodes and tags one instruction per call."""

    def __init__(self, llm: LLMClient) -> None:
        self._llm = llm
        self._template = load_template(_PROMPTS / "encode.yaml")

    async def encode(
        self, index: int, instruction: str, cfg: pb.ModelConfig
    ) -> pb.InstructionEncoding:
        marker = await fence_for("encode", index)
        messages = self._template.render(nonce=marker.marker, instruction=marker.clean(instruction))
        meta, call = await self._llm.structured(
            "tagger",
            cfg,
            messages,
            InstructionMeta,
            temperature=0.0,
            max_tokens=256,
            cache=marker.stable,
        )
        return pb.InstructionEncoding(
            index=index,
            instruction=instruction,
            use_case=meta.use_case.strip(),
            skills=[s.strip() for s in meta.skills if s.strip()],
            tags=[t.strip() for t in meta.tags if t.strip()],
            call=self._template.stamp(call),
        )


def _encode_wording() -> tuple[list[str], list[str]]:
    """What the encode prompt says on its own (its fixed wording, examples and JSON schema)
    and its field names: a label that is only these was copied, not induced."""
    template = load_template(_PROMPTS / "encode.yaml")
    wording, _ = template_wording(template.system, template.user)
    schema, names = schema_wording(InstructionMeta.model_json_schema())
    titles = [w for w in schema if len(w.split()) <= 3]
    return [*wording, *schema], [*names, *titles]


def _form(label: str) -> str:
    # One label however it is cased or punctuated ("Debugging Python code").
    return " ".join(label.casefold().split())


def screen_labels(
    encodings: Sequence[pb.InstructionEncoding],
) -> tuple[list[pb.InstructionEncoding], Counter[tuple[str, str, str]]]:
    """The encodings without labels copied from the encode prompt or malformed (stray braces,
    "Skills:" prefixes, field names, empty), and each dropped (kind, label, reason) counted.

    A label the prompt also shows (say its example "debugging python code") is kept when one
    instruction it labels supports it: the copy is the label no instruction bears out."""
    wording, names = _encode_wording()
    verdicts: dict[tuple[str, str], list[Finding | None]] = defaultdict(list)
    for e in encodings:
        labelled = [("use_case", e.use_case)] if e.use_case else []
        labelled += [("skill", s) for s in e.skills] + [("tag", t) for t in e.tags]
        for kind, label in labelled:
            verdict = label_problem(label, wording, e.instruction, names)
            verdicts[(kind, _form(label))].append(verdict)
    dropped: Counter[tuple[str, str, str]] = Counter()
    bad: set[tuple[str, str]] = set()
    for (kind, form), found in verdicts.items():
        if all(f is not None for f in found):
            first = next(f for f in found if f is not None)
            dropped[(kind, form, f"{first.reason}: {first.detail}")] += len(found)
            bad.add((kind, form))
    out = []
    for e in encodings:
        # A reply that lists the prompt's examples back loses them, wherever else they fit.
        listed = {_form(x) for x in copied_examples([e.use_case, *e.skills, *e.tags], wording)}
        for kind, label in [("use_case", e.use_case), *(("skill", s) for s in e.skills)]:
            if _form(label) in listed and (kind, _form(label)) not in bad:
                dropped[(kind, _form(label), "label_copied: the prompt's examples listed")] += 1
        for t in e.tags:
            if _form(t) in listed and ("tag", _form(t)) not in bad:
                dropped[("tag", _form(t), "label_copied: the prompt's examples listed")] += 1

        def keep(kind: str, label: str, listed: set[str] = listed) -> bool:
            return (kind, _form(label)) not in bad and _form(label) not in listed

        clean = pb.InstructionEncoding()
        clean.CopyFrom(e)
        if not keep("use_case", e.use_case):
            clean.use_case = ""
        del clean.skills[:]
        clean.skills.extend(s for s in e.skills if keep("skill", s))
        del clean.tags[:]
        clean.tags.extend(t for t in e.tags if keep("tag", t))
        out.append(clean)
    return out, dropped


def _report(kind: str, normalized: Normalized, report: pb.InductionReport) -> None:
    for into, merged in sorted(normalized.merges.items()):
        report.merges.add(kind=kind, into=into, merged=sorted(merged))
    for label, count, reason in normalized.dropped:
        report.dropped.add(kind=kind, label=label, count=count, reason=reason)


async def build_induced(
    taxonomy_id: str,
    title: str,
    encodings: Sequence[pb.InstructionEncoding],
    embedder: Embedder | None,
    min_frequency: int,
    threshold: float,
    origin: str,
) -> tuple[pb.TaxonomyNode, pb.InductionReport]:
    """The induced tree (use cases > skills, weighted by frequency) and what was merged or
    dropped on the way (labels copied from the prompt or malformed first of all)."""
    encodings, screened = screen_labels(encodings)
    use_cases = await normalize_labels(
        [e.use_case for e in encodings if e.use_case], embedder, min_frequency, threshold
    )
    skills = await normalize_labels(
        [s for e in encodings for s in e.skills], embedder, min_frequency, threshold
    )
    tags = await normalize_labels(
        [t for e in encodings for t in e.tags], embedder, min_frequency, threshold
    )
    report = pb.InductionReport(
        encoded=len(encodings),
        use_cases=len(use_cases.counts),
        skills=len(skills.counts),
        tags=len(tags.counts),
    )
    for (kind, label, reason), count in sorted(screened.items()):
        report.dropped.add(kind=kind, label=label, count=count, reason=reason)
    _report("use_case", use_cases, report)
    _report("skill", skills, report)
    _report("tag", tags, report)

    skill_counts: dict[str, Counter[str]] = defaultdict(Counter)
    tag_counts: dict[str, Counter[str]] = defaultdict(Counter)
    examples: dict[str, list[str]] = defaultdict(list)
    for e in encodings:
        case = use_cases.mapping.get(e.use_case)
        if case is None:
            continue
        if len(examples[case]) < _EXAMPLES:
            examples[case].append(e.instruction)
        for skill in {skills.mapping[s] for s in e.skills if s in skills.mapping}:
            skill_counts[case][skill] += 1
            if len(examples[f"{case}/{skill}"]) < _EXAMPLES:
                examples[f"{case}/{skill}"].append(e.instruction)
        for tag in {tags.mapping[t] for t in e.tags if t in tags.mapping}:
            tag_counts[case][tag] += 1

    root = pb.TaxonomyNode(id=taxonomy_id, title=title, kind="root", weight=1.0, origin=origin)
    taken = {taxonomy_id}
    for case, count in sorted(use_cases.counts.items(), key=lambda kv: (-kv[1], kv[0])):
        case_node = root.children.add(
            id=_unique(slugify(case), taken),
            title=case,
            kind="use_case",
            weight=float(count),
            origin=origin,
        )
        case_node.attributes["frequency"].text = str(count)
        case_node.attributes["examples"].items.extend(examples[case])
        case_node.attributes["tags"].items.extend(t for t, _ in tag_counts[case].most_common(8))
        for skill, n in sorted(skill_counts[case].items(), key=lambda kv: (-kv[1], kv[0])):
            if n < min_frequency:
                continue  # a rare pairing of a kept use case and a kept skill
            skill_node = case_node.children.add(
                id=_unique(f"{case_node.id[:30]}-{slugify(skill, 30)}", taken),
                title=skill,
                kind="skill",
                weight=float(n),
                origin=origin,
            )
            skill_node.attributes["frequency"].text = str(n)
            skill_node.attributes["examples"].items.extend(examples[f"{case}/{skill}"])
    return root, report


def _unique(base: str, taken: set[str]) -> str:
    candidate, n = base, 2
    while candidate in taken:
        candidate = f"{base[:58]}-{n}"
        n += 1
    taken.add(candidate)
    return candidate
