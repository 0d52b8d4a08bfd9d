"""CodecLM contrastive filtering: the strong model's answer against the target model's, and
whether the instruction is kept or goes back for another Self-Rubrics round."""

from __future__ import annotations

import asyncio

from services.judge.verdicts import PROMPTS, TenVerdict, VerdictRules, ask_on_responses, checked
from taxoforge.llm import LLMClient
from taxoforge.prompts import load_template
from taxoforge.v1 import common_pb2 as pb

__all__ = ["DEFAULT_GAP", "Contrastive"]

DEFAULT_GAP = 3.0


class Contrastive:
    """The contrastive model calls: both answers, in both orders."""

    def __init__(self, llm: LLMClient, rules: VerdictRules | None = None) -> None:
        self._llm = llm
        self._template = load_template(PROMPTS / "contrastive.yaml")
        self._verdict = checked(TenVerdict, rules or VerdictRules())

    async def contrastive(
        self,
        instruction: pb.Instruction,
        strong: pb.Response,
        target: pb.Response,
        cfg: pb.ModelConfig,
        gap: float,
        rounds_left: bool,
    ) -> tuple[pb.ContrastiveRound, list[pb.LLMCall]]:
        """Both answers scored 1-10 in both orders and averaged; G = strong - target.
        |G| > gap keeps the instruction (with the better answer); otherwise it goes back for
        another Self-Rubrics round while rounds are left."""
        (s1, t1, _, first), (t2, s2, _, second) = await asyncio.gather(
            ask_on_responses(
                self._llm, self._template, self._verdict, cfg, instruction, strong, target
            ),
            ask_on_responses(
                self._llm, self._template, self._verdict, cfg, instruction, target, strong
            ),
        )
        out = pb.ContrastiveRound(
            version=instruction.version,
            strong_id=strong.id,
            target_id=target.id,
            strong_score=(s1 + s2) / 2,
            target_score=(t1 + t2) / 2,
        )
        out.gap = out.strong_score - out.target_score
        if abs(out.gap) > gap:
            out.decision = "keep_strong" if out.gap > 0 else "keep_target"
        else:
            out.decision = "refine" if rounds_left else "exhausted"
        out.calls.extend([first, second])
        return out, [first, second]
