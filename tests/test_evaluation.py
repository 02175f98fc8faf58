"""Evaluation: the loss over a text, per token and per character, whatever the streams it is cut into."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chargen.errors import ChargenError
from chargen.evaluation import EvalResult, evaluate
from chargen.model import CharLM, ModelConfig
from chargen.text.tokenizers import ByteTokenizer, CharTokenizer


def test_evaluation_equals_one_pass_over_the_whole_text():
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=256, hidden=16, layers=2)).eval()
    tokens = np.random.RandomState(0).randint(0, 128, size=3000)
    with torch.no_grad():
        x = torch.from_numpy(tokens)[None]
        one_pass = F.cross_entropy(model(x[:, :-1])[0][0], x[0, 1:]).item()
    # Many short streams with enough burn-in score exactly like one long pass.
    result = evaluate(model, tokens, ByteTokenizer(), stream_len=200, burn_in=300)
    assert result.tokens == 2999
    assert result.nats_per_token == pytest.approx(one_pass, rel=1e-5)


def test_loss_per_char_counts_the_characters_of_multi_byte_tokens():
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=256, hidden=16, layers=1))
    text = "héllo wörld " * 50
    tokens = np.frombuffer(text.encode(), dtype=np.uint8)
    result = evaluate(model, tokens, ByteTokenizer())
    assert result.tokens == len(tokens) - 1 and result.chars == len(text) - 1  # the first byte is not predicted
    assert result.nats_per_char == pytest.approx(result.nats_per_token * result.tokens / result.chars)
    assert model.training  # put back as it was


def test_the_figures_derived_from_the_loss():
    result = EvalResult(nats_per_token=1.0, nats_per_char=0.5, tokens=10, chars=20)
    assert result.bits_per_char == pytest.approx(0.5 / math.log(2))
    assert result.perplexity == pytest.approx(math.exp(0.5))
    assert result.to_dict() == {"nats_per_char": 0.5, "bits_per_char": result.bits_per_char,
                                "perplexity": result.perplexity, "tokens": 10, "chars": 20}
    assert EvalResult(1e4, 1e4, 1, 1).perplexity == math.exp(700)  # capped, not an overflow


def test_a_text_too_short_to_predict_anything_is_a_clear_error():
    model = CharLM(ModelConfig(vocab_size=3, hidden=8, layers=1))
    with pytest.raises(ChargenError, match="too short"):
        evaluate(model, np.array([1]), CharTokenizer("abc"))
