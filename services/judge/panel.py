"""One item's whole judging (design §1): rubric scores or pairwise comparisons in both orders,
CodecLM contrastive filtering, and the judgment with its TaP-style preference pair."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

from services.judge.contrastive import DEFAULT_GAP, Contrastive
from services.judge.pairwise import Pairwise, all_pairs, pairwise_scores, rank_pair
from services.judge.rubric import Rubric, pick_pair
from services.judge.verdicts import VerdictRules
from taxoforge.llm import LLMClient
from taxoforge.methods import MAX_SELF_RUBRICS_ROUNDS
from taxoforge.v1 import common_pb2 as pb

__all__ = ["Judge", "Panel", "build_judgment"]


class Judge:
    """The judge's model calls, one verdict each, whatever the mode."""

    def __init__(self, llm: LLMClient, rules: VerdictRules | None = None) -> None:
        rules = rules or VerdictRules()
        rubric, pairwise = Rubric(llm, rules), Pairwise(llm, rules)
        contrastive = Contrastive(llm, rules)
        self.score = rubric.score
        self.compare = pairwise.compare
        self.compare_samples = pairwise.compare_samples
        self.contrastive = contrastive.contrastive


def build_judgment(
    candidates: pb.Candidates,
    scores: Sequence[pb.Score],
    min_margin: float,
    comparisons: Sequence[pb.Comparison] = (),
    config: pb.JudgeConfig | None = None,
) -> pb.Judgment:
    """The item's judgment: every candidate with its score, comparisons, and the pair if any."""
    instruction = candidates.instruction
    mode = (config.mode if config else "") or "rubric"
    judgment = pb.Judgment(
        job_id=instruction.job_id,
        item_id=instruction.item_id,
        instruction=instruction,
        responses=candidates.responses,
        scores=scores,
        comparisons=comparisons,
        mode=mode,
        usable=True,
    )
    # Preference pairs come from the responders' candidates; CodecLM's target answer is only
    # there to be compared with (contrastive filtering), and is taught only if it is kept.
    responders = {r.id for r in candidates.responses if r.responder >= 0}
    pairable = [s for s in scores if s.response_id in responders]
    if mode == "pairwise":
        pair = rank_pair(pairable, comparisons, min_margin)
        if (
            config is not None
            and config.inconsistent == "drop"
            and any(c.inconsistent for c in comparisons)
        ):
            judgment.usable = False
            judgment.unusable_reason = "an inconsistent comparison (policy: drop)"
    else:
        pair = pick_pair(pairable, min_margin)
    if pair is not None:
        judgment.pair.CopyFrom(pair)
    return judgment


class Panel:
    """One item's whole judging: rubric scores or pairwise comparisons of the responders'
    candidates, the pair, and (when the target answered) contrastive filtering."""

    def __init__(self, judge: Judge) -> None:
        self._judge = judge

    async def run(
        self,
        candidates: pb.Candidates,
        cfg: pb.ModelConfig,
        config: pb.JudgeConfig,
        min_margin: float,
        rng: random.Random,
        contrastive: bool = False,
        scores: Sequence[pb.Score] | None = None,
    ) -> pb.Judgment:
        """Judge the candidates (the model client counts every call in the job's usage).

        Args:
            scores: in rubric mode, the candidates' scores when they are already made (the
                worker stores each once); made here otherwise.
        """
        instruction = candidates.instruction
        strong = [r for r in candidates.responses if r.responder >= 0]
        comparisons: list[pb.Comparison] = []
        if config.mode == "pairwise":
            comparisons = list(
                await asyncio.gather(
                    *(
                        self._judge.compare(instruction, a, b, cfg, config, rng)
                        for a, b in all_pairs(strong)
                    )
                )
            )
            scores = pairwise_scores(strong, comparisons)
        elif scores is None:
            scores = await asyncio.gather(
                *(self._judge.score(instruction, r, cfg) for r in candidates.responses)
            )
        judgment = build_judgment(candidates, scores, min_margin, comparisons, config)
        target = next((r for r in candidates.responses if r.responder < 0), None)
        if contrastive and target is not None and strong:
            limit = config.contrastive_gap or DEFAULT_GAP
            decision, _ = await self._judge.contrastive(
                instruction,
                _best(strong, scores),
                target,
                cfg,
                limit,
                rounds_left=len(instruction.rounds) < MAX_SELF_RUBRICS_ROUNDS,
            )
            judgment.contrastive.CopyFrom(decision)
            if decision.decision == "exhausted":
                judgment.usable = False
                judgment.unusable_reason = (
                    f"contrastive gap {decision.gap:.1f} stayed within {limit:g} "
                    f"after {len(instruction.rounds)} Self-Rubrics rounds"
                )
        return judgment


def _best(responses: Sequence[pb.Response], scores: Sequence[pb.Score]) -> pb.Response:
    by_id = {s.response_id: s for s in scores if not s.failed}
    return max(responses, key=lambda r: (by_id[r.id].score if r.id in by_id else -1.0, r.id))
