"""Dynamic evaluation: the model keeps learning on the text it reads, in memory only."""

import numpy as np
import pytest
import torch

from chargen.dynamic import Adapter, evaluate_dynamic
from chargen.errors import ChargenError
from chargen.evaluation import evaluate
from chargen.model import CharLM, ModelConfig
from chargen.text.tokenizers import CharTokenizer

CHARS = "abcdefghij"


def repetitive_text() -> np.ndarray:
    pattern = np.random.RandomState(0).randint(0, len(CHARS), size=40)
    return np.tile(pattern, 60)  # the same 40 tokens, 60 times: learnable as it is read


def test_dynamic_evaluation_lowers_the_loss_on_a_repetitive_text_and_leaves_the_model_as_it_was():
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=len(CHARS), hidden=32, layers=1))
    before = [p.detach().clone() for p in model.parameters()]
    tokens, tokenizer = repetitive_text(), CharTokenizer(CHARS)
    static = evaluate(model, tokens, tokenizer)
    dynamic = evaluate_dynamic(model, [tokens[:1000], tokens[1000:]], tokenizer, lr=1e-2, decay=0.0, segment=32)
    assert dynamic.tokens == static.tokens == len(tokens) - 1
    assert dynamic.nats_per_char < static.nats_per_char - 0.5
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # a copy adapted


def test_without_learning_dynamic_evaluation_is_the_static_one_pass_figure():
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=len(CHARS), hidden=16, layers=2))
    tokens, tokenizer = repetitive_text(), CharTokenizer(CHARS)
    still = evaluate_dynamic(model, [tokens], tokenizer, lr=0.0, decay=0.0, segment=50)
    static = evaluate(model, tokens, tokenizer, burn_in=len(tokens))
    assert still.nats_per_char == pytest.approx(static.nats_per_char, rel=1e-5)


def test_restore_puts_the_trained_weights_back_exactly():
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=len(CHARS), hidden=16, layers=2)).eval()
    x = torch.from_numpy(repetitive_text()[:100])[None]
    with torch.no_grad():
        original = model(x)[0]
    adapter = Adapter(model, lr=1e-2, decay=0.1)
    for _ in range(3):
        adapter.learn(repetitive_text()[:200])
    with torch.no_grad():
        assert not torch.equal(model(x)[0], original)
        adapter.restore()
        assert torch.equal(model(x)[0], original)
    assert adapter.state is None and adapter.steps == 0


def test_bad_settings_are_clear_errors():
    model = CharLM(ModelConfig(vocab_size=3, hidden=8, layers=1))
    with pytest.raises(ChargenError, match="learning rate"):
        Adapter(model, lr=-1.0)
    with pytest.raises(ChargenError, match="too short"):
        evaluate_dynamic(model, [np.array([1])], CharTokenizer("abc"))


def test_learning_works_when_called_under_inference_mode():
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=len(CHARS), hidden=16, layers=1))
    adapter = Adapter(model, lr=1e-2)
    with torch.inference_mode():
        adapter.learn(repetitive_text()[:100])
        adapter.learn(repetitive_text()[100:200])  # carrying the state of the first call
    assert adapter.steps == 2
