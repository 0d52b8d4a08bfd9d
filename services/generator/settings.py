"""Generator service settings."""

from __future__ import annotations

from pydantic import Field

from taxoforge.degenerate import Thresholds
from taxoforge.settings import ServiceSettings

__all__ = ["GeneratorSettings"]

_T = Thresholds()


class GeneratorSettings(ServiceSettings):
    """Adds generation limits and where the degenerate-record gates draw their lines (the
    defaults are ``taxoforge.degenerate.Thresholds``'s, each tested there)."""

    # Tries to get a usable (non-empty) instruction before the item fails.
    instruction_attempts: int = Field(default=4, ge=1)
    # Samples one response candidate may take to pass the gates (a new sampling seed each).
    response_attempts: int = Field(default=3, ge=1)
    # Times a candidate near-identical to an earlier one is drawn again (each with
    # ``response_attempts`` samples) before the item fails.
    candidate_redraws: int = Field(default=2, ge=0)
    # echo: the answer holds this share of the instruction (opening and close too), in order,
    # and is at most gate_echo_length_factor times its length.
    gate_echo_containment: float = Field(default=_T.echo_containment, gt=0, le=1)
    gate_echo_length_factor: float = Field(default=_T.echo_length_factor, ge=1)
    # Two candidates at least this similar are one (the second is drawn again).
    gate_near_identical: float = Field(default=_T.near_identical, gt=0, le=1)
    # A run of this many tokens of a template's fixed wording is a prompt leak.
    gate_leak_ngram: int = Field(default=_T.leak_ngram, ge=3)
    # Runaway repetition: n-grams of this length seen 3+ times covering this share, or a line
    # repeated this many times in a row.
    gate_repeat_ngram: int = Field(default=_T.repeat_ngram, ge=2)
    gate_repeat_coverage: float = Field(default=_T.repeat_coverage, gt=0, le=1)
    gate_repeat_lines: int = Field(default=_T.repeat_lines, ge=2)
    # Mixed language: sentences with fewer letters are not judged; how sure the detector must
    # be that a sentence is in another language.
    gate_mixed_min_letters: int = Field(default=_T.mixed_min_letters, ge=8)
    gate_mixed_sure: float = Field(default=_T.mixed_sure, gt=0, le=1)

    def thresholds(self) -> Thresholds:
        """The gates' thresholds these settings give."""
        return Thresholds(
            echo_containment=self.gate_echo_containment,
            echo_length_factor=self.gate_echo_length_factor,
            near_identical=self.gate_near_identical,
            leak_ngram=self.gate_leak_ngram,
            repeat_ngram=self.gate_repeat_ngram,
            repeat_coverage=self.gate_repeat_coverage,
            repeat_lines=self.gate_repeat_lines,
            mixed_min_letters=self.gate_mixed_min_letters,
            mixed_sure=self.gate_mixed_sure,
        )
