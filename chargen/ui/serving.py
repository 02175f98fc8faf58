"""``chargen serve`` on the command line: its options, and starting the server.

Kept apart from ``serve.py`` so that the CLI starts without Starlette or uvicorn installed:
those are imported only when ``chargen serve`` runs (the ``serve`` extra).
"""

from __future__ import annotations

import ipaddress
import os
import sys
from pathlib import Path

from ..devices import one_thread_for_single_steps
from ..errors import ChargenError, check_known_chars
from ..limits import (MAX_WHOLE, SERVE_BATCH_ROWS, SERVE_MAX_N, SERVE_QUEUE_SIZE, SERVE_REQUEST_SECONDS,
                      SERVE_SHUTDOWN_SECONDS)
from ..pretrained import find_builtin
from .options import add_device_argument, parse_duration, unescape

DEFAULT_HOST, DEFAULT_PORT = "127.0.0.1", 8000
API_KEY_VARIABLE = "CHARGEN_API_KEY"


def add_serve_arguments(parser) -> None:
    parser.add_argument("checkpoint", metavar="CKPT",
                        help="a built-in model's name (chargen models), a run directory or a checkpoint file")
    parser.add_argument("--host", default=DEFAULT_HOST,
                        help=f"address to listen on; anything but loopback needs --api-key or --no-auth "
                        f"(default: {DEFAULT_HOST})")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"TCP port (default: {DEFAULT_PORT})")
    parser.add_argument("--api-key", default=None,
                        help=f"clients must send 'Authorization: Bearer KEY' (default: ${API_KEY_VARIABLE}, else none)")
    parser.add_argument("--no-auth", action="store_true", help="serve a non-loopback --host without an API key")
    parser.add_argument("--name", default=None, help="the model's id in the API (default: from CKPT)")
    parser.add_argument("--user-prefix", default="", metavar="TEXT",
                        help=r"chat template: fed before each user message, as chargen repl (default: none)")
    parser.add_argument("--bot-prefix", default="", metavar="TEXT",
                        help=r"chat template: fed after each user message, before the reply (default: none)")
    parser.add_argument("--max-streams", type=int, default=SERVE_BATCH_ROWS,
                        help=f"completions generated together at most; more wait in the queue "
                        f"(default: {SERVE_BATCH_ROWS})")
    parser.add_argument("--queue", type=int, default=SERVE_QUEUE_SIZE,
                        help=f"requests that may wait for a stream; past that: 503 (default: {SERVE_QUEUE_SIZE})")
    parser.add_argument("--timeout", type=parse_duration, default=SERVE_REQUEST_SECONDS,
                        help=f"a completion is cut after this long (default: {SERVE_REQUEST_SECONDS:g}s)")
    parser.add_argument("--grace", type=parse_duration, default=SERVE_SHUTDOWN_SECONDS,
                        help=f"on SIGTERM, running streams get this long to finish "
                        f"(default: {SERVE_SHUTDOWN_SECONDS:g}s)")
    add_device_argument(parser)


def model_id(checkpoint: str) -> str:
    """The model's name in the API: a built-in model's name, else the run directory's or file's."""
    path = Path(checkpoint)
    if not path.exists() and find_builtin(checkpoint):
        return checkpoint
    path = path.resolve()
    if path.is_file() and path.stem in ("best", "last"):
        return path.parent.name
    return path.stem if path.is_file() else path.name


def is_loopback(host: str) -> bool:
    """Whether binding to ``host`` keeps the server to this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_options(args, api_key: str | None) -> None:
    """Every serve option checked before the model is loaded."""
    if not 0 <= args.port <= 65535:
        raise ChargenError(f"--port {args.port}: must be between 0 and 65535")
    if not SERVE_MAX_N <= args.max_streams <= MAX_WHOLE:
        raise ChargenError(f"--max-streams {args.max_streams}: must be between {SERVE_MAX_N} (the most one "
                           f"request may ask for) and {MAX_WHOLE:,}")
    if not 0 <= args.queue <= MAX_WHOLE:
        raise ChargenError(f"--queue {args.queue}: must be between 0 and {MAX_WHOLE:,}")
    if api_key == "":
        raise ChargenError(f"--api-key (or ${API_KEY_VARIABLE}): must not be empty")
    if not is_loopback(args.host) and api_key is None and not args.no_auth:
        raise ChargenError(f"--host {args.host}: other machines could reach this server; give --api-key KEY "
                           f"(or set ${API_KEY_VARIABLE}), or --no-auth to serve without one")


def serve(args) -> int:
    try:
        from .serve import Server, ServeOptions, listening_socket, run  # Starlette, uvicorn: the extra
    except ImportError:
        raise ChargenError("needs starlette and uvicorn: pip install 'chargen[serve]'") from None
    from ..api import load
    from .openai_api import ChatTemplate

    api_key = args.api_key if args.api_key is not None else os.environ.get(API_KEY_VARIABLE)
    check_options(args, api_key)
    model = load(args.checkpoint, device=args.device)
    # The server also keeps two threads of its own busy (HTTP and the generating worker).
    one_thread_for_single_steps(model.device)
    template = ChatTemplate(unescape(args.user_prefix), unescape(args.bot_prefix))
    for option, text in (("--user-prefix", template.user_prefix), ("--bot-prefix", template.bot_prefix)):
        check_known_chars(model.tokenizer, text, option, "; choose a prefix made of the corpus's characters")
    options = ServeOptions(model_id=args.name or model_id(args.checkpoint), template=template, api_key=api_key,
                           batch_rows=args.max_streams, queue_size=args.queue, request_seconds=args.timeout,
                           shutdown_seconds=args.grace)
    try:
        sock = listening_socket(args.host, args.port)
    except OSError as exc:
        raise ChargenError(f"--host {args.host} --port {args.port}: cannot listen there: "
                           f"{exc.strerror or exc}") from None
    server = Server(model, options)
    port = sock.getsockname()[1]  # the one chosen, for --port 0
    where = f"http://{'[' + args.host + ']' if ':' in args.host else args.host}:{port}"
    print(f"chargen serve: {options.model_id} ({model.describe()}) at {where}/ ; OpenAI API at {where}/v1"
          f"{'' if api_key is None else ' (API key required)'}; Ctrl-C stops", file=sys.stderr, flush=True)
    run(server, sock)
    return 0
