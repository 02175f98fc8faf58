"""The training objective: cross-entropy plus AWD-LSTM's activation penalties (--ar, --tar)."""

import pytest
import torch
import torch.nn.functional as F

import chargen
from chargen.checkpoint import load_checkpoint
from chargen.model import TopOutput
from chargen.training.objective import activation_penalty, training_loss
from tests.conftest import TINY_OPTIONS


def top_output() -> TopOutput:
    raw = torch.tensor([[[1.0, 0.0], [3.0, 2.0], [3.0, -2.0]]])  # [batch 1, time 3, hidden 2]
    return TopOutput(raw, raw * torch.tensor([2.0, 0.0]))  # the second unit dropped, the first kept at p=0.5


def test_ar_is_the_mean_square_of_the_dropped_output():
    # dropped: [[2, 0], [6, 0], [6, 0]] -> squares 4 + 36 + 36 over 6 entries
    assert activation_penalty(top_output(), ar=2.0, tar=0.0).item() == pytest.approx(2.0 * 76 / 6)


def test_tar_is_the_mean_square_of_the_change_between_steps_before_dropout():
    # raw changes: [2, 2] then [0, -4] -> squares 4 + 4 + 0 + 16 over 4 entries
    assert activation_penalty(top_output(), ar=0.0, tar=1.5).item() == pytest.approx(1.5 * 24 / 4)
    assert activation_penalty(top_output(), ar=2.0, tar=1.5).item() == pytest.approx(2.0 * 76 / 6 + 1.5 * 24 / 4)


def test_a_one_step_window_has_no_change_to_penalize():
    one_step = TopOutput(torch.ones(2, 1, 3), torch.ones(2, 1, 3))
    assert activation_penalty(one_step, ar=0.0, tar=5.0).item() == 0.0


def test_training_loss_reports_the_cross_entropy_and_differentiates_the_penalties_too():
    torch.manual_seed(0)
    logits, targets = torch.randn(1, 3, 5), torch.tensor([[1, 4, 0]])
    raw = torch.randn(1, 3, 2, requires_grad=True)
    top = TopOutput(raw, raw * 1.0)
    loss, objective = training_loss(logits, targets, top, ar=1.0, tar=1.0)
    assert loss.item() == pytest.approx(F.cross_entropy(logits.view(-1, 5), targets.view(-1)).item())
    assert objective.item() == pytest.approx(loss.item() + activation_penalty(top, 1.0, 1.0).item())
    objective.backward()
    expected = 2 * raw.detach() / 6  # d/draw of mean(raw^2) over 6 entries (AR) ...
    diff = raw.detach()[:, 1:] - raw.detach()[:, :-1]
    expected[:, 1:] += 2 * diff / 4  # ... plus TAR's pull of each step towards the one before
    expected[:, :-1] -= 2 * diff / 4
    torch.testing.assert_close(raw.grad, expected)
    off_loss, off_objective = training_loss(logits, targets, top, ar=0.0, tar=0.0)
    assert off_objective is off_loss


@pytest.mark.parametrize("ar, tar", [(2.0, 0.0), (0.0, 1.0), (3.0, 0.5)])
def test_the_written_out_gradient_is_the_derivative(ar, tar):
    torch.manual_seed(0)
    raw = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    dropped = torch.randn(2, 5, 3, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda r, d: activation_penalty(TopOutput(r, d), ar, tar), (raw, dropped))


def test_in_bf16_it_matches_autograd_on_the_formula():
    # What training under bf16 autocast hands it: the gradients agree to bf16's precision.
    torch.manual_seed(0)
    raw = torch.randn(4, 16, 32).bfloat16().requires_grad_()
    dropped = torch.randn(4, 16, 32).bfloat16().requires_grad_()
    activation_penalty(TopOutput(raw, dropped), 2.0, 1.0).backward()
    ours = raw.grad.clone(), dropped.grad.clone()
    raw.grad = dropped.grad = None
    reference = 2.0 * dropped.float().pow(2).mean() + 1.0 * (raw[:, 1:] - raw[:, :-1]).float().pow(2).mean()
    reference.backward()
    for mine, theirs in zip(ours, (raw.grad, dropped.grad)):
        assert mine.dtype == torch.bfloat16
        torch.testing.assert_close(mine.float(), theirs.float(), rtol=1e-2, atol=1e-5)


def test_the_penalties_change_what_a_run_learns_and_are_saved_with_it(tiny_corpus, tmp_path):
    options = {**TINY_OPTIONS, "max_steps": 12, "eval_every": 12}
    weights = {}
    for name, (ar, tar) in {"off": (0.0, 0.0), "on": (2.0, 1.0)}.items():
        chargen.train(str(tiny_corpus), out=str(tmp_path / name), ar=ar, tar=tar, **options)
        saved = load_checkpoint(tmp_path / name / "last.safetensors")
        assert (saved.summary["train_config"]["ar"], saved.summary["train_config"]["tar"]) == (ar, tar)
        weights[name] = saved.model.rnn.weight_hh_l0
    assert not torch.equal(weights["off"], weights["on"])
