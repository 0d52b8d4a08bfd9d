"""A judged item as the selector's one record shape, an ``Example``: the response to teach, the
preference pair when it has one, and the generation metadata and judge's verdicts as its
provenance. Exports (``services.selector.exports``) are the only conversion to output formats.
"""

from __future__ import annotations

from typing import Any

from services.selector.examples import Example, Message
from taxoforge.tokens import messages_tokens
from taxoforge.v1 import common_pb2 as pb

__all__ = ["contrastive_history", "example_of"]


def contrastive_history(judgment: pb.Judgment) -> list[dict[str, Any]]:
    """Contrastive filtering's rounds that decided something, oldest first."""
    return [
        {"version": c.version, "gap": c.gap, "decision": c.decision}
        for c in [*judgment.instruction.contrastive, judgment.contrastive]
        if c.decision
    ]


def _metadata(judgment: pb.Judgment) -> dict[str, Any]:
    """How the instruction was made: its seed, model, template and rejected drafts."""
    instruction = judgment.instruction
    seed = instruction.seed
    call = instruction.call
    meta: dict[str, Any] = {
        "job_id": judgment.job_id,
        "item_id": judgment.item_id,
        "node_id": seed.node_id,
        "node_path": seed.node_path,
        "language": seed.language,
        "strategy": instruction.strategy or seed.strategy,
        "difficulty": seed.difficulty,
        "task_type": seed.task_type,
        "instruction_model": call.model,
        "instruction_template": f"{call.template}@{call.template_version}",
        "instruction_prompt_sha256": call.prompt_sha256,
        "rejected_drafts": [r.reason for r in instruction.rejections],
    }
    if instruction.concepts:
        meta["glan_sessions"] = [s.title for s in instruction.sessions]
        meta["glan_concepts"] = list(instruction.concepts)
    if instruction.use_case:
        meta["codeclm_use_case"] = instruction.use_case
        meta["codeclm_skills"] = list(instruction.skills)
        meta["rubric_rounds"] = [
            {"round": r.round, "rubric": r.rubric, "action": r.action} for r in instruction.rounds
        ]
    return meta


def _best(judgment: pb.Judgment) -> tuple[pb.Response, pb.Score] | None:
    """The response to teach: contrastive filtering's kept answer, else the best-scored one."""
    by_id = {r.id: r for r in judgment.responses}
    decision = judgment.contrastive
    if decision.decision in ("keep_strong", "keep_target"):
        kept = decision.strong_id if decision.decision == "keep_strong" else decision.target_id
        score = next((s for s in judgment.scores if s.response_id == kept and not s.failed), None)
        if score is None:  # no valid score of its own: the contrastive one, on the mode's scale
            value = decision.strong_score if kept == decision.strong_id else decision.target_score
            scale = 10.0 if judgment.mode == "pairwise" else 1.0
            score = pb.Score(response_id=kept, score=value * scale)
        if kept in by_id and by_id[kept].text.strip():
            return by_id[kept], score
    ranked = sorted(
        (s for s in judgment.scores if not s.failed), key=lambda s: (-s.score, s.response_id)
    )
    for score in ranked:
        if score.response_id in by_id and by_id[score.response_id].text.strip():
            return by_id[score.response_id], score
    return None


def _verdicts(judgment: pb.Judgment) -> dict[str, Any]:
    """The judge's verdicts on the item: every score, every comparison in both orders."""
    out: dict[str, Any] = {
        "mode": judgment.mode or "rubric",
        "scores": [
            {
                "response_id": s.response_id,
                "score": s.score,
                "failed": s.failed,
                "aspects": dict(s.aspects),
                "rationale": s.rationale,
                "model": s.call.model,
                "template": f"{s.call.template}@{s.call.template_version}",
            }
            for s in judgment.scores
        ],
    }
    if judgment.comparisons:
        out["comparisons"] = [
            {
                "a_id": c.a_id,
                "b_id": c.b_id,
                "a_first": [c.a_first_a, c.a_first_b],
                "b_first": [c.b_first_a, c.b_first_b],
                "a": c.a,
                "b": c.b,
                "verdict": c.verdict,
                "inconsistent": c.inconsistent,
                "failed": c.failed,
            }
            for c in judgment.comparisons
        ]
    return out


def _add_preference(example: Example, judgment: pb.Judgment) -> None:
    """The item's chosen/rejected pair with an explicit prompt, when the judge made one."""
    if not judgment.HasField("pair"):
        return
    pair = judgment.pair
    by_id = {r.id: r for r in judgment.responses}
    chosen, rejected = by_id.get(pair.chosen_id), by_id.get(pair.rejected_id)
    if chosen is None or rejected is None:
        return
    rationale = {s.response_id: s.rationale for s in judgment.scores}
    example["prompt"] = [Message(role="user", content=judgment.instruction.text)]
    example["chosen"] = [Message(role="assistant", content=chosen.text)]
    example["rejected"] = [Message(role="assistant", content=rejected.text)]
    example["score_chosen"] = pair.chosen_score
    example["score_rejected"] = pair.rejected_score
    example["margin"] = pair.margin
    example["metadata"]["preference"] = {
        "chosen_id": chosen.id,
        "rejected_id": rejected.id,
        "chosen_model": chosen.call.model,
        "rejected_model": rejected.call.model,
        "chosen_rationale": rationale.get(chosen.id, ""),
        "rejected_rationale": rationale.get(rejected.id, ""),
    }


def example_of(judgment: pb.Judgment) -> Example | None:
    """A judged item as an example: its best response to teach, and its preference pair when
    it has one; None when no response has a valid score and a non-empty text."""
    best = _best(judgment)
    if best is None:
        return None
    response, score = best
    instruction = judgment.instruction
    seed = instruction.seed
    mode = judgment.mode or "rubric"
    messages = [
        Message(role="user", content=instruction.text),
        Message(role="assistant", content=response.text),
    ]
    metadata: dict[str, Any] = {
        **_metadata(judgment),
        "response_model": response.call.model,
        "response_id": response.id,
        "judge_model": score.call.model,
        "judge_rationale": score.rationale,
        "judge_mode": mode,
        "aspects": dict(score.aspects),
    }
    if instruction.contrastive or judgment.contrastive.decision:
        metadata["contrastive"] = contrastive_history(judgment)
    metadata["verdicts"] = _verdicts(judgment)
    example: Example = {
        "id": f"{judgment.job_id}/{judgment.item_id}",
        "item_id": judgment.item_id,
        "shape": "generated",
        "messages": messages,
        "query": instruction.text,
        "response": response.text,
        "tokens": messages_tokens(messages),
        "language": seed.language,
        "node": seed.node_path,
        "difficulty": seed.difficulty,
        "task_type": seed.task_type,
        # The judge's score of the taught reply on 1-100: rubric scores are on 1-10.
        "judge_score": score.score * 10.0 if mode != "pairwise" else score.score,
        "metadata": metadata,
    }
    _add_preference(example, judgment)
    return example
