"""Judge service settings."""

from __future__ import annotations

from pydantic import Field

from services.judge.verdicts import VerdictRules
from taxoforge.settings import ServiceSettings

__all__ = ["JudgeSettings"]


class JudgeSettings(ServiceSettings):
    """What makes a judge reply usable, beyond its shape (``services.judge.verdicts``)."""

    # How far (1-10 points) a rubric's overall score may lie outside the range of its aspect
    # scores (TAXOFORGE_JUDGE_ASPECT_TOLERANCE). 2: one weak aspect may pull the overall down
    # to it and a little past it, but every aspect at 8 or more with an overall of 5 or less
    # (or the reverse) is a contradiction, asked again.
    judge_aspect_tolerance: float = Field(default=2.0, ge=0, le=9)
    # Letters (any script) a rationale needs (TAXOFORGE_JUDGE_MIN_RATIONALE_LETTERS): 2 refuses
    # punctuation and bare numbers ("][", "7") and admits the shortest real reason in any
    # language, CJK included.
    judge_min_rationale_letters: int = Field(default=2, ge=0)

    def verdict_rules(self) -> VerdictRules:
        """The rules every verdict of this process is validated under."""
        return VerdictRules(
            aspect_tolerance=self.judge_aspect_tolerance,
            min_rationale_letters=self.judge_min_rationale_letters,
        )
