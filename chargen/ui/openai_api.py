"""The OpenAI-compatible subset ``chargen serve`` speaks: reading requests, writing responses.

Pure functions, no web framework: a request body (already parsed JSON) becomes a
``CompletionRequest`` or an ``APIError`` in OpenAI's error shape, and the responses and streamed
chunks are plain dicts. ``serve.py`` puts HTTP around them.
"""

from __future__ import annotations

import math
import time
import uuid
from dataclasses import dataclass

from ..errors import describe_chars
from ..generation.settings import SamplingSettings
from ..limits import (SEED_RANGE, SERVE_MAX_BEAM, SERVE_MAX_N, SERVE_MAX_PROMPT_CHARS, SERVE_MAX_STOPS,
                      SERVE_MAX_TEMPERATURE, SERVE_MAX_TOKENS)
from .chat import DEFAULT_STOP


class APIError(Exception):
    """A request the server will not serve, as OpenAI reports it: a status and an error object."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str = "invalid_request_error", headers: dict | None = None):
        super().__init__(message)
        self.status, self.message, self.param, self.code, self.kind = status, message, param, code, kind
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass
class CompletionRequest:
    """What to generate: ``n`` continuations of ``prompt``."""

    prompt: str
    settings: SamplingSettings  # temp, top_k, top_p, length (max_tokens) and seed; stop unused
    stops: tuple[str, ...] = ()
    n: int = 1
    stream: bool = False
    beam: int = 0
    chat: bool = False


@dataclass(frozen=True)
class ChatTemplate:
    """How a conversation is laid out for the model, as in ``chargen repl``: each user turn is
    ``user_prefix + content + bot_prefix``; each earlier reply is followed by the stop string that
    ended it."""

    user_prefix: str = ""
    bot_prefix: str = ""
    stop: str = DEFAULT_STOP


def _invalid(param: str, message: str, code: str = "invalid_value") -> APIError:
    return APIError(400, f"{param}: {message}", param=param, code=code)


def _number(body: dict, name: str, default, low, high, whole: bool = False):
    """``body[name]`` (or ``default`` if absent or null), checked to be a number in [low, high]."""
    value = body.get(name)
    if value is None:
        return default
    kind = int if whole else (int, float)
    if isinstance(value, bool) or not isinstance(value, kind) or (isinstance(value, float) and not math.isfinite(value)):
        raise _invalid(name, f"must be {'a whole number' if whole else 'a number'}, not {type(value).__name__}",
                       "invalid_type")
    if not low <= value <= high:
        raise _invalid(name, f"{value} is out of range: must be between {low} and {high}")
    return value


def _stops(body: dict) -> tuple[str, ...]:
    stop = body.get("stop")
    if stop is None:
        return ()
    stops = [stop] if isinstance(stop, str) else stop
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise _invalid("stop", "must be a string or a list of strings", "invalid_type")
    if len(stops) > SERVE_MAX_STOPS:
        raise _invalid("stop", f"at most {SERVE_MAX_STOPS} stop strings")
    if any(not s for s in stops):
        raise _invalid("stop", "stop strings must not be empty")
    return tuple(stops)


def _unsupported(body: dict) -> None:
    """Refuse options chargen cannot honour rather than silently ignore them."""
    if body.get("echo"):
        raise _invalid("echo", "is not supported; the prompt is not repeated in the reply", "unsupported")
    if body.get("logprobs") not in (None, False, 0):
        raise _invalid("logprobs", "is not supported", "unsupported")
    if body.get("best_of") not in (None, 1):
        raise _invalid("best_of", "is not supported; use n, or beam for the most likely text", "unsupported")


def check_prompt(prompt: str, tokenizer, param: str = "prompt") -> None:
    if len(prompt) > SERVE_MAX_PROMPT_CHARS:
        raise APIError(400, f"{param}: {len(prompt):,} characters is over this server's limit of "
                       f"{SERVE_MAX_PROMPT_CHARS:,}", param=param, code="context_length_exceeded")
    unknown = tokenizer.unknown_chars(prompt)
    if unknown:
        raise APIError(400, f"{param}: has characters the model never saw: {describe_chars(unknown)}; "
                       "its vocabulary is its training corpus's characters", param=param, code="unknown_characters")


def parse_request(body, tokenizer, model_id: str, chat: bool = False,
                  template: ChatTemplate = ChatTemplate()) -> CompletionRequest:
    """A completion (or, with ``chat``, a chat completion) request, checked; else APIError 4xx."""
    if not isinstance(body, dict):
        raise APIError(400, "the request body must be a JSON object", code="invalid_json")
    model = body.get("model")
    if model is not None and model != model_id:
        raise APIError(404, f"model {model!r} does not exist; this server serves {model_id!r} (see /v1/models)",
                       param="model", code="model_not_found")
    _unsupported(body)
    if chat:
        prompt = render_chat(body.get("messages"), template)
        check_prompt(prompt, tokenizer, "messages")
    else:
        prompt = body.get("prompt", "")
        if isinstance(prompt, list) and len(prompt) == 1:
            prompt = prompt[0]
        if not isinstance(prompt, str):
            raise _invalid("prompt", "must be a string (or a list of one string)", "invalid_type")
        check_prompt(prompt, tokenizer)
    defaults = SamplingSettings()
    length_name = "max_completion_tokens" if chat and body.get("max_completion_tokens") is not None else "max_tokens"
    settings = SamplingSettings(
        temp=float(_number(body, "temperature", defaults.temp, 0, SERVE_MAX_TEMPERATURE)),
        top_p=float(_number(body, "top_p", defaults.top_p, 0, 1)),
        top_k=_number(body, "top_k", defaults.top_k, 0, tokenizer.vocab_size, whole=True),
        length=_number(body, length_name, min(defaults.length, SERVE_MAX_TOKENS), 0, SERVE_MAX_TOKENS, whole=True),
        seed=_number(body, "seed", None, SEED_RANGE[0], SEED_RANGE[1] - 1, whole=True))
    if settings.top_p == 0:
        raise _invalid("top_p", "must be more than 0 (1 turns it off)")
    stops = _stops(body)
    if chat and body.get("stop") is None:
        stops = (template.stop,) if template.stop else ()
    stream = body.get("stream", False)
    if not isinstance(stream, bool) and stream is not None:
        raise _invalid("stream", "must be true or false", "invalid_type")
    return CompletionRequest(prompt=prompt, settings=settings, stops=stops,
                             n=_number(body, "n", 1, 1, SERVE_MAX_N, whole=True), stream=bool(stream),
                             beam=_number(body, "beam", 0, 0, SERVE_MAX_BEAM, whole=True), chat=chat)


def render_chat(messages, template: ChatTemplate) -> str:
    """The text the model reads for a conversation, laid out as ``chargen repl`` lays it out."""
    if not isinstance(messages, list) or not messages:
        raise _invalid("messages", "must be a non-empty list of {role, content} objects", "invalid_type")
    text = ""
    for i, message in enumerate(messages):
        param = f"messages[{i}]"
        if not isinstance(message, dict):
            raise _invalid(param, "must be an object with role and content", "invalid_type")
        role, content = message.get("role"), message.get("content")
        if isinstance(content, list):  # content parts: only text ones
            if not all(isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
                       for p in content):
                raise _invalid(param, "content parts must be text parts", "invalid_type")
            content = "".join(p["text"] for p in content)
        if not isinstance(content, str):
            raise _invalid(param, "content must be a string", "invalid_type")
        if role in ("system", "developer"):
            text += content + template.stop
        elif role == "user":
            text += user_turn(text, content, template)
        elif role == "assistant":
            text += content + template.stop
        else:
            raise _invalid(param, f"role {role!r} is not one of system, developer, user, assistant")
    if messages[-1].get("role") != "user":
        raise _invalid("messages", "the last message must be the user's")
    return text


def user_turn(written: str, content: str, template: ChatTemplate) -> str:
    """A user's turn; a user prefix's leading line breaks that the text already ends with are
    skipped, as ``ChatSession`` does, so turns are separated as in the corpus."""
    prefix = template.user_prefix
    leading = prefix[:len(prefix) - len(prefix.lstrip())]
    for size in range(len(leading), 0, -1):
        if written.endswith(leading[:size]):
            prefix = prefix[size:]
            break
    return prefix + content + template.bot_prefix


# ---- responses ----------------------------------------------------------------------------------

def new_id(chat: bool) -> str:
    return ("chatcmpl-" if chat else "cmpl-") + uuid.uuid4().hex[:24]


def completion_response(request: CompletionRequest, rid: str, model_id: str, texts: list[str],
                        reasons: list[str], prompt_tokens: int, completion_tokens: int) -> dict:
    """The whole response to a request that did not stream."""
    if request.chat:
        choices = [{"index": i, "message": {"role": "assistant", "content": t}, "logprobs": None,
                    "finish_reason": r} for i, (t, r) in enumerate(zip(texts, reasons))]
    else:
        choices = [{"index": i, "text": t, "logprobs": None, "finish_reason": r}
                   for i, (t, r) in enumerate(zip(texts, reasons))]
    return {"id": rid, "object": "chat.completion" if request.chat else "text_completion",
            "created": int(time.time()), "model": model_id, "choices": choices,
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def chunk(request: CompletionRequest, rid: str, model_id: str, index: int, text: str | None = None,
          reason: str | None = None, role: bool = False) -> dict:
    """One streamed piece: new text of completion ``index``, or its end (``reason``)."""
    if request.chat:
        delta = {"role": "assistant", "content": ""} if role else ({"content": text} if text is not None else {})
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": reason}
    else:
        choice = {"index": index, "text": text or "", "logprobs": None, "finish_reason": reason}
    return {"id": rid, "object": "chat.completion.chunk" if request.chat else "text_completion",
            "created": int(time.time()), "model": model_id, "choices": [choice]}


def models_response(model_id: str, owner: str = "chargen") -> dict:
    return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": owner}]}
