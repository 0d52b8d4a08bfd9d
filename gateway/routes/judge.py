"""Synchronous judging for other systems: one item or a small batch, answered now."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from google.protobuf.json_format import MessageToDict

from gateway.deps import BackendDep, authenticated
from gateway.judge_schemas import JudgeRequestSpec
from gateway.views import ERROR_RESPONSES
from taxoforge.protojson import to_dict
from taxoforge.v1 import common_pb2 as pb

router = APIRouter(
    prefix="/v1", tags=["judge"], dependencies=authenticated, responses=ERROR_RESPONSES
)


def _view(judgment: pb.Judgment) -> dict[str, Any]:
    out: dict[str, Any] = {
        "mode": judgment.mode,
        "usable": judgment.usable,
        "scores": [
            {
                "id": s.response_id,
                "score": None if s.failed else s.score,
                "aspects": dict(s.aspects),
                "rationale": s.rationale,
                "failed": s.failed,
            }
            for s in judgment.scores
        ],
        "comparisons": [_comparison(c) for c in judgment.comparisons],
        "pair": to_dict(judgment.pair) if judgment.HasField("pair") else None,
    }
    if judgment.unusable_reason:
        out["unusable_reason"] = judgment.unusable_reason
    return out


def _comparison(c: pb.Comparison) -> dict[str, Any]:
    out = MessageToDict(
        c, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
    )
    out.pop("calls", None)
    return out


@router.post("/judge", summary="Judge one instruction's responses, or a small batch, now")
async def judge(spec: JudgeRequestSpec, request: Request, backend: BackendDep) -> dict[str, Any]:
    """Rubric scores (1-10 with aspects) or pairwise comparisons (1-100, both orders), and the
    chosen/rejected pair when the margin holds. Responses are treated as untrusted data."""
    batch = spec.to_proto(request.app.state.models)
    resp = await backend.judge(batch)
    views = [_view(j) for j in resp.judgments]
    return {"judgments": views} if spec.items is not None else views[0]
