"""``chargen serve`` throughput: total chars/s with 1, 8 and 32 concurrent streaming clients.

    python bench/serve_throughput.py                       # random-weight 2x384 LSTM, vocab 65
    python bench/serve_throughput.py --checkpoint python   # a built-in model or any checkpoint
    python bench/serve_throughput.py --clients 1,8,32 --tokens 300 --rounds 5

The server is ``chargen serve`` itself, in a process of its own on a free 127.0.0.1 port, so that the
clients do not share its interpreter; each client is an ``httpx`` streaming request to ``/v1/completions`` with its own seed,
reading the server-sent events as they come. For each number of clients it prints the wall time
from the first request to the last ``[DONE]``, the total characters received per second, and the
ratio to one client, the baseline measured in the same run (the fastest of ``--rounds`` rounds,
which alternate between the counts). Each client asks for ``--tokens``
tokens with no stop string, so every run is bounded: clients x tokens tokens in all.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import string
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import torch

from chargen.checkpoint import save_checkpoint
from chargen.model import CharLM, ModelConfig
from chargen.text.tokenizers import CharTokenizer

VOCAB = "\n" + string.ascii_letters + " .,;:!?'-&$3"  # 65 symbols, like tinyshakespeare


def random_checkpoint(directory: Path, layers: int, hidden: int) -> Path:
    torch.manual_seed(0)
    tokenizer = CharTokenizer(VOCAB)
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=layers, hidden=hidden)).eval()
    path = directory / "random.safetensors"
    save_checkpoint(path, model, tokenizer, {"step": 0})
    return path


async def one_client(http: httpx.AsyncClient, url: str, seed: int, tokens: int) -> int:
    chars = 0
    body = {"prompt": "\n", "max_tokens": tokens, "seed": seed, "temperature": 1.0, "stream": True}
    async with http.stream("POST", url + "/v1/completions", json=body) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                chars += len(json.loads(line[6:])["choices"][0]["text"])
    return chars


async def run_clients(url: str, clients: int, tokens: int) -> tuple[int, float]:
    limits = httpx.Limits(max_connections=clients + 4)
    async with httpx.AsyncClient(timeout=600, limits=limits) as http:
        started = time.perf_counter()
        counts = await asyncio.gather(*(one_client(http, url, seed, tokens) for seed in range(clients)))
        return sum(counts), time.perf_counter() - started


def start_server(checkpoint: str, threads: int) -> tuple[subprocess.Popen, str]:
    """``chargen serve CHECKPOINT --port 0``; returns the process and its URL once it listens."""
    env = dict(os.environ, **({"OMP_NUM_THREADS": str(threads)} if threads else {}))
    command = [sys.executable, "-m", "chargen", "serve", str(checkpoint), "--port", "0", "--name", "bench"]
    proc = subprocess.Popen(command, env=env, stderr=subprocess.PIPE, stdout=subprocess.DEVNULL, text=True)
    line = proc.stderr.readline()
    if " at http://" not in line:
        proc.kill()
        raise SystemExit(f"chargen serve did not start: {line}{proc.stderr.read()}")
    print(line.strip())
    return proc, line.split(" at ", 1)[1].split("/ ;")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--checkpoint", help="a checkpoint, run directory or built-in model (default: random 2x384)")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--hidden", type=int, default=384)
    parser.add_argument("--clients", default="1,8,32", help="comma-separated numbers of concurrent clients")
    parser.add_argument("--tokens", type=int, default=300, help="tokens each client asks for")
    parser.add_argument("--rounds", type=int, default=3, help="rounds of every count; the fastest counts")
    parser.add_argument("--threads", type=int, default=0,
                        help="the server's torch threads (default: chargen serve's choice, 1 on CPU)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = args.checkpoint or random_checkpoint(Path(tmp), args.layers, args.hidden)
        proc, url = start_server(path, args.threads)
        try:
            asyncio.run(run_clients(url, 1, 20))  # warm up: first requests pay one-off costs
            counts = [int(c) for c in args.clients.split(",")]
            best: dict[int, tuple[int, float]] = {}
            for _ in range(args.rounds):  # rounds alternate, so a slow minute hits every count alike
                for clients in counts:
                    chars, seconds = asyncio.run(run_clients(url, clients, args.tokens))
                    if clients not in best or chars / seconds > best[clients][0] / best[clients][1]:
                        best[clients] = (chars, seconds)
            print(f"{args.tokens} tokens per client; the fastest of {args.rounds} rounds")
            print(f"{'clients':>7}  {'seconds':>8}  {'chars':>7}  {'chars/s':>9}  {'vs 1 client':>11}")
            baseline = best[counts[0]][0] / best[counts[0]][1]
            for clients in counts:
                chars, seconds = best[clients]
                rate = chars / seconds
                print(f"{clients:>7}  {seconds:>8.2f}  {chars:>7}  {rate:>9,.0f}  {rate / baseline:>10.2f}x")
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    main()
