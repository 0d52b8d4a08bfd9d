"""The selection vocabulary, defined once: the gateway's API, the selector, its dataset card
and the CLI all read these (the strings are the JSON API's)."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = [
    "EXPORT_FORMATS",
    "IMPORT_SHAPES",
    "PREFERENCE_FORMATS",
    "QUOTA_RULES",
    "SELECTION_METHODS",
    "SFT_FORMATS",
    "ExportFormat",
    "ImportShape",
    "QuotaRule",
    "SelectionMethod",
]

# TACOS (the default), then the baselines it is measured against on the same candidates.
SelectionMethod = Literal["tacos", "deita", "alpagasus", "random", "longest", "score"]
SELECTION_METHODS: tuple[str, ...] = get_args(SelectionMethod)

# A job's exports, in the order the card lists them (the first is the default config).
ExportFormat = Literal["sft", "preference", "openai-sft", "openai-dpo", "alpaca", "sharegpt"]
EXPORT_FORMATS: tuple[str, ...] = get_args(ExportFormat)
# The formats of the conversation to teach, and of the preference pair.
SFT_FORMATS: tuple[str, ...] = ("sft", "openai-sft", "alpaca", "sharegpt")
PREFERENCE_FORMATS: tuple[str, ...] = ("preference", "openai-dpo")

# How a budget is shared between clusters.
QuotaRule = Literal["proportional", "sqrt", "equal"]
QUOTA_RULES: tuple[str, ...] = get_args(QuotaRule)

# The row shapes an import reads ("auto": each row by its keys).
ImportShape = Literal["messages", "alpaca", "sharegpt", "preference"]
IMPORT_SHAPES: tuple[str, ...] = get_args(ImportShape)
