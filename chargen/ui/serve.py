"""``chargen serve CKPT``: an HTTP server for a model, speaking a subset of OpenAI's API.

Starlette on uvicorn (the ``serve`` extra). Requests are checked by ``openai_api`` and generated
by the ``Scheduler``, which steps every active stream together; this module joins the two to
HTTP: JSON bodies, server-sent events, API keys, limits, the chat page and shutdown.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import socket
import threading
from dataclasses import dataclass, field

import anyio
import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from ..generation.beam import beam_search
from ..limits import (SERVE_BATCH_ROWS, SERVE_MAX_BODY_BYTES, SERVE_QUEUE_SIZE, SERVE_REQUEST_SECONDS,
                      SERVE_SHUTDOWN_SECONDS)
from .chatpage import chat_page
from .openai_api import (APIError, ChatTemplate, CompletionRequest, chunk, completion_response, models_response,
                         new_id, parse_request)
from .scheduler import Failed, Finished, Job, Piece, QueueFull, Scheduler, ShuttingDown

RETRY_AFTER_SECONDS = 1


@dataclass
class ServeOptions:
    """How the server behaves; the defaults are ``chargen serve``'s."""

    model_id: str = "chargen"
    template: ChatTemplate = field(default_factory=ChatTemplate)
    api_key: str | None = None
    batch_rows: int = SERVE_BATCH_ROWS
    queue_size: int = SERVE_QUEUE_SIZE
    request_seconds: float = SERVE_REQUEST_SECONDS
    shutdown_seconds: float = SERVE_SHUTDOWN_SECONDS


class Server:
    """The ASGI application for one model, and the scheduler that generates for it."""

    def __init__(self, model, options: ServeOptions):
        self.model, self.options = model, options
        self.scheduler = Scheduler(model.model, model.tokenizer, batch_rows=options.batch_rows,
                                   queue_size=options.queue_size, request_seconds=options.request_seconds)
        self.beam_slot = anyio.Semaphore(1)  # beam search runs outside the batch, one at a time
        routes = [Route("/", self.page), Route("/health", self.health),
                  Route("/v1/models", self.models), Route("/v1/completions", self.completions, methods=["POST"]),
                  Route("/v1/chat/completions", self.chat_completions, methods=["POST"])]
        handlers = {APIError: self.api_error, HTTPException: self.http_error, Exception: self.internal_error}
        self.app = Starlette(routes=routes, exception_handlers=handlers)

    def close(self, grace: float = 0.0) -> None:
        """Take no more requests; cut running streams after ``grace`` seconds."""
        self.scheduler.close(grace)

    # -- errors, always in OpenAI's shape

    async def api_error(self, request: Request, exc: APIError) -> Response:
        return JSONResponse(exc.body(), status_code=exc.status, headers=exc.headers)

    async def http_error(self, request: Request, exc: HTTPException) -> Response:
        message = {404: f"no such endpoint: {request.url.path}",
                   405: f"{request.method} is not allowed on {request.url.path}"}.get(exc.status_code, str(exc.detail))
        error = APIError(exc.status_code, message, code="not_found" if exc.status_code == 404 else None)
        return JSONResponse(error.body(), status_code=exc.status_code, headers=getattr(exc, "headers", None))

    async def internal_error(self, request: Request, exc: Exception) -> Response:
        error = APIError(500, f"internal error ({type(exc).__name__}); the server logged it", kind="server_error")
        return JSONResponse(error.body(), status_code=500)

    # -- small endpoints

    async def page(self, request: Request) -> Response:
        return HTMLResponse(chat_page(self.options.model_id, needs_key=self.options.api_key is not None))

    async def health(self, request: Request) -> Response:
        closing = self.scheduler.closing_at is not None
        body = {"status": "shutting down" if closing else "ok", "model": self.options.model_id, **self.scheduler.load}
        return JSONResponse(body, status_code=503 if closing else 200)

    async def models(self, request: Request) -> Response:
        self.check_key(request)
        return JSONResponse(models_response(self.options.model_id))

    def check_key(self, request: Request) -> None:
        key = self.options.api_key
        if key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), key.encode()):
            raise APIError(401, "missing or incorrect API key: send the header 'Authorization: Bearer KEY'",
                           code="invalid_api_key")

    async def read_json(self, request: Request):
        size = request.headers.get("content-length")
        if size is not None and size.isdigit() and int(size) > SERVE_MAX_BODY_BYTES:
            raise APIError(413, f"the request body is over {SERVE_MAX_BODY_BYTES:,} bytes", code="body_too_large")
        data = b""
        async for part in request.stream():
            data += part
            if len(data) > SERVE_MAX_BODY_BYTES:
                raise APIError(413, f"the request body is over {SERVE_MAX_BODY_BYTES:,} bytes", code="body_too_large")
        try:
            return json.loads(data)
        except (ValueError, RecursionError):
            raise APIError(400, "the request body is not valid JSON", code="invalid_json") from None

    # -- completions

    async def completions(self, request: Request) -> Response:
        return await self.complete(request, chat=False)

    async def chat_completions(self, request: Request) -> Response:
        return await self.complete(request, chat=True)

    async def complete(self, request: Request, chat: bool) -> Response:
        self.check_key(request)
        body = await self.read_json(request)
        parsed = parse_request(body, self.model.tokenizer, self.options.model_id, chat, self.options.template)
        rid = new_id(chat)
        prompt_tokens = len(self.model.tokenizer.encode(parsed.prompt))
        if parsed.beam:
            return await self.beam(parsed, rid, prompt_tokens)
        events: asyncio.Queue = asyncio.Queue()
        loop = asyncio.get_running_loop()

        def emit(event) -> None:  # called by the scheduler's thread
            try:
                loop.call_soon_threadsafe(events.put_nowait, event)
            except RuntimeError:  # the loop has closed: nobody is listening any more
                pass

        job = Job(parsed.prompt, parsed.settings, emit, stops=parsed.stops, n=parsed.n, prompt_tokens=prompt_tokens)
        try:
            self.scheduler.submit(job)
        except QueueFull:
            raise APIError(503, "the server is busy: every stream and queue slot is taken; retry shortly",
                           kind="server_error", code="server_busy",
                           headers={"Retry-After": str(RETRY_AFTER_SECONDS)}) from None
        except ShuttingDown:
            raise APIError(503, "the server is shutting down", kind="server_error", code="shutting_down") from None
        if parsed.stream:
            return StreamingResponse(self.sse(parsed, job, events, rid), media_type="text/event-stream",
                                     headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"})
        return await self.collect(parsed, job, events, rid)

    async def collect(self, parsed: CompletionRequest, job: Job, events: asyncio.Queue, rid: str) -> Response:
        texts, reasons, tokens = [""] * parsed.n, ["length"] * parsed.n, 0
        remaining = parsed.n
        try:
            while remaining:
                event = await events.get()
                if isinstance(event, Piece):
                    texts[event.index] += event.text
                elif isinstance(event, Finished):
                    reasons[event.index], remaining = event.reason, remaining - 1
                    tokens += event.tokens
                elif isinstance(event, Failed):
                    raise APIError(503 if "shutting down" in event.message else 500, event.message,
                                   kind="server_error")
        finally:
            self.scheduler.cancel(job)  # a no-op when it finished; frees the rows when the client left
        return JSONResponse(completion_response(parsed, rid, self.options.model_id, texts, reasons,
                                                job.prompt_tokens, tokens))

    async def sse(self, parsed: CompletionRequest, job: Job, events: asyncio.Queue, rid: str):
        """Server-sent events as OpenAI streams them: ``data: {chunk}`` lines, then ``data: [DONE]``."""
        model_id = self.options.model_id
        try:
            if parsed.chat:
                for i in range(parsed.n):
                    yield sse_line(chunk(parsed, rid, model_id, i, role=True))
            remaining = parsed.n
            while remaining:
                lines = []
                for event in await drain(events):
                    if isinstance(event, Piece):
                        lines.append(sse_line(chunk(parsed, rid, model_id, event.index, text=event.text)))
                    elif isinstance(event, Finished):
                        remaining -= 1
                        lines.append(sse_line(chunk(parsed, rid, model_id, event.index, reason=event.reason)))
                    elif isinstance(event, Failed):
                        lines.append(sse_line(APIError(500, event.message, kind="server_error").body()))
                        remaining = 0
                        break
                yield "".join(lines)  # one write for all that was ready: fewer, larger writes under load
            yield "data: [DONE]\n\n"
        finally:
            self.scheduler.cancel(job)  # the client went away mid-stream: free its rows now

    async def beam(self, parsed: CompletionRequest, rid: str, prompt_tokens: int) -> Response:
        if parsed.n != 1:
            raise APIError(400, "beam: gives one most likely text; use n=1", param="beam", code="invalid_value")
        async with self.beam_slot:
            text = await anyio.to_thread.run_sync(beam_search, self.model.model, self.model.tokenizer,
                                                  parsed.prompt, parsed.beam, parsed.settings.length)
        hits = [i for i in (text.find(s) for s in parsed.stops) if i >= 0]
        reason = "stop" if hits else "length"
        text = text[:min(hits)] if hits else text
        tokens = len(self.model.tokenizer.encode(text))
        if not parsed.stream:
            return JSONResponse(completion_response(parsed, rid, self.options.model_id, [text], [reason],
                                                    prompt_tokens, tokens))

        async def events():
            if parsed.chat:
                yield sse_line(chunk(parsed, rid, self.options.model_id, 0, role=True))
            yield sse_line(chunk(parsed, rid, self.options.model_id, 0, text=text))
            yield sse_line(chunk(parsed, rid, self.options.model_id, 0, reason=reason))
            yield "data: [DONE]\n\n"
        return StreamingResponse(events(), media_type="text/event-stream")


async def drain(events: asyncio.Queue) -> list:
    """The next event, and every other one already waiting, with a completion's consecutive pieces
    merged: a client that reads slower than tokens come gets them in larger chunks, same text."""
    batch = [await events.get()]
    while not events.empty():
        event = events.get_nowait()
        last = batch[-1]
        if isinstance(event, Piece) and isinstance(last, Piece) and last.index == event.index:
            batch[-1] = Piece(event.index, last.text + event.text)
        else:
            batch.append(event)
    return batch


def sse_line(data: dict) -> str:
    return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"


class _Uvicorn(uvicorn.Server):
    """uvicorn, telling the server first when a signal asks it to stop."""

    def __init__(self, config: uvicorn.Config, server: Server):
        super().__init__(config)
        self.chargen = server

    def handle_exit(self, sig, frame) -> None:
        # New requests get 503 from now on; running streams finish, or are cut (finish_reason
        # "length") after the grace period, so every client gets a whole response and [DONE].
        self.chargen.close(self.chargen.options.shutdown_seconds)
        super().handle_exit(sig, frame)


def uvicorn_server(server: Server, log_level: str = "info") -> _Uvicorn:
    config = uvicorn.Config(server.app, log_level=log_level, lifespan="off",
                            timeout_graceful_shutdown=int(server.options.shutdown_seconds) + 5)
    return _Uvicorn(config, server)


def listening_socket(host: str, port: int) -> socket.socket:
    """A socket already listening, so clients may connect before the server's loop runs."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


def run(server: Server, sock: socket.socket, log_level: str = "info") -> None:
    """Serve on ``sock`` until SIGINT/SIGTERM, then shut down gracefully."""
    try:
        uvicorn_server(server, log_level).run(sockets=[sock])
    finally:
        server.close()
        server.scheduler.join(timeout=server.options.shutdown_seconds + 5)


class ServerThread:
    """The server on a free 127.0.0.1 port in a background thread (tests, benchmarks)."""

    def __init__(self, server: Server, host: str = "127.0.0.1"):
        self.server = server
        self.sock = listening_socket(host, 0)
        self.url = f"http://{host}:{self.sock.getsockname()[1]}"
        self.uvicorn = uvicorn_server(server, log_level="warning")
        self.thread = threading.Thread(target=self.uvicorn.run, kwargs={"sockets": [self.sock]}, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.close()
        self.uvicorn.should_exit = True
        self.thread.join()
        self.server.scheduler.join()
        self.sock.close()

    def __enter__(self) -> "ServerThread":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()
