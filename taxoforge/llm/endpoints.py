"""The operator's models: named endpoints, each with its address, key, prices and limits.

A tenant names one of these (``models.judge.model: default``) and may set sampling parameters;
it never gives an address. Every process resolves names from its own settings, so a recipe or a
queued message cannot make a service connect anywhere else, and a key is only ever sent to the
endpoint it is declared with.

``default`` is TAXOFORGE_LLM_MODEL at TAXOFORGE_LLM_API_BASE with TAXOFORGE_LLM_API_KEY;
``local/all-minilm-l6-v2`` is the offline embedder. TAXOFORGE_LLM_MODELS_FILE (YAML or JSON)
adds more::

    models:
      gpt-4o-mini:
        model: openai/gpt-4o-mini              # any litellm model string
        api_key_env: OPENAI_API_KEY            # or api_key_file: /etc/taxoforge/keys/openai
        input_cost_per_million: 0.15           # USD; else litellm's price map where it knows
        output_cost_per_million: 0.60
        description: OpenAI's small model
      qwen:
        model: openai/Qwen2.5-7B-Instruct
        api_base: http://vllm.models:8000/v1   # no key: none is sent
        max_concurrency: 128
        response_format: json_object
        roles: [generator, responder]          # what tenants may use it for; default: every
      embed-small:                             # chat role
        model: openai/text-embedding-3-small
        api_key_env: OPENAI_API_KEY
        roles: [embedder]
    defaults:                                  # per role, for requests that name no model
      judge: gpt-4o-mini
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator

from taxoforge.errors import PermanentError
from taxoforge.logging import protect
from taxoforge.settings import LLMSettings

__all__ = [
    "CHAT_ROLES",
    "DEFAULT_MODEL",
    "LOCAL_EMBEDDER",
    "ROLES",
    "Endpoint",
    "ModelChoiceError",
    "ModelRegistry",
    "ModelsFileError",
]

DEFAULT_MODEL = "default"
LOCAL_EMBEDDER = "local/all-minilm-l6-v2"
# A recipe's target (CodecLM) is answered like a responder, so it uses responder models.
CHAT_ROLES = ("generator", "responder", "judge", "tagger", "expander")
ROLES = (*CHAT_ROLES, "embedder")
Role = Literal["generator", "responder", "judge", "tagger", "expander", "embedder"]

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,63}")


class ModelsFileError(ValueError):
    """The models file (or a key it points at) is missing or wrong; the process does not start."""


class ModelChoiceError(PermanentError):
    """A request named a model the operator did not declare, or one not meant for the role.

    ``field`` is where in the request body, when the gateway knows it.
    """

    def __init__(self, message: str, field: str = "") -> None:
        super().__init__(message)
        self.field = field


@dataclass(frozen=True)
class Endpoint:
    """One declared model: everything needed to call it. Only its process ever holds the key."""

    name: str
    model: str
    api_base: str = ""
    api_key: SecretStr | None = field(default=None, repr=False)
    input_cost_per_million: float | None = None
    output_cost_per_million: float | None = None
    max_concurrency: int = 0
    response_format: str = "auto"
    roles: tuple[str, ...] = CHAT_ROLES
    description: str = ""

    @property
    def is_local(self) -> bool:
        """The offline embedder: no address, nothing sent anywhere."""
        return self.model.lower() == LOCAL_EMBEDDER

    def key(self) -> str | None:
        """The key to send to this endpoint (and nowhere else)."""
        return self.api_key.get_secret_value() if self.api_key is not None else None

    def cost(self, prompt_tokens: int, completion_tokens: int) -> float | None:
        """USD at the declared prices, or None when the operator declared none."""
        if self.input_cost_per_million is None and self.output_cost_per_million is None:
            return None
        return (
            prompt_tokens * (self.input_cost_per_million or 0.0)
            + completion_tokens * (self.output_cost_per_million or 0.0)
        ) / 1e6


class _Entry(BaseModel):
    """One model of the models file."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, max_length=300)
    api_base: str | None = Field(default=None, pattern=r"^https?://\S+$")
    api_key_env: str | None = Field(default=None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    api_key_file: str | None = Field(default=None, min_length=1)
    input_cost_per_million: float | None = Field(default=None, ge=0)
    output_cost_per_million: float | None = Field(default=None, ge=0)
    max_concurrency: int | None = Field(default=None, ge=1)
    response_format: Literal["auto", "json_schema", "json_object", "none"] | None = None
    roles: list[Role] | None = Field(default=None, min_length=1)
    description: str = Field(default="", max_length=300)

    @model_validator(mode="after")
    def _one_key(self) -> _Entry:
        if self.api_key_env and self.api_key_file:
            raise ValueError("give api_key_env or api_key_file, not both")
        return self


class _File(BaseModel):
    model_config = ConfigDict(extra="forbid")

    models: dict[str, _Entry] = Field(default_factory=dict)
    defaults: dict[Role, str] = Field(default_factory=dict)


def _read_key(name: str, entry: _Entry) -> SecretStr | None:
    if entry.api_key_env:
        value = os.environ.get(entry.api_key_env, "").strip()
        if not value:
            raise ModelsFileError(f"model {name!r}: {entry.api_key_env} is not set (its api key)")
    elif entry.api_key_file:
        try:
            value = Path(entry.api_key_file).read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ModelsFileError(
                f"model {name!r}: cannot read api_key_file {entry.api_key_file}: {exc.strerror}"
            ) from exc
        if not value:
            raise ModelsFileError(f"model {name!r}: api_key_file {entry.api_key_file} is empty")
    else:
        return None
    protect(value)  # read after logging was set up: the redactor learns it now
    return SecretStr(value)


def _load_file(path: str) -> _File:
    try:
        raw = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
    except OSError as exc:
        raise ModelsFileError(f"cannot read the models file {path}: {exc.strerror}") from exc
    except yaml.YAMLError as exc:
        raise ModelsFileError(f"the models file {path} is not YAML or JSON: {exc}") from exc
    try:
        return _File.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or 'file'}: {err['msg']}"
            for err in exc.errors()[:5]
        )
        raise ModelsFileError(f"the models file {path} is invalid: {problems}") from exc


class ModelRegistry:
    """The models a process may call, by name, and the default name per role."""

    def __init__(self, endpoints: Iterable[Endpoint], defaults: Mapping[str, str] | None = None):
        self._endpoints: dict[str, Endpoint] = {}
        for endpoint in endpoints:
            if endpoint.name in self._endpoints:
                raise ModelsFileError(f"model {endpoint.name!r} is declared twice")
            self._endpoints[endpoint.name] = endpoint
        self._defaults = dict(defaults or {})
        for role, name in self._defaults.items():
            if role not in ROLES:
                raise ModelsFileError(f"defaults: {role!r} is not a role ({', '.join(ROLES)})")
            declared = self._endpoints.get(name)
            if declared is None or role not in declared.roles:
                raise ModelsFileError(
                    f"defaults.{role}: {name!r} is not a declared model for the {role} role"
                )

    @classmethod
    def from_settings(cls, settings: LLMSettings, *, with_keys: bool = True) -> ModelRegistry:
        """``default`` and the local embedder from the settings, then the models file's.

        ``with_keys=False`` reads no key at all (the gateway validates names, never calls).

        Raises:
            ModelsFileError: the file, a name, a default or a key it points at is wrong.
        """
        endpoints = {
            DEFAULT_MODEL: Endpoint(
                name=DEFAULT_MODEL,
                model=settings.model,
                api_base=settings.api_base or "",
                api_key=settings.api_key if with_keys else None,
                max_concurrency=settings.max_concurrency,
                response_format=settings.response_format,
            ),
            LOCAL_EMBEDDER: Endpoint(
                name=LOCAL_EMBEDDER,
                model=LOCAL_EMBEDDER,
                roles=("embedder",),
                description="all-MiniLM-L6-v2, run offline in this process",
            ),
        }
        defaults: dict[str, str] = {}
        if settings.models_file:
            spec = _load_file(settings.models_file)
            for name, entry in spec.models.items():
                if name == LOCAL_EMBEDDER or not _valid_name(name):
                    raise ModelsFileError(
                        f"model name {name!r}: use letters, digits and . _ : - (at most 64), "
                        f"and not {LOCAL_EMBEDDER!r}"
                    )
                endpoints[name] = Endpoint(
                    name=name,
                    model=entry.model,
                    api_base=entry.api_base or "",
                    api_key=_read_key(name, entry) if with_keys else None,
                    input_cost_per_million=entry.input_cost_per_million,
                    output_cost_per_million=entry.output_cost_per_million,
                    max_concurrency=entry.max_concurrency or settings.max_concurrency,
                    response_format=entry.response_format or settings.response_format,
                    roles=tuple(entry.roles or CHAT_ROLES),
                    description=entry.description,
                )
            defaults = {str(role): name for role, name in spec.defaults.items()}
        return cls(endpoints.values(), defaults)

    def names(self, role: str | None = None) -> list[str]:
        """The declared names, all or those meant for ``role``, sorted."""
        return sorted(n for n, e in self._endpoints.items() if role is None or role in e.roles)

    def default_for(self, role: str) -> str:
        """The name a request that names none gets for ``role``."""
        if role in self._defaults:
            return self._defaults[role]
        return LOCAL_EMBEDDER if role == "embedder" else DEFAULT_MODEL

    def get(self, name: str, role: str | None = None, where: str = "") -> Endpoint:
        """The endpoint declared as ``name`` (for ``role``, when given).

        Raises:
            ModelChoiceError: no such model here, or not one for the role; the message lists
                the names that are.
        """
        endpoint = self._endpoints.get(name)
        if endpoint is not None and (role is None or role in endpoint.roles):
            return endpoint
        choices = ", ".join(self.names(role)) or "none"
        if endpoint is None:
            message = f"model {name!r} is not one the operator declared; use one of: {choices}"
        else:
            message = f"model {name!r} is not for the {role} role; use one of: {choices}"
        raise ModelChoiceError(message, where)

    def fingerprint(self) -> str:
        """A digest of what each name stands for (not the keys): the request cache's scope."""
        table = sorted(
            (e.name, e.model, e.api_base, e.response_format) for e in self._endpoints.values()
        )
        return hashlib.sha256(json.dumps(table).encode()).hexdigest()[:16]

    def public(self) -> list[dict[str, Any]]:
        """What a tenant may know of each model: name, model string, roles; no address, no key."""
        out = []
        for name in self.names():
            endpoint = self._endpoints[name]
            out.append(
                {
                    "name": name,
                    "model": endpoint.model,
                    "roles": list(endpoint.roles),
                    "default_for": [r for r in ROLES if self.default_for(r) == name],
                    "description": endpoint.description,
                }
            )
        return out


def _valid_name(name: str) -> bool:
    return _NAME.fullmatch(name) is not None
