"""Beam search: the most likely continuation, instead of a sampled one."""

from __future__ import annotations

import torch

from ..errors import ChargenError
from ..model import CharLM, map_state
from ..text.tokenizers import Tokenizer
from .sampler import Sampler, make_generator


@torch.inference_mode()
def beam_search(model: CharLM, tokenizer: Tokenizer, prime: str, beam_width: int,
                length: int, stops: tuple[str, ...] = ()) -> str:
    """The most likely continuation of ``length`` tokens found by beam search of ``beam_width``."""
    if beam_width < 1:
        raise ChargenError(f"--beam {beam_width}: must be >= 1")
    sampler = Sampler(model, tokenizer)
    if prime:
        sampler.feed(prime)
    else:
        sampler.start_if_empty(make_generator(0))
    log_probs = torch.log_softmax(sampler.next_logits, dim=-1)  # [1, vocab]
    state = sampler.state
    scores = torch.zeros(1)
    sequences = torch.zeros(1, 0, dtype=torch.long)
    for _ in range(length):
        vocab = log_probs.size(-1)
        candidates = (scores[:, None] + log_probs.cpu()).view(-1)
        scores, flat = torch.topk(candidates, min(beam_width, candidates.numel()))
        parents, tokens = flat // vocab, flat % vocab
        sequences = torch.cat([sequences[parents], tokens[:, None]], dim=1)
        state = map_state(state, lambda t: t[:, parents.to(t.device)])
        logits, state = model(tokens.to(sampler.device)[:, None], state)
        log_probs = torch.log_softmax(logits[:, -1].float(), dim=-1)
    text = tokenizer.decode(sequences[0].tolist())
    hits = [text.index(s) for s in stops if s and s in text]  # cut at the first stop string to appear
    return text[:min(hits)] if hits else text
