"""Quality gates a draft must pass: not empty, not cut off, not a refusal, in the asked
language. Duplicates are checked against the job's other instructions (``taxoforge.dedupe``)."""

from __future__ import annotations

import re

from taxoforge.langid import check_language
from taxoforge.v1 import common_pb2 as pb

__all__ = ["check_draft", "looks_refused"]

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
