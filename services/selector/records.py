"""A judged item's records: the conversation to teach and the preference pair (TRL shapes)."""

from __future__ import annotations

from typing import Any

from taxoforge.v1 import common_pb2 as pb

__all__ = ["Record", "preference_record", "sft_record"]

Record = dict[str, Any]


def _metadata(judgment: pb.Judgment) -> Record:
    instruction = judgment.instruction
    seed = instruction.seed
    call = instruction.call
    meta: Record = {
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


def sft_record(judgment: pb.Judgment) -> tuple[float, Record] | None:
    """The item as a conversation with its best-scored response (TRL/OpenAI ``messages``)."""
    best = _best(judgment)
    if best is None:
        return None
    response, score = best
    record: Record = {
        "id": f"{judgment.job_id}/{judgment.item_id}",
        "messages": [
            {"role": "user", "content": judgment.instruction.text},
            {"role": "assistant", "content": response.text},
        ],
        "score": score.score,
        "metadata": {
            **_metadata(judgment),
            "response_model": response.call.model,
            "response_id": response.id,
            "judge_model": score.call.model,
            "judge_rationale": score.rationale,
            "judge_mode": judgment.mode or "rubric",
            "aspects": dict(score.aspects),
        },
    }
    if judgment.instruction.contrastive or judgment.contrastive.decision:
        record["metadata"]["contrastive"] = [
            {"version": c.version, "gap": c.gap, "decision": c.decision}
            for c in [*judgment.instruction.contrastive, judgment.contrastive]
            if c.decision
        ]
    return score.score, record


def preference_record(judgment: pb.Judgment) -> Record | None:
    """The item's chosen/rejected pair with an explicit prompt (TRL preference format)."""
    if not judgment.HasField("pair"):
        return None
    pair = judgment.pair
    by_id = {r.id: r for r in judgment.responses}
    rationale = {s.response_id: s.rationale for s in judgment.scores}
    chosen, rejected = by_id.get(pair.chosen_id), by_id.get(pair.rejected_id)
    if chosen is None or rejected is None:
        return None
    return {
        "id": f"{judgment.job_id}/{judgment.item_id}",
        "prompt": [{"role": "user", "content": judgment.instruction.text}],
        "chosen": [{"role": "assistant", "content": chosen.text}],
        "rejected": [{"role": "assistant", "content": rejected.text}],
        "score_chosen": pair.chosen_score,
        "score_rejected": pair.rejected_score,
        "margin": pair.margin,
        "metadata": {
            **_metadata(judgment),
            "chosen_id": chosen.id,
            "rejected_id": rejected.id,
            "chosen_model": chosen.call.model,
            "rejected_model": rejected.call.model,
            "chosen_rationale": rationale.get(chosen.id, ""),
            "rejected_rationale": rationale.get(rejected.id, ""),
        },
    }
