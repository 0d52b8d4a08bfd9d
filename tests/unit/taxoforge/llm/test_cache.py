"""The request cache's keys: one digest of everything that decides a reply, stable across
versions (entries written before a change are still found)."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any

import pytest

from taxoforge.llm.cache import request_key
from taxoforge.llm.client import prompt_sha256
from taxoforge.llm.types import ChatRequest
from taxoforge.v1 import common_pb2 as pb

CFG = pb.ModelConfig(model="default")


def _reference(cfg: pb.ModelConfig, req: ChatRequest) -> str:
    """The key as it has always been written."""
    parts: list[Any] = [
        cfg.model,
        req.messages,
        req.temperature,
        req.max_tokens,
        req.top_p,
        req.seed,
        req.json_schema,
    ]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()


REQUESTS = [
    ChatRequest(messages=[{"role": "user", "content": "Say something."}], temperature=0.7),
    ChatRequest(
        messages=[
            {"role": "system", "content": 'Be brief.\n\t"quoted" \\ \x01'},
            {"role": "user", "content": "Why?", "name": "u"},
        ],
        temperature=0.0,
        max_tokens=64,
        top_p=0.9,
        seed=12345,
        json_schema={"type": "object", "properties": {"b": {"type": "integer"}, "a": {}}},
    ),
    ChatRequest(messages=[{"role": "user", "content": "Pourquoi le ciel est-il bleu ? 天空"}]),
]


@pytest.mark.parametrize("req", REQUESTS)
def test_the_key_is_the_same_whether_the_prompts_json_is_reused_or_not(req: ChatRequest) -> None:
    messages_json = json.dumps(req.messages, sort_keys=True, ensure_ascii=False)

    assert request_key(CFG, req) == _reference(CFG, req)
    assert request_key(CFG, req, messages_json) == _reference(CFG, req)
    # The prompt's fingerprint is of that same text.
    assert prompt_sha256(req.messages) == hashlib.sha256(messages_json.encode()).hexdigest()


def test_every_setting_that_decides_a_reply_changes_the_key() -> None:
    base = REQUESTS[1]
    messages_json = json.dumps(base.messages, sort_keys=True, ensure_ascii=False)
    variants = [
        dataclasses.replace(base, temperature=0.5),
        dataclasses.replace(base, max_tokens=65),
        dataclasses.replace(base, top_p=None),
        dataclasses.replace(base, seed=1),
        dataclasses.replace(base, json_schema=None),
    ]
    keys = {request_key(CFG, v, messages_json) for v in variants}

    assert len(keys) == len(variants)
    assert request_key(CFG, base, messages_json) not in keys
    assert request_key(pb.ModelConfig(model="other"), base, messages_json) != request_key(
        CFG, base, messages_json
    )


def test_a_key_made_again_from_remembered_settings_is_the_same() -> None:
    # The settings' JSON is remembered per (model, sampling) tuple: a second key with the same
    # settings, or with settings equal in Python but written apart in JSON (1 and 1.0), is
    # still the reference digest, whichever came first.
    base = REQUESTS[0]
    messages_json = json.dumps(base.messages, sort_keys=True, ensure_ascii=False)
    for temperature in (1, 1.0, 1, 1.0):
        req = dataclasses.replace(base, temperature=temperature, seed=7)
        assert request_key(CFG, req, messages_json) == _reference(CFG, req)
    for seed in range(5000):  # more settings than are remembered: forgotten, not wrong
        req = dataclasses.replace(base, seed=seed)
        assert request_key(CFG, req, messages_json) == _reference(CFG, req)
