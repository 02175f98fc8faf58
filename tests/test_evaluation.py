"""Evaluation: the loss over a text, per token and per character, whatever the streams it is cut into."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from chargen.errors import ChargenError
from chargen.evaluation import EvalResult, evaluate
from chargen.model import CharLM, ModelConfig
from chargen.text.tokenizers import ByteTokenizer, CharTokenizer, SentencePieceTokenizer
from tests.conftest import make_text


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


def test_windowed_evaluation_is_the_mean_of_per_window_losses_computed_by_hand():
    from chargen.evaluation import evaluate_windows

    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=20, hidden=16, layers=2))
    tokens = np.random.RandomState(1).randint(0, 20, size=1 + 4 * 50)
    by_hand = []
    with torch.no_grad():
        model.eval()
        for first in range(1, len(tokens), 50):  # each window: 50 predictions from a zero state
            x = torch.from_numpy(tokens[first - 1:first + 50])
            by_hand.append(F.cross_entropy(model(x[None, :-1])[0][0], x[1:]).item())
    model.train()
    result = evaluate_windows(model, tokens, CharTokenizer("abcdefghijklmnopqrst"), 50)
    assert result.tokens == 200 and result.chars == 200
    assert result.nats_per_char == pytest.approx(sum(by_hand) / len(by_hand), rel=1e-5)
    # With no context carried, the figure differs from the streamed one.
    assert result.nats_per_char != pytest.approx(evaluate(model, tokens, CharTokenizer("abcdefghijklmnopqrst")).nats_per_char)
    assert model.training


def test_a_streamed_text_scores_as_the_whole_array_at_once():
    from chargen.evaluation import encode_chunks, evaluate_stream, evaluate_windows

    torch.manual_seed(0)
    tokenizer = CharTokenizer("abcdefgh \n")
    model = CharLM(ModelConfig(vocab_size=10, hidden=16, layers=1))
    rng = np.random.RandomState(2)
    text = "".join(rng.choice(list("abcdefgh \n"), size=5000))
    chunks = [text[i:i + 333] for i in range(0, len(text), 333)]
    progress = []
    streamed, windowed = evaluate_stream(model, encode_chunks(chunks, tokenizer, piece_chars=100), tokenizer,
                                         window=64, stream_len=128, burn_in=32, block_streams=2,
                                         on_progress=progress.append)
    whole = tokenizer.encode(text)
    assert streamed.tokens == windowed.tokens == len(text) - 1
    assert streamed.nats_per_char == pytest.approx(
        evaluate(model, whole, tokenizer, stream_len=128, burn_in=32).nats_per_char, rel=1e-6)
    assert windowed.nats_per_char == pytest.approx(evaluate_windows(model, whole, tokenizer, 64).nats_per_char, rel=1e-6)
    assert len(progress) > 5 and progress == sorted(progress) and progress[-1] == len(text) - 1


def test_a_streamed_text_with_an_unknown_character_is_a_one_line_error_naming_it():
    from chargen.evaluation import encode_chunks

    with pytest.raises(ChargenError, match="held.txt has characters the model never saw"):
        list(encode_chunks(["abc", "abz"], CharTokenizer("abc"), "held.txt"))


def test_sentencepiece_and_normalizing_tokenizers_are_encoded_a_line_at_a_time():
    from chargen.evaluation import encode_chunks

    tokenizer = CharTokenizer("abcé\n", normalize="NFC")
    pieces = list(encode_chunks(["ab\nce", "\u0301\nab"], tokenizer, piece_chars=4))
    # "e" + combining acute across chunks is one "é", as if the text were encoded at once.
    assert np.concatenate(pieces).tolist() == tokenizer.encode("ab\ncé\nab").tolist()


@pytest.mark.parametrize("kind", ["char", "sentencepiece"])
def test_streamed_evaluation_of_a_text_larger_than_a_memory_limit_stays_under_it(tmp_path, monkeypatch, kind):
    # Sentencepiece is encoded a line at a time: that path must stay bounded too.
    import tracemalloc

    import chargen.evaluation as evaluation
    from chargen.text import files

    limit = 1 << 20  # 1 MB of Python objects and arrays; the file is 4 MB
    path = tmp_path / "big.txt"
    line = ("the quick brown fox jumps over the lazy dog\n" * 1000).encode()
    with open(path, "wb") as f:
        for _ in range((4 << 20) // len(line) + 1):
            f.write(line)
    assert path.stat().st_size > 4 * limit
    monkeypatch.setattr(files, "READ_BLOCK_BYTES", 64 << 10)
    largest = []  # the longest token array any scoring call is given: nothing proportional to the file
    real = evaluation.evaluate
    monkeypatch.setattr(evaluation, "evaluate", lambda m, tokens, *a, **k: largest.append(len(tokens)) or real(m, tokens, *a, **k))
    tokenizer = (CharTokenizer(sorted(set(line.decode()))) if kind == "char" else
                 SentencePieceTokenizer.train([make_text(300) + line.decode()], vocab_size=320))
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, hidden=8, layers=1))
    tracemalloc.start()
    try:
        pieces = evaluation.encode_chunks(files.iter_text([path]), tokenizer, str(path), piece_chars=16 << 10)
        result, _ = evaluation.evaluate_stream(model, pieces, tokenizer, block_streams=8)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.chars == path.stat().st_size - (1 if kind == "char" else len(tokenizer.decode(
        tokenizer.encode(line.decode())[:1])))  # the first token is context, never predicted
    assert peak < limit, peak
    assert max(largest) <= 8 * 2048 + 256
