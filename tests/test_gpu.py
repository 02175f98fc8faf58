"""The CUDA code paths: cuDNN training, bf16 autocast, pinned transfers, the sampler, --compile.

These run only where PyTorch sees a CUDA GPU, so CI (which has none) skips them all. On a
machine with one: ``python -m pytest tests/test_gpu.py``.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import chargen
from chargen.checkpoint import load_checkpoint
from chargen.model import CharLM, ModelConfig
from chargen.generation.sampler import Sampler
from chargen.generation.settings import SamplingSettings
from chargen.training import RunStarted, StepDone, TrainConfig, Trainer, TrainingInterrupted
from tests.conftest import TINY_OPTIONS, TOKENIZER, random_model

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA GPU here"),
              # cuDNN would be copying the weights at every call (chargen.model.layers' flatten_parameters)
              pytest.mark.filterwarnings("error:RNN module weights are not part of single contiguous")]

# Two layers, so the skip connections' per-layer path runs too; the CPU-only options left out.
GPU_OPTIONS = dict(TINY_OPTIONS, layers=2, hidden=64, device="cuda", precision="auto", max_steps=80, lr=0.02,
                   eval_every=40)


def train_recording(corpus, out, **options) -> tuple[list, list]:
    """Train with ``options`` over GPU_OPTIONS; returns the events and the warnings raised."""
    events = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        chargen.train(str(corpus), out=str(out), on_event=events.append, **dict(GPU_OPTIONS, **options))
    return events, [str(w.message) for w in caught]


def test_training_on_cuda_uses_cudnn_and_bf16_and_loads_anywhere(tiny_corpus, tmp_path):
    events, caught = train_recording(tiny_corpus, tmp_path / "run")
    started = next(e for e in events if isinstance(e, RunStarted))
    assert started.device.startswith("cuda") and started.precision == "bf16"
    losses = [e.loss for e in events if isinstance(e, StepDone)]
    assert losses[-1] < 0.6 * losses[0]
    assert not [w for w in caught if "contiguous chunk" in w], caught

    on_gpu = load_checkpoint(tmp_path / "run", device="cuda")
    on_cpu = load_checkpoint(tmp_path / "run", device="cpu")
    assert next(on_gpu.model.parameters()).dtype == torch.float32  # master weights stay fp32
    tokens = torch.as_tensor(on_cpu.tokenizer.encode("the cat "), dtype=torch.long).unsqueeze(0)
    with torch.no_grad():
        gpu_logits, _ = on_gpu.model.eval()(tokens.cuda())
        cpu_logits, _ = on_cpu.model.eval()(tokens)
    # cuDNN computes fp32 products in TF32 by default (torch.backends.cudnn.allow_tf32): ~1e-3
    torch.testing.assert_close(gpu_logits.cpu(), cpu_logits, atol=3e-3, rtol=1e-2)

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profile:
        model = on_gpu.model.train()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            logits, _ = model(tokens.cuda())
        logits.float().sum().backward()
    assert any("cudnn_rnn" in event.key for event in profile.key_averages())


@pytest.mark.parametrize("skip_connections", [True, False])
def test_cudnn_finds_the_weights_of_each_call_in_one_buffer(skip_connections):
    config = ModelConfig(vocab_size=30, layers=3, hidden=64, skip_connections=skip_connections)
    model = CharLM(config).cuda().train()
    storages = [{getattr(model.rnn, f"{name}_l{layer}").untyped_storage().data_ptr()
                 for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")} for layer in range(3)]
    assert all(len(layer) == 1 for layer in storages)
    # One buffer per layer for the layer-by-layer calls of skip connections, else one for all.
    assert len(set.union(*storages)) == (3 if skip_connections else 1)
    tokens = torch.randint(30, (4, 20), device="cuda")
    for _ in range(2):  # and still so after an optimizer step and a move to the CPU and back
        logits, _ = model(tokens)  # the module's filter turns cuDNN's copying warning into an error
        logits.sum().backward()
        torch.optim.AdamW(model.parameters(), fused=True).step()
        model = model.cpu().cuda()


def test_weight_drop_and_locked_dropout_train_on_cuda_and_are_off_at_evaluation():
    torch.manual_seed(0)
    settings = dict(vocab_size=30, layers=2, hidden=64)
    model = CharLM(ModelConfig(**settings, dropout=0.3, weight_drop=0.3, locked_dropout=True, embed_dropout=0.1))
    model = model.cuda().train()
    tokens = torch.randint(30, (4, 20), device="cuda")
    with torch.autocast("cuda", dtype=torch.bfloat16):
        logits, _ = model(tokens)  # cuDNN copies the dropped weights: that warning is expected and silenced
    logits.float().sum().backward()
    grad = model.rnn.weight_hh_l0.grad
    assert (grad == 0).float().mean() > 0.1 and grad.abs().sum() > 0  # dropped weights get no gradient
    plain = CharLM(ModelConfig(**settings)).cuda()
    plain.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(model.eval()(tokens)[0], plain.eval()(tokens)[0], rtol=0, atol=0)


def test_fast_sampler_on_cuda_writes_the_same_text_as_the_plain_forward():
    model = random_model().cuda()
    texts = []
    for fast in (False, True):
        sampler = Sampler(model, TOKENIZER, batch_size=2, precision="fp32", fast=fast)
        sampler.feed("the cat ")
        texts.append(sampler.generate(SamplingSettings(length=80, seed=5, temp=0.8, top_k=10)))
    assert texts[0] == texts[1] and len(texts[0][0]) == 80


def test_cli_trains_and_samples_on_cuda(tiny_corpus, tmp_path, cli):
    run = tmp_path / "run"
    code, out, err = cli("train", tiny_corpus, "--out", run, "--device", "cuda", "--max-steps", "40",
                         "--layers", "2", "--hidden", "64", "--seq-len", "16", "--batch-size", "8", "--plain")
    assert code == 0, err
    assert "bf16" in out and "cuda" in out
    for device in ("cuda", "cpu"):
        code, text, err = cli("sample", run, "--device", device, "--prime", "the ", "--length", "40", "--seed", "1")
        assert code == 0, err
        assert text.startswith("the ") and len(text) == 4 + 40 + 1
        assert set(text) <= set(load_checkpoint(run).tokenizer.chars)  # the vocabulary's characters only


def test_resume_on_cuda_restores_the_gpu_generator(tiny_corpus, tmp_path):
    holder = {}

    def stop_at_30(event):
        if isinstance(event, StepDone) and event.step == 30:
            holder["trainer"].request_stop(2)  # SIGINT: save and stop

    config = TrainConfig(**dict(GPU_OPTIONS, dropout=0.2, out=str(tmp_path / "run")))
    holder["trainer"] = Trainer(config, [str(tiny_corpus)], on_event=stop_at_30)
    with pytest.raises(TrainingInterrupted):
        holder["trainer"].run()
    saved = load_checkpoint(tmp_path / "run" / "last.safetensors", training_state=True)
    assert "rng.cuda" in saved.training_state
    finished = chargen.train(resume=str(tmp_path / "run"))
    assert finished.step == GPU_OPTIONS["max_steps"] and finished.best_val_loss is not None


def test_auto_shape_probes_widths_on_cuda(tiny_corpus, tmp_path):
    events, _ = train_recording(tiny_corpus, tmp_path / "run", hidden="auto", seq_len="auto", max_steps=None,
                                max_time=15, layers=2)
    started = next(e for e in events if isinstance(e, RunStarted))
    plan = started.shape_plan
    assert plan and plan["hidden"] == started.model_config.hidden
    assert all(speed > 0 for speed in plan["tokens_per_second"].values())
    assert str(plan["hidden"]) in plan["tokens_per_second"]  # the width chosen was one of those timed


def test_compiled_training_on_cuda_learns(tiny_corpus, tmp_path):
    events, _ = train_recording(tiny_corpus, tmp_path / "run", compile=True, max_steps=60, eval_every=30)
    losses = [e.loss for e in events if isinstance(e, StepDone)]
    assert len(losses) == 60 and losses[-1] < 0.7 * losses[0]
    assert isinstance(load_checkpoint(tmp_path / "run", device="cuda").model, CharLM)
