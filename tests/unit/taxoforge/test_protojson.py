"""Protobuf messages as JSON-ready dicts."""

from __future__ import annotations

import json

from taxoforge.protojson import to_dict
from taxoforge.v1 import common_pb2 as pb


def test_int64_stays_an_int() -> None:
    job = pb.Job(id="j", created_at_ms=1_700_000_000_123, planned=2**40)

    out = to_dict(job)

    assert out["created_at_ms"] == 1_700_000_000_123
    assert isinstance(out["created_at_ms"], int)
    assert out["planned"] == 2**40
    # uint64 beyond int64 survives too
    assert to_dict(pb.Recipe(seed=2**64 - 1))["seed"] == 2**64 - 1


def test_enums_are_names() -> None:
    assert to_dict(pb.Job(state=pb.JOB_STATE_RUNNING)) == {"state": "JOB_STATE_RUNNING"}


def test_only_set_fields_appear() -> None:
    assert to_dict(pb.Job()) == {}
    assert to_dict(pb.Job(id="j")) == {"id": "j"}


def test_explicitly_set_optional_zero_is_kept() -> None:
    cfg = pb.ModelConfig(model="m", temperature=0.0)

    assert to_dict(cfg) == {"model": "m", "temperature": 0.0}


def test_nested_and_repeated_messages() -> None:
    recipe = pb.Recipe(
        name="r",
        languages=[pb.LanguageShare(code="en", share=0.5), pb.LanguageShare(code="fr", share=0.5)],
        models=pb.RoleModels(
            generator=pb.ModelConfig(model="g"),
            responders=[pb.ModelConfig(model="a"), pb.ModelConfig(model="b", max_tokens=64)],
        ),
    )

    assert to_dict(recipe) == {
        "name": "r",
        "languages": [{"code": "en", "share": 0.5}, {"code": "fr", "share": 0.5}],
        "models": {
            "generator": {"model": "g"},
            "responders": [{"model": "a"}, {"model": "b", "max_tokens": 64}],
        },
    }


def test_map_fields_become_dicts() -> None:
    report = pb.SelectionReport(
        judged=10,
        failed=3,
        failures_by_stage={"generate": 2, "judge": 1},
        usage=pb.Usage(prompt_tokens=100, calls=4),
    )

    out = to_dict(report)

    assert out == {
        "judged": 10,
        "failed": 3,
        "failures_by_stage": {"generate": 2, "judge": 1},
        "usage": {"prompt_tokens": 100, "calls": 4},
    }
    assert all(isinstance(v, int) for v in out["failures_by_stage"].values())


def test_output_is_json_serialisable() -> None:
    job = pb.Job(
        id="j",
        state=pb.JOB_STATE_SUCCEEDED,
        recipe=pb.Recipe(count=5, seed=9),
        datasets=[pb.DatasetInfo(kind="sft", records=3, bytes=1024)],
        selection=pb.SelectionReport(failures_by_stage={"judge": 1}),
    )

    text = json.dumps(to_dict(job))

    assert json.loads(text)["datasets"][0]["records"] == 3
    assert '"state": "JOB_STATE_SUCCEEDED"' in text
