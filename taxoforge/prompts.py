"""Prompts are data: versioned templates in YAML files, rendered with an item's fields.

A template file holds ``name``, ``version``, ``system`` and ``user``; fields are written
``${field}``. The name and version are recorded on every call made with the template.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from taxoforge.v1 import common_pb2 as pb

__all__ = ["PromptTemplate", "load_template"]


@dataclass(frozen=True)
class PromptTemplate:
    """A chat prompt with a name and a version."""

    name: str
    version: str
    system: str
    user: str

    def render(self, **fields: Any) -> list[dict[str, str]]:
        """The chat messages with ``fields`` filled in; a missing field is an error."""
        messages = []
        if self.system.strip():
            messages.append({"role": "system", "content": _fill(self.system, fields).strip()})
        messages.append({"role": "user", "content": _fill(self.user, fields).strip()})
        return messages

    def stamp(self, call: pb.LLMCall) -> pb.LLMCall:
        """Record this template's name and version on a call."""
        call.template = self.name
        call.template_version = self.version
        return call


def _fill(text: str, fields: dict[str, Any]) -> str:
    return string.Template(text).substitute({k: str(v) for k, v in fields.items()})


@cache
def load_template(path: Path) -> PromptTemplate:
    """Read a template file (cached per process)."""
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    missing = {"name", "version", "user"} - set(data or {})
    if missing:
        raise ValueError(f"{path}: template lacks {', '.join(sorted(missing))}")
    return PromptTemplate(
        name=str(data["name"]),
        version=str(data["version"]),
        system=str(data.get("system") or ""),
        user=str(data["user"]),
    )
