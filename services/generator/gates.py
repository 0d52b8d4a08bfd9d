"""Quality gates a draft must pass: not empty, not cut off, not a refusal, in the asked
language (``check_draft``); then the degenerate-record gates of ``taxoforge.degenerate``, before
any judge sees the text: an instruction must be a request, leak none of our prompt, not loop and
not switch language mid-way (``check_instruction``); a response must not restate its
instruction, be only chatter, leak our prompt, loop or switch language (``check_response``).
Duplicates are checked against the job's other instructions (``taxoforge.dedupe``),
near-identical candidates against each other (``responses``)."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from taxoforge.degenerate import (
    DEFAULT,
    Finding,
    PromptSource,
    Thresholds,
    echo,
    mixed_language,
    no_answer,
    not_a_request,
    prompt_leak,
    prompt_source,
    repetition,
)
from taxoforge.langid import check_language
from taxoforge.prompts import PromptTemplate
from taxoforge.v1 import common_pb2 as pb

__all__ = [
    "Written",
    "check_draft",
    "check_instruction",
    "check_response",
    "looks_refused",
    "seed_labels",
    "source_of",
]

# Refusals and non-answers in the languages drafts are most often written in.
_REFUSAL = re.compile(
    r"^\s*(?:i'?m sorry|i am sorry|sorry,|i can(?:no|')t\b|i cannot|i'm not able|i am not able|"
    r"i am unable|i'm unable|as an ai\b|as a language model|i won't\b|"
    r"(?:je suis )?désolée?\b|je ne peux pas|lo siento|no puedo|es tut mir leid|ich kann nicht|"
    r"mi dispiace|non posso|desculpe|não posso)",
    re.IGNORECASE,
)


def looks_refused(text: str) -> bool:
    """Whether the text starts like a refusal (typographic apostrophes count as plain ones)."""
    return bool(_REFUSAL.match(text.replace("\u2019", "'").replace("\u02bc", "'")))


def check_draft(
    text: str,
    finish_reason: str,
    language: str,
    check_lang: bool,
    refusals: bool = True,
    truncation: bool = True,
) -> pb.Rejection | None:
    """Why a draft cannot be used, or None."""
    if not text.strip():
        return pb.Rejection(reason="empty", text=text)
    if truncation and finish_reason == "length":
        return pb.Rejection(reason="truncated", text=text, detail="hit the token limit")
    if refusals and looks_refused(text):
        return pb.Rejection(reason="refused", text=text)
    if check_lang and language:
        verdict = check_language(text, language)
        if not verdict.ok:
            return pb.Rejection(
                reason="wrong_language",
                text=text,
                detail=f"asked {language}, looks like {verdict.detected} "
                f"({verdict.confidence:.2f})",
            )
    return None


def source_of(
    template: PromptTemplate,
    messages: Sequence[dict[str, str]] = (),
    paths: Sequence[str] = (),
    extra: Sequence[str] = (),
    labels: Sequence[str] = (),
) -> PromptSource:
    """What a reply of ``template`` rendered into ``messages`` must not leak: the template's
    fixed wording and ``extra`` wording our code put in its fields, its delimiters and markers,
    the taxonomy ``paths`` it was given, and its field ``labels`` as lines of their own."""
    source = prompt_source(template.system, template.user, messages, paths)
    return PromptSource(
        wording=source.wording + tuple(e for e in extra if e.strip()),
        tags=source.tags,
        markers=source.markers,
        paths=source.paths,
        labels=tuple(label for label in labels if label.strip()),
    )


def seed_labels(seed: pb.Seed, *more: str) -> list[str]:
    """The names a seed gives a prompt (its node, path, task type, syllabus and concepts)."""
    out = [seed.node_title, seed.task_title, seed.task_type, seed.node_id, *more]
    out.extend(p for p in seed.node_path.split(">"))
    for session in seed.syllabus:
        out.append(session.title)
        out.extend(session.key_concepts)
    return [label.strip() for label in out if label.strip()]


def _rejection(finding: Finding | None, text: str) -> pb.Rejection | None:
    if finding is None:
        return None
    return pb.Rejection(reason=finding.reason, text=text, detail=finding.detail)


@dataclass(frozen=True)
class Written:
    """What model text is checked against: the prompt it came from, the language asked for
    (checked per sentence unless the recipe turned language checks off), the thresholds."""

    source: PromptSource
    language: str
    check_lang: bool
    thresholds: Thresholds = DEFAULT

    def finding(self, text: str) -> Finding | None:
        """What is wrong with any text a model wrote for us: our prompt in it, runaway
        repetition, or a sentence in another language."""
        t = self.thresholds
        return (
            prompt_leak(text, self.source, t)
            or repetition(text, t)
            or (mixed_language(text, self.language, t) if self.check_lang else None)
        )


def check_instruction(text: str, written: Written) -> pb.Rejection | None:
    """Why an instruction that passed ``check_draft`` is still degenerate, or None."""
    return _rejection(not_a_request(text) or written.finding(text), text)


def check_response(instruction: str, text: str, written: Written) -> pb.Rejection | None:
    """Why a response that passed ``check_draft`` is still degenerate, or None."""
    finding = (
        echo(instruction, text, written.thresholds) or no_answer(text) or written.finding(text)
    )
    return _rejection(finding, text)
