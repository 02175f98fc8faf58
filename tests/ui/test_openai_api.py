"""Reading OpenAI-style requests: every bad field is a 4xx naming it, in OpenAI's error shape."""

from __future__ import annotations

import pytest

from chargen.generation.settings import SamplingSettings
from chargen.limits import SERVE_MAX_N, SERVE_MAX_PROMPT_CHARS, SERVE_MAX_TOKENS
from chargen.ui.openai_api import (APIError, ChatTemplate, chunk, completion_response, parse_request,
                                   render_chat)
from tests.conftest import TOKENIZER

MODEL = "tiny"


def parse(body, chat=False, template=ChatTemplate()):
    return parse_request(body, TOKENIZER, MODEL, chat=chat, template=template)


def error_of(body, chat=False) -> APIError:
    with pytest.raises(APIError) as info:
        parse(body, chat)
    return info.value


def test_a_completion_request_becomes_sampling_settings():
    request = parse({"model": MODEL, "prompt": "the ", "max_tokens": 20, "temperature": 0.5, "top_p": 0.9,
                     "top_k": 3, "seed": 7, "stop": ["\n", "."], "n": 2, "stream": True, "user": "ignored"})
    assert request.prompt == "the " and request.n == 2 and request.stream and request.stops == ("\n", ".")
    assert request.settings == SamplingSettings(temp=0.5, top_k=3, top_p=0.9, length=20, seed=7)


def test_defaults_are_chargens():
    request = parse({"prompt": ["a"]})
    defaults = SamplingSettings()
    assert request.prompt == "a" and request.n == 1 and not request.stream and request.stops == ()
    assert (request.settings.temp, request.settings.length) == (defaults.temp, min(defaults.length, SERVE_MAX_TOKENS))


@pytest.mark.parametrize("body, param, status", [
    ([1, 2], None, 400),
    ({"prompt": 5}, "prompt", 400),
    ({"prompt": "a", "max_tokens": -1}, "max_tokens", 400),
    ({"prompt": "a", "max_tokens": SERVE_MAX_TOKENS + 1}, "max_tokens", 400),
    ({"prompt": "a", "max_tokens": "20"}, "max_tokens", 400),
    ({"prompt": "a", "max_tokens": 2.5}, "max_tokens", 400),
    ({"prompt": "a", "n": SERVE_MAX_N + 1}, "n", 400),
    ({"prompt": "a", "n": 10**9}, "n", 400),
    ({"prompt": "a", "temperature": -0.1}, "temperature", 400),
    ({"prompt": "a", "temperature": True}, "temperature", 400),
    ({"prompt": "a", "top_p": 0}, "top_p", 400),
    ({"prompt": "a", "top_p": 1.5}, "top_p", 400),
    ({"prompt": "a", "seed": 1 << 64}, "seed", 400),
    ({"prompt": "a", "stop": ""}, "stop", 400),
    ({"prompt": "a", "stop": ["a", "b", "c", "d", "e"]}, "stop", 400),
    ({"prompt": "a", "stop": 3}, "stop", 400),
    ({"prompt": "a", "stream": "yes"}, "stream", 400),
    ({"prompt": "a", "echo": True}, "echo", 400),
    ({"prompt": "a", "logprobs": 2}, "logprobs", 400),
    ({"prompt": "a", "beam": -2}, "beam", 400),
    ({"prompt": "ÄÖ"}, "prompt", 400),
    ({"prompt": "a" * (SERVE_MAX_PROMPT_CHARS + 1)}, "prompt", 400),
    ({"prompt": "a", "model": "gpt-4"}, "model", 404),
])
def test_bad_fields_are_4xx_naming_the_field(body, param, status):
    error = error_of(body)
    assert error.status == status and error.param == param
    shape = error.body()["error"]
    assert set(shape) == {"message", "type", "param", "code"} and shape["message"]


def test_unseen_characters_are_named():
    error = error_of({"prompt": "hello €"})
    assert error.code == "unknown_characters" and "'€'" in error.message


def test_an_oversize_prompt_is_context_length_exceeded():
    assert error_of({"prompt": "a" * (SERVE_MAX_PROMPT_CHARS + 1)}).code == "context_length_exceeded"


def test_a_chat_is_laid_out_as_the_repl_lays_it_out():
    template = ChatTemplate(user_prefix="\n\nyou,\n", bot_prefix="\n\nbot,\n", stop="\n\n")
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
                {"role": "assistant", "content": "hello"}, {"role": "user", "content": [{"type": "text", "text": "go"}]}]
    # The user prefix's line breaks are not doubled after text that already ends with them.
    assert render_chat(messages, template) == "be brief\n\nyou,\nhi\n\nbot,\nhello\n\nyou,\ngo\n\nbot,\n"
    request = parse({"messages": messages[1:2]}, chat=True, template=template)
    assert request.prompt == "\n\nyou,\nhi\n\nbot,\n" and request.stops == ("\n\n",)
    assert parse({"messages": messages[1:2], "stop": "x"}, chat=True).stops == ("x",)


@pytest.mark.parametrize("messages", [None, [], "hi", [{"role": "user"}], [{"role": "wizard", "content": "a"}],
                                      [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}],
                                      [{"role": "user", "content": [{"type": "image_url"}]}], [3]])
def test_bad_messages_are_400(messages):
    error = error_of({"messages": messages}, chat=True)
    assert error.status == 400 and error.param.startswith("messages")


def test_responses_have_openais_shape():
    request = parse({"prompt": "a", "n": 2})
    body = completion_response(request, "cmpl-1", MODEL, ["x", "yz"], ["stop", "length"], 1, 3)
    assert body["object"] == "text_completion" and [c["text"] for c in body["choices"]] == ["x", "yz"]
    assert body["usage"] == {"prompt_tokens": 1, "completion_tokens": 3, "total_tokens": 4}
    chat = parse({"messages": [{"role": "user", "content": "a"}]}, chat=True)
    first = chunk(chat, "c", MODEL, 0, role=True)["choices"][0]
    assert first["delta"] == {"role": "assistant", "content": ""} and first["finish_reason"] is None
    assert chunk(chat, "c", MODEL, 0, text="b")["choices"][0]["delta"] == {"content": "b"}
    assert chunk(chat, "c", MODEL, 0, reason="stop")["choices"][0] == {"index": 0, "delta": {}, "logprobs": None,
                                                                       "finish_reason": "stop"}
