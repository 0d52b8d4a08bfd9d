"""A FAKE OpenAI-compatible chat server, for tests and benchmarks only: it calls no model.

Replies are deterministic functions of the request (messages, temperature, seed), JSON replies
follow the request's schema, and its behaviour can be steered while it runs:

- ``latency_ms``: delay before each reply.
- ``fail_pattern`` / ``fail_status``: requests whose text contains the pattern get that status
  (always, or only the first ``fail_times`` times the same messages come).
- ``malformed_pattern``: JSON requests containing it get text that is not JSON.
- ``json_object_only``: refuse OpenAI's ``json_schema`` format with 422, as llama-cpp-python does.
- ``slow_pattern`` / ``slow_ms``: requests containing the pattern take that much longer.
- ``replies``: [pattern, reply] pairs; the first pattern a request contains picks its reply.
- ``position_bias``: judge replies score answers by their "[quality: N]" markers, the first
  shown answer getting this many extra points (tests of order-swapping judges).
- Tagging: a JSON reply with a ``tags`` list takes the tags of a "[tags: a, b]" marker in the
  request, so planted data clusters as planned.
- ``wrong_language_pattern``: requests containing it are answered in English. Otherwise text
  replies are in the language the prompt asks for ("... in French"), for en/fr/de/es.
- ``degrade_fraction`` / ``degrade_kinds``: that fraction of text replies (instructions,
  Self-Rubrics rewrites, responses; never JSON replies, so the judge's stay well-formed) is
  degenerate, chosen by a hash of the request (messages, temperature, seed), so the same
  request degrades the same way every time and a redraw with another seed gets a fresh draw:
  ``empty``, ``echo`` (the prompt's last user message word for word), ``wrong_language``,
  ``mixed_language`` (one whole sentence in another language), ``chatter`` (assistant voice:
  "I'm ready to help...", "Sure! Here is...", a link to follow), ``delimiter`` (a prompt
  delimiter fragment). CLI: ``--degrade-fraction 0.2 [--degrade-kinds empty,echo]``, or the
  environment's ``FAKE_LLM_DEGRADE_FRACTION`` / ``FAKE_LLM_DEGRADE_KINDS``.

``POST /_fake/config`` changes these, ``GET /_fake/stats`` reports calls, ``POST /_fake/reset``
clears the counters. Run: ``python -m taxoforge.testing.fake_llm --port 8099 --latency-ms 100``.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from aiohttp import web

from taxoforge.eventloop import loop_factory

__all__ = ["DEGRADE_KINDS", "FakeConfig", "FakeLLM", "build_app", "degraded", "main"]

# The ways a degraded text reply goes wrong (``FakeConfig.degrade_kinds``).
DEGRADE_KINDS = ("empty", "echo", "wrong_language", "mixed_language", "chatter", "delimiter")
_CHATTER = [
    "I'm ready to help with your homework question.",
    "Sure! Here is the question you asked for.",
    "Please go to the following link to see the full exercise.",
    "Je suis prêt à vous aider avec votre question.",
    "Ich helfe Ihnen gerne bei Ihrer Frage.",
]
# A whole sentence in another language than asked, for ``mixed_language``.
_OTHER_SENTENCE = {
    "English": "Veuillez aussi répondre à cette partie en donnant deux exemples concrets.",
    "other": "Please also answer this part in English and give two concrete examples.",
}

_WORDS = [
    "energy",
    "model",
    "system",
    "proof",
    "market",
    "cell",
    "theory",
    "history",
    "data",
    "signal",
    "law",
    "budget",
    "recipe",
    "function",
    "network",
    "evidence",
    "language",
    "motion",
    "reaction",
    "policy",
    "structure",
]

# Replies in the language a prompt asks for ("... in French"), so language checks pass.
_PHRASES: dict[str, list[str]] = {
    "English": [
        "Explain why the {w} changes when the temperature rises, and how students can measure it.",
        "Describe how a {w} works in practice and what makes it useful for everyday problems.",
        "Compare two ways to study the {w} and say which one you would choose and why.",
    ],
    "French": [
        "Expliquez pourquoi le {w} change quand la température augmente, et comment les élèves "
        "peuvent le mesurer.",
        "Décrivez comment fonctionne un {w} dans la pratique et ce qui le rend utile au quotidien.",
        "Comparez deux façons d'étudier le {w} et dites laquelle vous choisiriez, et pourquoi.",
    ],
    "German": [
        "Erklären Sie, warum sich der {w} ändert, wenn die Temperatur steigt, und wie man ihn "
        "messen kann.",
        "Beschreiben Sie, wie ein {w} in der Praxis funktioniert und warum er im Alltag nützlich "
        "ist.",
    ],
    "Spanish": [
        "Explique por qué el {w} cambia cuando sube la temperatura y cómo los estudiantes pueden "
        "medirlo.",
        "Describa cómo funciona un {w} en la práctica y qué lo hace útil en la vida diaria.",
    ],
}
# Words in each language that vary replies (so near-duplicate checks see different texts).
_FILLER: dict[str, list[str]] = {
    "English": [
        "river",
        "window",
        "garden",
        "morning",
        "letter",
        "village",
        "question",
        "answer",
        "teacher",
    ],
    "French": [
        "rivière",
        "fenêtre",
        "jardin",
        "matin",
        "lettre",
        "village",
        "question",
        "réponse",
        "maître",
    ],
    "German": [
        "Fluss",
        "Fenster",
        "Garten",
        "Morgen",
        "Brief",
        "Dorf",
        "Frage",
        "Antwort",
        "Lehrer",
    ],
    "Spanish": [
        "río",
        "ventana",
        "jardín",
        "mañana",
        "carta",
        "pueblo",
        "pregunta",
        "respuesta",
        "maestro",
    ],
}
_ASKED = re.compile(r"\bin (English|French|German|Spanish)\b")


@dataclass
class FakeConfig:
    """How the fake behaves; every field can be changed at run time."""

    latency_ms: float = 0.0
    fail_pattern: str | None = None
    fail_status: int = 500
    fail_times: int = 0
    malformed_pattern: str | None = None
    json_object_only: bool = False
    slow_pattern: str | None = None
    slow_ms: float = 0.0
    # [pattern, reply] pairs: a request containing the pattern gets that reply verbatim.
    replies: list[list[str]] = field(default_factory=list)
    # Judging by markers: a response text carrying "[quality: N]" (N in 1-100) is scored by N
    # (rubric: N/10; pairwise: N, plus ``position_bias`` points for the answer shown first).
    position_bias: float = 0.0
    # [temperature, N] pairs: text replies sampled at that temperature end with "[quality: N]"
    # (so a test controls which candidate is better; candidates differ by temperature).
    quality_by_temperature: list[list[float]] = field(default_factory=list)
    # Requests containing this pattern are answered in English, whatever they ask for: always,
    # or only the first ``wrong_language_times`` times the same messages come.
    wrong_language_pattern: str | None = None
    wrong_language_times: int = 0
    # This fraction (0 to 1) of text replies is degenerate, one of ``degrade_kinds`` each,
    # chosen by the request's hash (JSON replies, the judge's, never are).
    degrade_fraction: float = 0.0
    degrade_kinds: list[str] = field(default_factory=lambda: list(DEGRADE_KINDS))


@dataclass
class FakeStats:
    """What the fake has seen."""

    calls: int = 0
    failed: int = 0
    inflight: int = 0
    max_inflight: int = 0
    by_request: Counter[str] = field(default_factory=Counter)


def _from_schema(schema: dict[str, Any], seed: bytes, path: str = "") -> Any:
    """A value that satisfies the (simple) JSON schema, chosen by ``seed``."""
    h = hashlib.sha256(seed + path.encode()).digest()
    n = int.from_bytes(h[:4], "big")
    if "enum" in schema:
        return schema["enum"][n % len(schema["enum"])]
    kind = schema.get("type")
    if kind == "object" or "properties" in schema:
        props = schema.get("properties", {})
        return {k: _from_schema(v, seed, f"{path}.{k}") for k, v in props.items()}
    if kind == "array":
        return [
            _from_schema(schema.get("items", {}), seed, f"{path}[{i}]") for i in range(1 + n % 3)
        ]
    if kind == "integer":
        lo, hi = int(schema.get("minimum", 1)), int(schema.get("maximum", 10))
        return lo + n % (hi - lo + 1)
    if kind == "number":
        low, high = float(schema.get("minimum", 0.0)), float(schema.get("maximum", 1.0))
        return low + (n % 1000) / 999 * (high - low)
    if kind == "boolean":
        return bool(n % 2)
    return f"fake {path.strip('.') or 'text'} {h.hex()[:8]}"


_QUALITY = re.compile(r"\[quality: (\d+)\]")
_TAGS = re.compile(r"\[tags: ([^\]]+)\]")


def _scale(schema: dict[str, Any], name: str, value: float) -> int:
    prop = schema.get("properties", {}).get(name, {})
    top = max(prop.get("enum") or [prop.get("maximum", 100)])
    scaled = value if top >= 100 else value / 10.0
    return int(min(max(round(scaled), 1), top))


def _judge_by_markers(
    value: dict[str, Any], schema: dict[str, Any], blob: str, position_bias: float
) -> None:
    """Judge replies follow the quality markers in the answers (fake judging, for tests)."""
    marks = [float(m) for m in _QUALITY.findall(blob)]
    if not marks:
        if "score" in value and "rationale" in value:
            # A rubric: its aspects agree with its overall score, as a sound judge's do (the
            # judge refuses a reply whose aspects contradict it).
            for name in value:
                if name != "rationale" and isinstance(value[name], int):
                    value[name] = value["score"]
        return
    if "score_1" in value and "score_2" in value and len(marks) >= 2:
        value["score_1"] = _scale(schema, "score_1", marks[0] + position_bias)
        value["score_2"] = _scale(schema, "score_2", marks[1])
    elif "score" in value:
        for name in value:
            if name != "rationale" and isinstance(value[name], int):
                value[name] = _scale(schema, name, marks[0])


def _text_reply(messages: list[dict[str, Any]], seed: bytes, english: bool = False) -> str:
    blob = " ".join(str(m.get("content", "")) for m in messages)
    h = hashlib.sha256(seed).digest()
    asked = _ASKED.search(blob)
    language = "English" if english or asked is None else asked.group(1)
    phrases = _PHRASES[language]
    words = " ".join(_WORDS[b % len(_WORDS)] for b in h[:3])
    phrase = phrases[h[4] % len(phrases)].format(w=words)
    filler = _FILLER[language]
    tail = " ".join(filler[b % len(filler)] for b in h[5:11])
    return f"{phrase} ({tail} {h.hex()[:8]})"


def degraded(
    messages: list[dict[str, Any]], seed: bytes, fraction: float, kinds: list[str]
) -> str | None:
    """The degenerate reply the request gets, or None when it is not one of the ``fraction``
    degraded (decided by the request's hash ``seed``)."""
    usable = [k for k in kinds if k in DEGRADE_KINDS]
    h = hashlib.sha256(b"degrade" + seed).digest()
    if not usable or int.from_bytes(h[:4], "big") / 2**32 >= fraction:
        return None
    kind = usable[h[4] % len(usable)]
    blob = " ".join(str(m.get("content", "")) for m in messages)
    asked = _ASKED.search(blob)
    language = asked.group(1) if asked is not None else "English"
    if kind == "empty":
        return ""
    if kind == "echo":
        users = [str(m.get("content", "")) for m in messages if m.get("role") == "user"]
        return users[-1] if users else blob
    if kind == "chatter":
        return _CHATTER[h[5] % len(_CHATTER)]
    normal = _text_reply(messages, seed)
    if kind == "wrong_language":
        if language != "English":
            return _text_reply(messages, seed, english=True)
        french = _PHRASES["French"]
        words = " ".join(_FILLER["French"][b % len(_FILLER["French"])] for b in h[6:9])
        return french[h[5] % len(french)].format(w=f"modèle {words}")
    if kind == "mixed_language":
        other = _OTHER_SENTENCE["English" if language == "English" else "other"]
        return f"{normal}\n{other}"
    return f"{normal} <</instruction-{h.hex()[:12]}>>"


class FakeLLM:
    """The fake's state and request handling."""

    def __init__(self, config: FakeConfig | None = None) -> None:
        self.config = config or FakeConfig()
        self.stats = FakeStats()
        self._wrong_seen: Counter[str] = Counter()
        self._failed_seen: Counter[str] = Counter()

    async def chat(self, request: web.Request) -> web.Response:
        body = await request.json()
        messages = body.get("messages") or []
        blob = json.dumps(messages, sort_keys=True)
        self.stats.calls += 1
        # A request is its messages and its sampling settings: two candidates sampled from the
        # same prompt at different temperatures or seeds are different requests. Its digest
        # (of ``[messages, temperature, seed]`` as JSON, the messages' written once) names it
        # in the stats and seeds its reply.
        temperature, seed = body.get("temperature"), body.get("seed")
        request_key = f"[{blob}, {json.dumps(temperature)}, {json.dumps(seed)}]"
        digest = hashlib.sha256(request_key.encode()).digest()
        self.stats.by_request[digest.hex()[:16]] += 1
        self.stats.inflight += 1
        self.stats.max_inflight = max(self.stats.max_inflight, self.stats.inflight)
        try:
            delay = self.config.latency_ms
            if self.config.slow_pattern and self.config.slow_pattern in blob:
                delay += self.config.slow_ms
            if delay > 0:
                await asyncio.sleep(delay / 1000.0)
            return self._reply(body, messages, blob, digest)
        finally:
            self.stats.inflight -= 1

    def _fails_now(self, blob: str) -> bool:
        if not self.config.fail_times:
            return True
        self._failed_seen[blob] += 1
        return self._failed_seen[blob] <= self.config.fail_times

    def _reply(
        self, body: dict[str, Any], messages: list[dict[str, Any]], blob: str, seed: bytes
    ) -> web.Response:
        """The reply to a request; ``seed``: its digest (SHA-256 of ``[messages, temperature,
        seed]`` as JSON, keys sorted)."""
        cfg = self.config
        fmt = body.get("response_format") or {}
        if cfg.fail_pattern and cfg.fail_pattern in blob and self._fails_now(blob):
            self.stats.failed += 1
            return web.json_response(
                {"error": {"message": "fake failure (fail_pattern matched)"}},
                status=cfg.fail_status,
            )
        if cfg.json_object_only and fmt.get("type") == "json_schema":
            return web.json_response(
                {
                    "error": {
                        "message": "response_format.type: Input should be 'text' or "
                        "'json_object', not json_schema"
                    }
                },
                status=422,
            )
        canned = next((reply for pattern, reply in cfg.replies if pattern in blob), None)
        schema = None
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
        elif fmt.get("type") == "json_object":
            schema = fmt.get("schema") or {}
        if canned is not None:
            content = canned
        elif schema is not None:
            if cfg.malformed_pattern and cfg.malformed_pattern in blob:
                content = "this is not json {"
            else:
                value = _from_schema(schema, seed)
                if isinstance(value, dict):
                    _judge_by_markers(value, schema, blob, cfg.position_bias)
                    tags = _TAGS.search(blob)
                    if tags is not None and "tags" in value:
                        value["tags"] = [t.strip() for t in tags.group(1).split(",") if t.strip()]
                content = json.dumps(value)
        else:
            english = bool(cfg.wrong_language_pattern and cfg.wrong_language_pattern in blob)
            if english and cfg.wrong_language_times:
                self._wrong_seen[blob] += 1
                english = self._wrong_seen[blob] <= cfg.wrong_language_times
            content = _text_reply(messages, seed, english)
            bad = degraded(messages, seed, cfg.degrade_fraction, cfg.degrade_kinds)
            if bad is not None:
                content = bad
            temperature = body.get("temperature")
            for at, quality in cfg.quality_by_temperature:
                if temperature is not None and abs(float(temperature) - at) < 1e-6:
                    content += f" [quality: {int(quality)}]"
        prompt_tokens = max(1, len(blob) // 4)
        completion_tokens = max(1, len(content) // 4)
        return web.json_response(
            {
                "id": "fake-" + seed.hex()[:12],
                "object": "chat.completion",
                "model": body.get("model", "fake"),
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "finish_reason": "stop",
                    }
                ],
                "usage": {
                    "prompt_tokens": prompt_tokens,
                    "completion_tokens": completion_tokens,
                    "total_tokens": prompt_tokens + completion_tokens,
                },
            }
        )

    async def models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    async def set_config(self, request: web.Request) -> web.Response:
        changes = await request.json()
        for key, value in changes.items():
            if not hasattr(self.config, key):
                return web.json_response({"error": f"unknown setting {key!r}"}, status=400)
            setattr(self.config, key, value)
        return web.json_response(asdict(self.config))

    async def get_stats(self, request: web.Request) -> web.Response:
        stats = asdict(self.stats)
        stats["by_request"] = dict(self.stats.by_request)
        return web.json_response(stats)

    async def reset(self, request: web.Request) -> web.Response:
        self.stats = FakeStats()
        self._wrong_seen.clear()
        self._failed_seen.clear()
        return web.json_response({"ok": True})


def build_app(fake: FakeLLM) -> web.Application:
    """The aiohttp application serving ``fake``."""
    app = web.Application(client_max_size=64 * 1024 * 1024)
    app.router.add_post("/v1/chat/completions", fake.chat)
    app.router.add_get("/v1/models", fake.models)
    app.router.add_post("/_fake/config", fake.set_config)
    app.router.add_get("/_fake/stats", fake.get_stats)
    app.router.add_post("/_fake/reset", fake.reset)
    return app


def main(argv: list[str] | None = None) -> None:
    """Serve the fake until killed."""
    parser = argparse.ArgumentParser(description="A FAKE OpenAI-compatible server (tests only).")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8099)
    parser.add_argument("--latency-ms", type=float, default=0.0)
    parser.add_argument(
        "--degrade-fraction",
        type=float,
        default=float(os.environ.get("FAKE_LLM_DEGRADE_FRACTION") or 0.0),
        help="fraction of text replies made degenerate (by request hash)",
    )
    parser.add_argument(
        "--degrade-kinds",
        default=os.environ.get("FAKE_LLM_DEGRADE_KINDS") or ",".join(DEGRADE_KINDS),
        help=f"comma-separated, of: {', '.join(DEGRADE_KINDS)}",
    )
    ns = parser.parse_args(argv)
    kinds = [k.strip() for k in ns.degrade_kinds.split(",") if k.strip()]
    unknown = sorted(set(kinds) - set(DEGRADE_KINDS))
    if unknown or not 0.0 <= ns.degrade_fraction <= 1.0:
        parser.error(f"--degrade-fraction must be 0 to 1 and kinds of {DEGRADE_KINDS}: {unknown}")
    fake = FakeLLM(
        FakeConfig(
            latency_ms=ns.latency_ms, degrade_fraction=ns.degrade_fraction, degrade_kinds=kinds
        )
    )
    # The services' event loop (TAXOFORGE_EVENT_LOOP), so that a benchmark's fake takes as
    # little of the machine as they do.
    loop = loop_factory(os.environ.get("TAXOFORGE_EVENT_LOOP") or "auto")()
    web.run_app(build_app(fake), host=ns.host, port=ns.port, print=None, access_log=None, loop=loop)


if __name__ == "__main__":
    main()
