"""The HTTP transport's model names (no request is made)."""

from __future__ import annotations

import pytest

from taxoforge.llm.http_transport import model_name


@pytest.mark.parametrize(
    ("model", "name"),
    [
        ("openai/gpt-4o-mini", "gpt-4o-mini"),
        ("hosted_vllm/meta-llama/Llama-3.1-8B", "meta-llama/Llama-3.1-8B"),
        ("openai_like/qwen2.5", "qwen2.5"),
        ("llamafile/smollm2", "smollm2"),
        ("openai/openai/nested", "openai/nested"),
    ],
)
def test_provider_prefix_is_removed(model: str, name: str) -> None:
    assert model_name(model) == name


@pytest.mark.parametrize("model", ["gpt-4o-mini", "anthropic/claude-3-5-sonnet", "fake", ""])
def test_other_names_are_unchanged(model: str) -> None:
    assert model_name(model) == model
