"""Settings read from TAXOFORGE_* environment variables (the suite's conftest clears them)."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from taxoforge.settings import LLMSettings, ServiceSettings


def test_defaults_without_environment() -> None:
    settings = ServiceSettings()

    assert settings.grpc_port == 50051
    assert settings.worker_concurrency == 32
    assert settings.bus.nats_url == "nats://127.0.0.1:4222"
    assert settings.llm.max_concurrency == 64
    assert settings.llm.transport == "auto"


def test_grpc_port_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAXOFORGE_GRPC_PORT", "6001")

    assert ServiceSettings().grpc_port == 6001


def test_nats_url_reaches_the_nested_bus_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAXOFORGE_NATS_URL", "nats://bus.internal:4333")
    monkeypatch.setenv("TAXOFORGE_REPLICAS", "3")

    bus = ServiceSettings().bus

    assert bus.nats_url == "nats://bus.internal:4333"
    assert bus.replicas == 3


def test_llm_settings_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAXOFORGE_LLM_MAX_CONCURRENCY", "7")
    monkeypatch.setenv("TAXOFORGE_LLM_MODEL", "openai/other")
    monkeypatch.setenv("TAXOFORGE_LLM_API_KEY", "sk-test")

    llm = ServiceSettings().llm

    assert llm.max_concurrency == 7
    assert llm.model == "openai/other"
    assert llm.api_key is not None
    assert llm.api_key.get_secret_value() == "sk-test"
    assert "sk-test" not in repr(llm)


def test_environment_is_read_when_settings_are_made(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAXOFORGE_GRPC_PORT", "6001")
    first = ServiceSettings()
    monkeypatch.setenv("TAXOFORGE_GRPC_PORT", "6002")

    assert first.grpc_port == 6001
    assert ServiceSettings().grpc_port == 6002


def test_explicit_values_win_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAXOFORGE_LLM_MODEL", "openai/from-env")

    assert LLMSettings(model="openai/explicit").model == "openai/explicit"


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("TAXOFORGE_WORKER_CONCURRENCY", "0", "worker_concurrency"),
        ("TAXOFORGE_GRPC_PORT", "70000", "grpc_port"),
        ("TAXOFORGE_GRPC_PORT", "not-a-port", "grpc_port"),
        ("TAXOFORGE_MAX_DELIVER", "0", "max_deliver"),
        ("TAXOFORGE_ACK_WAIT_S", "0", "ack_wait_s"),
        ("TAXOFORGE_LOG_FORMAT", "xml", "log_format"),
    ],
)
def test_invalid_service_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError, match=field):
        ServiceSettings()


@pytest.mark.parametrize(
    ("name", "value", "field"),
    [
        ("TAXOFORGE_LLM_MAX_CONCURRENCY", "0", "max_concurrency"),
        ("TAXOFORGE_LLM_TRANSPORT", "grpc", "transport"),
        ("TAXOFORGE_LLM_STRUCTURED_RETRIES", "0", "structured_retries"),
        ("TAXOFORGE_REPLICAS", "9", "replicas"),
    ],
)
def test_invalid_nested_values_are_rejected(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, field: str
) -> None:
    monkeypatch.setenv(name, value)

    with pytest.raises(ValidationError, match=field):
        ServiceSettings()


def test_invalid_value_passed_directly_is_rejected() -> None:
    with pytest.raises(ValidationError, match="worker_concurrency"):
        ServiceSettings(worker_concurrency=0)
