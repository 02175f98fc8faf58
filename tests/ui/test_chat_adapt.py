"""``/adapt on``: the model learns from the conversation; ``/reset`` gives back the trained model exactly."""

import torch

import chargen
from chargen.generation.settings import SamplingSettings
from chargen.ui.chat import ChatSession
from tests.ui.test_chat import make_random_checkpoint

GREEDY = SamplingSettings(temp=0, length=30, stop=None)


def test_adapt_then_reset_gives_back_the_exact_original_predictions(tmp_path):
    path = make_random_checkpoint(tmp_path / "rand.safetensors")
    on_disk = path.read_bytes()
    session = ChatSession(chargen.load(path), GREEDY)
    original = "".join(session.reply("hello there"))
    trained = [p.detach().clone() for p in session.model.model.parameters()]

    assert "adapt on" in session.run_command("/adapt on").message
    for text in ("hello there", "the cat sat on the mat", "hello there"):
        "".join(session.reply(text))
    assert session.model.adapted
    assert not all(torch.equal(a, b) for a, b in zip(trained, session.model.model.parameters()))
    assert "/reset restores" in session.run_command("/adapt off").message
    assert "trained weights restored" in session.run_command("/reset").message

    assert all(torch.equal(a, b) for a, b in zip(trained, session.model.model.parameters()))
    assert "".join(session.reply("hello there")) == original
    assert path.read_bytes() == on_disk  # the checkpoint on disk never changes


def test_adapt_off_learns_nothing_and_a_bad_argument_changes_nothing(tmp_path):
    session = ChatSession(chargen.load(make_random_checkpoint(tmp_path / "rand.safetensors")), GREEDY)
    "".join(session.reply("hello"))
    assert not session.model.adapted and session.run_command("/adapt").message == "adapt off"
    result = session.run_command("/adapt maybe")
    assert result.error and "/adapt on or /adapt off" in result.message and not session.adapt
