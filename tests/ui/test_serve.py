"""``chargen serve``: OpenAI's own client gets chargen's text; many streams at once; bad requests are 4xx."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys
import threading
from types import SimpleNamespace

import httpx
import pytest

import chargen
from chargen.generation.sampler import Sampler
from chargen.generation.settings import SamplingSettings
from chargen.limits import SERVE_MAX_BODY_BYTES, SERVE_MAX_N, SERVE_MAX_PROMPT_CHARS, SERVE_MAX_TOKENS
from chargen.ui.serve import Server, ServeOptions, ServerThread
from chargen.ui.serving import is_loopback, model_id
from tests.builtin_models import builtin_dir, builtin_tiny  # noqa: F401
from tests.conftest import CHARGEN, TOKENIZER, random_model, subprocess_env

openai = pytest.importorskip("openai", reason="the openai client is a test dependency: pip install -e '.[test]'")

MODEL = "tiny"
WAIT = 60  # seconds: bounds waits that should end at once


@pytest.fixture(scope="module")
def model(tiny_run):
    return chargen.load(tiny_run)


@pytest.fixture(scope="module")
def served(model):
    with ServerThread(Server(model, ServeOptions(model_id=MODEL))) as thread:
        yield thread


@pytest.fixture
def client(served):
    return openai.OpenAI(base_url=served.url + "/v1", api_key="unused", max_retries=0, timeout=WAIT)


def sampled(cli, run, *args) -> str:
    """What ``chargen sample RUN --prime P ...`` prints after the prime, without its last newline."""
    code, out, err = cli("sample", run, *args)
    assert code == 0, err
    prime = args[args.index("--prime") + 1]
    return out[len(prime):-1]


def test_openai_client_completion_equals_chargen_sample(client, cli, tiny_run):
    expected = sampled(cli, tiny_run, "--prime", "the ", "--length", "60", "--seed", "3", "--temp", "0.9")
    result = client.completions.create(model=MODEL, prompt="the ", max_tokens=60, seed=3, temperature=0.9)
    assert result.choices[0].text == expected
    assert result.choices[0].finish_reason == "length" and result.usage.completion_tokens == 60


def test_openai_client_streamed_completion_equals_chargen_sample(client, cli, tiny_run):
    expected = sampled(cli, tiny_run, "--prime", "a quick ", "--length", "80", "--seed", "11", "--top-k", "5",
                       "--stop", "dog")
    stream = client.completions.create(model=MODEL, prompt="a quick ", max_tokens=80, seed=11, stream=True,
                                       stop="dog", extra_body={"top_k": 5})
    chunks = list(stream)
    assert "".join(c.choices[0].text for c in chunks) == expected
    # Server-sent chunks, not one body: text, then the finish reason. How many text chunks there
    # are depends on speed (the server merges what is ready into one write), so only that is checked.
    assert len(chunks) >= 2 and chunks[-1].choices[0].text == ""
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_openai_client_streamed_chat_reply_equals_chargen_sample(client, cli, tiny_run):
    # With no template the chat prompt is the user's text, and a reply ends at a blank line, as in chargen repl.
    expected = sampled(cli, tiny_run, "--prime", "the fox", "--length", "70", "--seed", "5", "--stop", r"\n\n")
    stream = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "the fox"}],
                                            max_tokens=70, seed=5, stream=True)
    chunks = list(stream)
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == expected
    plain = client.chat.completions.create(model=MODEL, messages=[{"role": "user", "content": "the fox"}],
                                           max_tokens=70, seed=5)
    assert plain.choices[0].message.content == expected


def test_models_health_and_n(client, served, model):
    assert [m.id for m in client.models.list()] == [MODEL]
    assert httpx.get(served.url + "/health").json()["status"] == "ok"
    result = client.completions.create(model=MODEL, prompt="the ", max_tokens=30, seed=2, n=3)
    assert [c.text for c in result.choices] == model.generate("the ", num_samples=3, length=30, seed=2)


def test_beam_is_an_extra_field(client, model):
    result = client.completions.create(model=MODEL, prompt="the ", max_tokens=25, extra_body={"beam": 3})
    assert result.choices[0].text == model.generate("the ", beam=3, length=25)


async def stream_text(http: httpx.AsyncClient, url: str, body: dict) -> str:
    text = ""
    async with http.stream("POST", url + "/v1/completions", json=dict(body, stream=True)) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: ") and line != "data: [DONE]":
                text += json.loads(line[6:])["choices"][0]["text"]
    return text


def test_32_concurrent_streams_each_equal_their_single_request_text(served, model):
    bodies = [{"prompt": ["the ", "a ", "dog "][i % 3], "max_tokens": 40 + i, "seed": i, "temperature": 1.0}
              for i in range(32)]

    async def run_all():
        async with httpx.AsyncClient(timeout=WAIT, limits=httpx.Limits(max_connections=64)) as http:
            return await asyncio.gather(*(stream_text(http, served.url, body) for body in bodies))

    texts = asyncio.run(run_all())
    for body, text in zip(bodies, texts):
        assert text == model.generate(body["prompt"], length=body["max_tokens"], seed=body["seed"], temp=1.0)


def test_a_client_that_disconnects_frees_its_slot_and_stalls_no_one():
    # A model slow enough (2x256) that running the abandoned request to its end would take seconds.
    model = SimpleNamespace(model=random_model(hidden=256), tokenizer=TOKENIZER)

    def alone(seed: int) -> str:
        sampler = Sampler(model.model, TOKENIZER)
        sampler.feed("the ")
        return sampler.generate(SamplingSettings(length=100, seed=seed))[0]

    async def scenario(url):
        async with httpx.AsyncClient(timeout=WAIT) as http:
            others = [asyncio.create_task(stream_text(http, url, {"prompt": "the ", "max_tokens": 100, "seed": s}))
                      for s in (1, 2)]
            async with http.stream("POST", url + "/v1/completions",
                                   json={"prompt": "the ", "max_tokens": SERVE_MAX_TOKENS, "stream": True}) as r:
                lines = r.aiter_lines()
                for _ in range(5):
                    await anext(lines)
            # The response is closed here, mid-stream.
            return await asyncio.gather(*others)

    with ServerThread(Server(model, ServeOptions(model_id=MODEL))) as served:
        texts = asyncio.run(scenario(served.url))
        assert texts == [alone(1), alone(2)]
        scheduler = served.server.scheduler
        assert scheduler.wait_until_idle(WAIT)
        assert scheduler.steps < SERVE_MAX_TOKENS  # the abandoned stream was dropped, not run to its end


def post(served, body, headers=None, raw: bytes | None = None) -> httpx.Response:
    if raw is not None:
        return httpx.post(served.url + "/v1/completions", content=raw, headers=headers, timeout=WAIT)
    return httpx.post(served.url + "/v1/completions", json=body, headers=headers, timeout=WAIT)


@pytest.mark.parametrize("raw, status, param", [
    (b"{not json", 400, None),
    (b"[1, 2]", 400, None),
    (json.dumps({"prompt": 3}).encode(), 400, "prompt"),
    (json.dumps({"prompt": "a", "max_tokens": "ten"}).encode(), 400, "max_tokens"),
    (json.dumps({"prompt": "a", "max_tokens": -1}).encode(), 400, "max_tokens"),
    (json.dumps({"prompt": "a", "n": 10**6}).encode(), 400, "n"),
    (json.dumps({"prompt": "a", "temperature": 99}).encode(), 400, "temperature"),
    (json.dumps({"prompt": "what? #€"}).encode(), 400, "prompt"),
    (json.dumps({"prompt": "a" * (SERVE_MAX_PROMPT_CHARS + 1)}).encode(), 400, "prompt"),
    (b"x" * (SERVE_MAX_BODY_BYTES + 1), 413, None),
    (json.dumps({"prompt": "a", "model": "gpt-4o"}).encode(), 404, "model"),
])
def test_bad_requests_get_4xx_in_openais_shape_and_the_server_keeps_serving(served, raw, status, param):
    response = post(served, None, headers={"Content-Type": "application/json"}, raw=raw)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["param"] == param and error["message"] and "Traceback" not in response.text
    assert post(served, {"prompt": "the ", "max_tokens": 5}).status_code == 200


def test_unknown_paths_and_methods_are_4xx_json(served):
    assert httpx.get(served.url + "/v1/nothing").json()["error"]["code"] == "not_found"
    response = httpx.get(served.url + "/v1/completions")
    assert response.status_code == 405 and response.json()["error"]["message"]


def test_a_wrong_api_key_is_401_and_the_right_one_works(model):
    with ServerThread(Server(model, ServeOptions(model_id=MODEL, api_key="s3cret"))) as served:
        body = {"prompt": "the ", "max_tokens": 5}
        assert post(served, body).status_code == 401
        wrong = post(served, body, headers={"Authorization": "Bearer nope"})
        assert wrong.status_code == 401 and wrong.json()["error"]["code"] == "invalid_api_key"
        assert post(served, body, headers={"Authorization": "Bearer s3cret"}).status_code == 200
        good = openai.OpenAI(base_url=served.url + "/v1", api_key="s3cret", max_retries=0)
        answer = good.completions.create(model=MODEL, prompt="the ", max_tokens=5, seed=4).choices[0].text
        raw = post(served, {**body, "seed": 4}, headers={"Authorization": "Bearer s3cret"}).json()
        assert len(answer) == 5 and answer == raw["choices"][0]["text"]  # served as to a raw request
        assert httpx.get(served.url + "/health").status_code == 200  # probes need no key


def test_a_full_server_answers_503_with_retry_after(model):
    server = Server(model, ServeOptions(model_id=MODEL, batch_rows=SERVE_MAX_N, queue_size=0))
    engine_step = server.scheduler.engine.step
    stepping, go_on = threading.Event(), threading.Event()

    def held_step(tokens):  # the first request holds every row until the test lets it go on
        stepping.set()
        assert go_on.wait(WAIT)
        return engine_step(tokens)

    server.scheduler.engine.step = held_step
    with ServerThread(server) as served:
        results = []
        busy = threading.Thread(target=lambda: results.append(post(served, {"prompt": "the ", "n": SERVE_MAX_N,
                                                                            "max_tokens": 5})))
        busy.start()
        assert stepping.wait(WAIT)
        response = post(served, {"prompt": "the ", "max_tokens": 5})
        assert response.status_code == 503 and response.headers["Retry-After"] == "1"
        assert response.json()["error"]["code"] == "server_busy"
        go_on.set()
        busy.join(WAIT)
        assert results[0].status_code == 200
        assert post(served, {"prompt": "the ", "max_tokens": 5}).status_code == 200


def test_the_chat_page_is_self_contained(served):
    page = httpx.get(served.url + "/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "<script src" not in page.text and "<link" not in page.text and "https://" not in page.text
    assert "/v1/chat/completions" in page.text and 'id="temperature"' in page.text


def test_a_public_host_needs_an_api_key(cli, tiny_run, monkeypatch):
    monkeypatch.delenv("CHARGEN_API_KEY", raising=False)
    code, out, err = cli("serve", tiny_run, "--host", "0.0.0.0")
    assert code == 2 and "--api-key" in err and "--no-auth" in err and "Traceback" not in err


@pytest.mark.parametrize("host, local", [("127.0.0.1", True), ("localhost", True), ("::1", True),
                                         ("127.0.0.2", True), ("0.0.0.0", False), ("::", False),
                                         ("192.168.1.5", False), ("example.org", False)])
def test_only_loopback_hosts_count_as_local(host, local):
    assert is_loopback(host) is local


def test_the_model_id_is_the_runs_or_the_builtin_models_name(tiny_run, builtin_tiny):
    assert model_id(str(tiny_run)) == tiny_run.name
    assert model_id(str(tiny_run / "best.safetensors")) == tiny_run.name
    assert model_id(builtin_tiny) == builtin_tiny


def test_without_the_extra_serve_names_it(cli, tiny_run, monkeypatch):
    monkeypatch.setitem(sys.modules, "chargen.ui.serve", None)  # what a missing starlette or uvicorn gives
    code, out, err = cli("serve", tiny_run)
    assert code == 2 and "pip install 'chargen[serve]'" in err and len(err.strip().splitlines()) == 1
    assert err.startswith("chargen serve: error: needs starlette")  # the command named once


def test_sigterm_finishes_streams_cleanly_and_exits(tiny_run):
    proc = subprocess.Popen([str(CHARGEN), "serve", str(tiny_run), "--port", "0", "--grace", "1s"],
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = proc.stderr.readline()
        assert "at http://127.0.0.1:" in line, line + proc.stderr.read()
        url = line.split(" at ", 1)[1].split("/ ;")[0]
        with httpx.stream("POST", url + "/v1/completions", timeout=WAIT,
                          json={"prompt": "the ", "max_tokens": 4096, "stream": True}) as response:
            lines = response.iter_lines()
            next(lines)
            proc.send_signal(signal.SIGTERM)
            rest = [line for line in lines if line]
        assert rest[-1] == "data: [DONE]"
        assert json.loads(rest[-2][6:])["choices"][0]["finish_reason"] == "length"
        # uvicorn ends by re-raising the signal once it has shut down, as a process stopped by it should.
        assert proc.wait(WAIT) in (0, -signal.SIGTERM)
        assert "Traceback" not in proc.stderr.read()
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
