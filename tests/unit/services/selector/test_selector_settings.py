"""Selector settings: the import limits come from the environment, within what NATS carries."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from services.selector.settings import SelectorSettings


def test_the_import_limits_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TAXOFORGE_IMPORT_MAX_RECORD_BYTES", "65536")
    monkeypatch.setenv("TAXOFORGE_IMPORT_MAX_COMPRESSION_RATIO", "20")

    limits = SelectorSettings().selection_defaults().import_limits

    assert limits.max_record_bytes == 65536
    assert limits.max_compression_ratio == 20
    assert limits.max_page_bytes == 32 << 20


def test_the_default_record_limit_is_well_under_the_nats_max_payload() -> None:
    limits = SelectorSettings().selection_defaults().import_limits

    assert limits.max_record_bytes == 256 << 10


def test_a_record_limit_two_records_would_not_fit_one_message_with_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TAXOFORGE_IMPORT_MAX_RECORD_BYTES", str(1 << 20))

    with pytest.raises(ValidationError, match="import_max_record_bytes"):
        SelectorSettings()
