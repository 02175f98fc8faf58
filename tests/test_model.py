import importlib
import json
import math
import platform
import subprocess
import sys
from contextlib import nullcontext

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

import chargen
from chargen.checkpoint import METADATA_KEY, load_checkpoint, save_checkpoint
from chargen.model import CELLS, CharLM, ModelConfig, dropout
from chargen.tokenizers import CharTokenizer, SentencePieceTokenizer
from chargen.train import (EVAL_EVERY_TOKENS, PROBE_EFFICIENCY, SHORT_SEQ_MAX_EPOCHS, TOKENS_PER_PARAMETER, WIDTHS,
                           AutoChosen, StepDone, TrainConfig, Trainer, auto_dropout, auto_lr, auto_weight_decay,
                           measure_speed, plan_shape)

from .conftest import TINY_OPTIONS, make_text


@pytest.mark.parametrize("cell", CELLS)
def test_feeding_in_pieces_equals_feeding_at_once(cell):
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16)).eval()
    tokens = torch.randint(11, (3, 40))
    whole, _ = model(tokens)
    state, parts = None, []
    for piece in tokens.split(7, dim=1):
        logits, state = model(piece, state)
        parts.append(logits)
    torch.testing.assert_close(torch.cat(parts, dim=1), whole)


def test_weights_are_tied():
    model = CharLM(ModelConfig(vocab_size=7, hidden=8))
    assert model.head.weight is model.embed.weight
    untied = CharLM(ModelConfig(vocab_size=7, hidden=8, tie_weights=False))
    assert untied.head.weight is not untied.embed.weight
    assert untied.num_parameters() == model.num_parameters() + 7 * 8


@pytest.mark.parametrize("cell", CELLS)
def test_skip_connections_add_every_lower_layer_to_the_logits(cell):
    # Built independently: the stack without skips gives the top layer's output, a one-layer
    # model with the same first-layer weights gives the lower one's. Their heads' sum is the model.
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16)).eval()
    with torch.no_grad():
        model.skip_head.weight.normal_()  # starts at zero: make it count
    plain = CharLM(ModelConfig(vocab_size=11, cell=cell, layers=2, hidden=16, skip_connections=False)).eval()
    lower = CharLM(ModelConfig(vocab_size=11, cell=cell, layers=1, hidden=16)).eval()
    plain.load_state_dict({k: v for k, v in model.state_dict().items() if not k.startswith("skip_head")})
    lower.load_state_dict({k: v for k, v in model.state_dict().items()
                           if not k.startswith("skip_head") and ("_l1" not in k)})
    tokens = torch.randint(11, (3, 20))
    with torch.no_grad():
        logits, state = model(tokens)
        top_logits, plain_state = plain(tokens)
        lower_out, _ = lower.rnn(lower.embed(tokens))
        torch.testing.assert_close(logits, top_logits + model.skip_head(lower_out))
    torch.testing.assert_close(state, plain_state)
    assert model.num_parameters() == plain.num_parameters() + 11 * 16


def _as_written_before_skip_connections(path) -> None:
    """Rewrite a checkpoint without the skip_connections keys, as earlier versions wrote them."""
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = json.loads(f.metadata()[METADATA_KEY]), {k: f.get_tensor(k) for k in f.keys()}
    del meta["model"]["skip_connections"]
    meta["summary"].get("train_config", {}).pop("skip_connections", None)
    save_file(tensors, str(path), metadata={METADATA_KEY: json.dumps(meta)})


def test_a_checkpoint_from_before_skip_connections_loads_without_them(tmp_path):
    tokenizer = CharTokenizer.train(["hello world"])
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, layers=2, hidden=12, skip_connections=False))
    save_checkpoint(tmp_path / "m.safetensors", model, tokenizer, {"step": 3})
    _as_written_before_skip_connections(tmp_path / "m.safetensors")
    loaded = load_checkpoint(tmp_path / "m.safetensors").model
    assert loaded.skip_head is None and not loaded.config.skip_connections
    tokens = torch.randint(tokenizer.vocab_size, (2, 9))
    torch.testing.assert_close(loaded(tokens)[0], model.eval()(tokens)[0], rtol=0, atol=0)


def test_a_run_from_before_skip_connections_resumes_without_them(tiny_corpus, tmp_path):
    options = {**TINY_OPTIONS, "layers": 2, "max_steps": 20, "eval_every": 20}
    Trainer(TrainConfig(**options, skip_connections=False, out=str(tmp_path / "run")), [str(tiny_corpus)]).run()
    _as_written_before_skip_connections(tmp_path / "run" / "last.safetensors")
    resumed = Trainer(TrainConfig(**{**options, "max_steps": 30}), resume=str(tmp_path / "run"))
    assert resumed.model.skip_head is None and resumed.config.skip_connections is False
    resumed.run()
    saved = load_checkpoint(tmp_path / "run" / "last.safetensors", training_state=True)
    assert saved.summary["step"] == 30 and saved.summary["train_config"]["skip_connections"] is False


def test_gradient_clipping_caps_the_norm(tiny_corpus, tmp_path):
    config = TrainConfig(**{**TINY_OPTIONS, "max_steps": 5, "grad_clip": 0.05, "lr": 0.5, "warmup_steps": 0},
                         out=str(tmp_path / "run"))
    reported, applied = [], []
    trainer = Trainer(config, [str(tiny_corpus)], on_event=lambda e: isinstance(e, StepDone) and reported.append(e.grad_norm))
    original_step = trainer.optimizer.step

    def step_and_measure(*args, **kwargs):
        grads = [p.grad for p in trainer.model.parameters() if p.grad is not None]
        applied.append(torch.linalg.vector_norm(torch.stack([g.norm() for g in grads])).item())
        return original_step(*args, **kwargs)

    trainer.optimizer.step = step_and_measure
    trainer.run()
    assert len(applied) == 5
    assert all(norm <= 0.05 * 1.0001 for norm in applied)
    assert all(norm > 0.05 for norm in reported)  # the log shows the norm before clipping


def test_tiny_model_overfits_tiny_corpus(tmp_path):
    path = tmp_path / "abc.txt"
    path.write_text("abcdefghij" * 400)
    result = chargen.train(str(path), out=str(tmp_path / "run"), layers=1, hidden=32, seq_len=20,
                           batch_size=8, max_steps=150, eval_every=150, lr=1e-2, dropout=0.0,
                           warmup_steps=10, preview_length=0, precision="fp32", device="cpu")
    assert result.best_val_loss < 0.05  # a deterministic sequence: near-zero loss


@pytest.mark.parametrize("cell", CELLS)
def test_checkpoint_round_trip_gives_identical_logits(tmp_path, cell):
    torch.manual_seed(1)
    tokenizer = CharTokenizer.train(["hello world"])
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, cell=cell, layers=2, hidden=12)).eval()
    save_checkpoint(tmp_path / "m.safetensors", model, tokenizer, {"step": 3})
    loaded = load_checkpoint(tmp_path / "m.safetensors")
    tokens = torch.randint(tokenizer.vocab_size, (2, 25))
    torch.testing.assert_close(loaded.model(tokens)[0], model(tokens)[0], rtol=0, atol=0)
    assert loaded.summary == {"step": 3}
    assert loaded.tokenizer.chars == tokenizer.chars
    assert list(tmp_path.iterdir()) == [tmp_path / "m.safetensors"]  # no temp files left behind


def test_sentencepiece_tokenizer_travels_inside_the_checkpoint(tmp_path):
    tokenizer = SentencePieceTokenizer.train([make_text(300)], vocab_size=320)
    model = CharLM(ModelConfig(vocab_size=tokenizer.vocab_size, hidden=8, layers=1))
    save_checkpoint(tmp_path / "sp.safetensors", model, tokenizer, {"step": 0})
    loaded = load_checkpoint(tmp_path / "sp.safetensors")
    text = "the lazy fox"
    assert loaded.tokenizer.decode(loaded.tokenizer.encode(text)) == text
    assert list(loaded.tokenizer.encode(text)) == list(tokenizer.encode(text))


def test_fine_tuning_rejects_new_characters_unless_extended(tiny_run, tmp_path):
    new = tmp_path / "new.txt"
    new.write_text(make_text(300, seed=5) + "ÆØÅ\n")
    with pytest.raises(chargen.errors.ChargenError, match=r"never saw: .*'Æ'.*--extend-vocab"):
        chargen.train(str(new), init_from=str(tiny_run), out=str(tmp_path / "ft"), **TINY_OPTIONS)
    old = load_checkpoint(tiny_run)
    result = chargen.train(str(new), init_from=str(tiny_run), extend_vocab=True, out=str(tmp_path / "ft"),
                           **{**TINY_OPTIONS, "max_steps": 10, "eval_every": 10})
    tuned = load_checkpoint(result.run_dir)
    assert tuned.tokenizer.chars[:old.tokenizer.vocab_size] == old.tokenizer.chars  # old ids keep their meaning
    assert {"Æ", "Ø", "Å"} <= set(tuned.tokenizer.chars)
    assert tuned.config.vocab_size == len(tuned.tokenizer.chars)


def test_fine_tuning_starts_from_the_checkpoint_weights(tiny_run, tmp_path):
    corpus = tmp_path / "same.txt"
    corpus.write_text(make_text(200, seed=9))
    before = load_checkpoint(tiny_run)
    trainer = Trainer(TrainConfig(**{**TINY_OPTIONS, "max_steps": 1}, init_from=str(tiny_run),
                                  out=str(tmp_path / "ft")), [str(corpus)])
    torch.testing.assert_close(trainer.model.rnn.weight_hh_l0, before.model.rnn.weight_hh_l0)
    assert trainer.optimizer.state_dict()["state"] == {}  # a fresh optimizer


def test_lr_schedule_warms_up_then_decays(tiny_corpus, tmp_path):
    lrs = []
    chargen.train(str(tiny_corpus), out=str(tmp_path / "run"), on_event=lambda e: isinstance(e, StepDone) and lrs.append(e.lr),
                  **{**TINY_OPTIONS, "max_steps": 40, "warmup_steps": 10, "lr": 1e-2, "min_lr_frac": 0.1})
    assert lrs[0] == pytest.approx(1e-3)
    assert max(lrs) == pytest.approx(1e-2, rel=0.02)
    assert lrs[-1] == pytest.approx(1e-3, rel=0.1)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:]))


@pytest.mark.parametrize("schedule, at_70_percent", [("linear", 0.3), ("cosine", 0.5 * (1 + math.cos(0.7 * math.pi)))])
def test_lr_falls_linearly_or_along_a_cosine(tiny_corpus, tmp_path, schedule, at_70_percent):
    lrs = []
    chargen.train(str(tiny_corpus), out=str(tmp_path / "run"), on_event=lambda e: isinstance(e, StepDone) and lrs.append(e.lr),
                  **{**TINY_OPTIONS, "max_steps": 50, "warmup_steps": 10, "lr": 1e-2, "schedule": schedule})
    assert lrs[35] == pytest.approx(1e-2 * at_70_percent)  # step 35 of 50
    assert TrainConfig().schedule == "cosine"


def test_auto_dropout_grows_with_the_epochs_the_budget_allows():
    assert auto_dropout(10) == 0.2 and auto_dropout(20) == 0.3  # the measured points (README)
    assert auto_dropout(0.5) == auto_dropout(2) == auto_dropout(5) == auto_dropout(7) == 0.0  # (5-7: 2x384, 5 min)
    assert 0 < auto_dropout(7.5) < 0.1
    assert auto_dropout(1e6) == 0.4
    rates = [auto_dropout(e) for e in (1, 3, 5, 8, 10, 20, 40, 100)]
    assert rates == sorted(rates)


def test_auto_weight_decay_grows_with_the_epochs_the_budget_allows():
    assert auto_weight_decay(1) == auto_weight_decay(5) == 0.3  # measured at 5 epochs (README)
    assert auto_weight_decay(18.5) == pytest.approx(0.6, abs=0.03)  # measured at ~18
    assert auto_weight_decay(1e6) == 1.0
    decays = [auto_weight_decay(e) for e in (1, 3, 5, 8, 10, 20, 40, 100, 1000)]
    assert decays == sorted(decays)


def test_auto_lr_rises_from_5e3_to_7e3_between_5_and_10_epochs():
    assert auto_lr(1) == auto_lr(5) == 5e-3 and auto_lr(10) == auto_lr(18) == auto_lr(1e6) == 7e-3
    assert 5e-3 < auto_lr(7) < 7e-3
    rates = [auto_lr(e) for e in (1, 5, 6, 7, 8, 9, 10, 20)]
    assert rates == sorted(rates)


def test_plan_shape_narrows_the_model_and_shortens_windows_for_a_short_budget():
    parameters = lambda width: 16 * width ** 2  # noqa: E731 (a stand-in for the real count)
    calls = []

    def speed(width, window):  # compute-bound: tokens per second fall with width squared
        calls.append((width, window))
        return 1e9 / width ** 2

    def plan(hidden="auto", seq_len="auto", seconds=1000.0, train_tokens=1_000_000):
        calls.clear()
        return plan_shape(hidden, seq_len, seconds, train_tokens, parameters, speed)

    def reads(width, seconds=1000.0):
        return PROBE_EFFICIENCY * 1e9 / width ** 2 * seconds

    # 512 and 448 would read fewer than TOKENS_PER_PARAMETER tokens per parameter; 384 reads enough.
    assert reads(448) < TOKENS_PER_PARAMETER * parameters(448) and reads(384) >= TOKENS_PER_PARAMETER * parameters(384)
    assert reads(384) <= SHORT_SEQ_MAX_EPOCHS * 1_000_000
    assert plan() == (384, 32) and calls == [(512, 32), (448, 32), (384, 32)]  # probed widest first, short windows
    assert plan(train_tokens=reads(384) / (SHORT_SEQ_MAX_EPOCHS + 0.5)) == (384, 64)  # text read too often for 32
    assert plan(seconds=1e5) == (512, 64) and calls == [(512, 32)]  # a long budget: the default shape
    assert plan(seconds=1e-3) == (WIDTHS[-1], 32)  # too short for any: the narrowest
    assert plan(hidden=512) == (512, 32) and calls == [(512, 32)]  # a given width is kept
    assert plan(seq_len=100) == (384, 100) and calls[-1] == (384, 100)  # a given window is kept, and probed


TRAIN_MODULE = importlib.import_module("chargen.train")  # chargen.train is also the API's function


def _probed_trainer(corpus, tmp_path, monkeypatch, name, tokens_per_second=1.0, **options):
    probes = []

    def fake_speed(config, vocab_size, hidden, seq_len, rows, tokens, device, autocast):
        probes.append((hidden, seq_len))
        return tokens_per_second

    monkeypatch.setattr(TRAIN_MODULE, "measure_speed", fake_speed)
    config = {**TINY_OPTIONS, "hidden": "auto", "seq_len": "auto", "max_steps": 4, "max_time": 600.0, **options}
    return Trainer(TrainConfig(**config, out=str(tmp_path / name)), [str(corpus)]), probes


def test_auto_shape_for_a_time_budget_is_probed_and_recorded(tiny_corpus, tmp_path, monkeypatch):
    trainer, probes = _probed_trainer(tiny_corpus, tmp_path, monkeypatch, "auto")
    assert probes == [(width, 32) for width in WIDTHS]  # a crawl: none reads enough, the narrowest it is
    assert (trainer.config.hidden, trainer.config.seq_len) == (WIDTHS[-1], 32)
    assert trainer.model.config.hidden == WIDTHS[-1] and trainer.batches.seq_len == 32
    plan = json.loads((tmp_path / "auto" / "metrics.jsonl").read_text().splitlines()[0])
    assert plan["step"] == 0 and (plan["hidden"], plan["seq_len"]) == (WIDTHS[-1], 32)
    assert 0 < plan["budget_seconds"] <= 600 and set(plan["tokens_per_second"]) == {str(w) for w in WIDTHS}
    initial = {name: value.clone() for name, value in trainer.model.state_dict().items()}
    trainer.run()

    # The same seed gives the same model as asking for that shape: probing leaves no trace.
    given, probes = _probed_trainer(tiny_corpus, tmp_path, monkeypatch, "given", hidden=WIDTHS[-1], seq_len=32)
    assert probes == [] and given.shape_plan is None
    assert all(torch.equal(initial[name], value) for name, value in given.model.state_dict().items())

    # Resuming keeps the shape the run chose, without probing again.
    monkeypatch.setattr(TRAIN_MODULE, "measure_speed", lambda *args: pytest.fail("probed on resume"))
    resumed = Trainer(TrainConfig(hidden="auto", seq_len="auto", max_time=600.0), resume=str(tmp_path / "auto"))
    assert (resumed.config.hidden, resumed.config.seq_len) == (WIDTHS[-1], 32) and resumed.step == 4


def test_auto_shape_is_the_default_without_a_time_budget_or_with_a_fast_machine(tiny_corpus, tmp_path, monkeypatch):
    trainer, probes = _probed_trainer(tiny_corpus, tmp_path, monkeypatch, "steps", max_time=None, layers=1)
    assert probes == [] and (trainer.config.hidden, trainer.config.seq_len) == (512, 64)
    trainer, probes = _probed_trainer(tiny_corpus, tmp_path, monkeypatch, "fast", tokens_per_second=1e12)
    assert probes == [(512, 32)] and (trainer.config.hidden, trainer.config.seq_len) == (512, 64)


def test_auto_eval_every_spaces_evaluations_by_training_tokens(tiny_corpus, tmp_path):
    intervals = []
    for seq_len in (16, 32):
        config = TrainConfig(**{**TINY_OPTIONS, "seq_len": seq_len, "eval_every": "auto"},
                             out=str(tmp_path / f"s{seq_len}"))
        trainer = Trainer(config, [str(tiny_corpus)])
        intervals.append(trainer.config.eval_every * 8 * seq_len)  # tokens between evaluations
    assert intervals == [EVAL_EVERY_TOKENS, EVAL_EVERY_TOKENS]
    assert TrainConfig().eval_every == "auto" and EVAL_EVERY_TOKENS == 800 * 32 * 64  # 800 steps of 32x64


def test_measure_speed_times_real_training_steps():
    config = TrainConfig(layers=1)
    tokens = np.arange(1000) % 7
    speed = measure_speed(config, 7, 16, 8, 2, tokens, torch.device("cpu"), nullcontext)
    assert math.isfinite(speed) and speed > 0


# In a fresh process (malloc settings are process-wide): minor page faults per training step.
FAULTS_PER_STEP = """
import importlib, json, resource, sys
train = importlib.import_module("chargen.train")
if sys.argv[2] == "glibc default":
    train.keep_freed_memory = lambda: False
marks = []
def on_event(event):
    if isinstance(event, train.StepDone) and event.step in (20, 60):
        marks.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt)
config = train.TrainConfig(hidden=384, seq_len=32, batch_size=32, dropout=0.1, max_steps=60, val_frac=0.0,
                           eval_every=1000, preview_length=0, device="cpu", precision="fp32", out=sys.argv[3])
train.Trainer(config, [sys.argv[1]], on_event=on_event).run()
print((marks[1] - marks[0]) / 40)
"""


@pytest.mark.skipif(not (sys.platform.startswith("linux") and platform.libc_ver()[0] == "glibc"),
                    reason="glibc's malloc only")
def test_cpu_training_reuses_the_memory_a_step_frees(tmp_path):
    (tmp_path / "corpus.txt").write_text(make_text(2000), encoding="utf-8")
    faults = {}
    for setting in ("chargen", "glibc default"):
        done = subprocess.run([sys.executable, "-c", FAULTS_PER_STEP, str(tmp_path / "corpus.txt"), setting,
                               str(tmp_path / setting / "run")], capture_output=True, text=True, check=True)
        faults[setting] = float(done.stdout.split()[-1])
    # glibc's defaults fault a step's activations in again every step: ~4,000-7,000 pages for this
    # model in fp32 (bf16, where a CPU trains faster in it, halves the activations and the count:
    # ~700 on an AMX Xeon). With chargen's settings it is usually a few, but up to ~250 in some
    # runs on that machine; a tenth of glibc's count or less is what the settings must give.
    assert faults["glibc default"] > 1000 and faults["chargen"] < faults["glibc default"] / 10, faults


def _dropout_events(tiny_corpus, tmp_path, **options):
    events = []
    # 64-token windows: a few dozen steps per epoch of the tiny corpus, so several epochs are quick.
    trainer = Trainer(TrainConfig(**{**TINY_OPTIONS, "seq_len": 64, "eval_every": 1000, **options},
                                  out=str(tmp_path / "run")),
                      [str(tiny_corpus)], on_event=events.append)
    trainer.run()
    return trainer, [e for e in events if isinstance(e, AutoChosen)]


def test_auto_dropout_follows_a_step_budget_from_the_start(tiny_corpus, tmp_path):
    trainer, chosen = _dropout_events(tiny_corpus, tmp_path, max_steps=None, epochs=8)
    epochs = math.ceil(8 * len(trainer.batches)) / len(trainer.batches)
    assert [(e.step, e.planned_epochs) for e in chosen] == [(0, pytest.approx(epochs))]
    assert trainer.model.config.dropout == trainer.model.drop.p == auto_dropout(epochs) > 0
    assert trainer.optimizer.param_groups[0]["weight_decay"] == chosen[0].weight_decay == auto_weight_decay(epochs)
    assert trainer.peak_lr == chosen[0].lr == auto_lr(epochs) > 5e-3
    assert trainer.optimizer.param_groups[1]["weight_decay"] == 0  # biases and the embedding: never


def test_auto_dropout_for_a_time_budget_is_set_after_timing_a_few_steps(tiny_corpus, tmp_path):
    # The time budget is ample for these tiny steps, so the step limit is what bounds the epochs.
    trainer, chosen = _dropout_events(tiny_corpus, tmp_path, max_steps=200, max_time=600.0)
    assert [(e.step, e.planned_epochs) for e in chosen] == [(100, pytest.approx(200 / len(trainer.batches)))]
    assert trainer.model.drop.p == chosen[0].dropout > 0
    assert trainer.optimizer.param_groups[0]["weight_decay"] == chosen[0].weight_decay
    assert trainer.peak_lr == chosen[0].lr


def test_auto_dropout_counts_the_time_evaluations_will_take(tiny_corpus, tmp_path):
    config = TrainConfig(**{**TINY_OPTIONS, "seq_len": 64, "max_steps": None, "max_time": 100.0, "eval_every": 5},
                         out=str(tmp_path / "run"))
    events = []
    trainer = Trainer(config, [str(tiny_corpus)], on_event=events.append)
    trainer.step, trainer._timing_marks = 100, [1.0 + 0.1 * i for i in range(91)]
    trainer._settle_auto(elapsed=10.0)  # 0.1 s per step over steps 10..100, 90 s left
    scored_per_eval = len(trainer.val_tokens) / 3 / (8 * 64)  # in training-step equivalents
    steps = 100 + 90 / (0.1 * (1 + scored_per_eval / 5))
    assert steps < 1000 - 50  # the evaluations' share is not negligible here
    assert events[-1].planned_epochs == pytest.approx(steps / len(trainer.batches))
    assert trainer.model.config.dropout == auto_dropout(steps / len(trainer.batches))


def test_a_moment_of_contention_while_steps_are_timed_does_not_change_the_plan(tiny_corpus, tmp_path):
    config = TrainConfig(**{**TINY_OPTIONS, "seq_len": 64, "max_steps": None, "max_time": 300.0},
                         out=str(tmp_path / "run"))
    plans = []
    for stall in (0.0, 8.0):  # another program takes the CPU for 8 s during one of the 90 steps
        events = []
        trainer = Trainer(config, [str(tiny_corpus)], on_event=events.append)
        durations = [0.1] * 90
        durations[40] += stall
        trainer.step, trainer._timing_marks = 100, [1.0 + sum(durations[:i]) for i in range(91)]
        trainer._settle_auto(elapsed=trainer._timing_marks[-1])
        trainer._lock.close()
        plans.append(events[-1].planned_epochs)
    # Only the 8 s themselves are missing from the plan; timed by the mean, it would have halved.
    assert plans[1] == pytest.approx(plans[0] * (290 - 8) / 290, rel=0.01)


def test_a_resumed_run_keeps_the_dropout_and_weight_decay_it_chose(tiny_corpus, tmp_path):
    first, chosen = _dropout_events(tiny_corpus, tmp_path, max_steps=None, epochs=8)
    events = []
    resumed = Trainer(TrainConfig(**{**TINY_OPTIONS, "seq_len": 64, "max_steps": None, "epochs": 12}),
                      resume=str(tmp_path / "run"), on_event=events.append)
    resumed.run()
    assert not any(isinstance(e, AutoChosen) for e in events)
    assert resumed.model.drop.p == chosen[0].dropout != auto_dropout(12)
    assert resumed.optimizer.param_groups[0]["weight_decay"] == chosen[0].weight_decay != auto_weight_decay(12)
    assert resumed.peak_lr == chosen[0].lr != auto_lr(12)


def test_explicit_dropout_and_weight_decay_are_kept(tiny_corpus, tmp_path):
    trainer, chosen = _dropout_events(tiny_corpus, tmp_path, max_steps=30, dropout=0.05, weight_decay=0.01, lr=3e-3)
    assert chosen == [] and trainer.model.drop.p == trainer.model.config.dropout == 0.05
    assert trainer.optimizer.param_groups[0]["weight_decay"] == 0.01 and trainer.peak_lr == 3e-3


def test_only_the_auto_option_is_chosen(tiny_corpus, tmp_path):
    trainer, chosen = _dropout_events(tiny_corpus, tmp_path, max_steps=None, epochs=8, dropout=0.05, lr=3e-3)
    assert [(e.dropout, e.weight_decay, e.lr) for e in chosen] == [(None, auto_weight_decay(chosen[0].planned_epochs), None)]
    assert trainer.model.drop.p == 0.05
    assert chosen[0].describe() == f"weight decay {chosen[0].weight_decay:g}"


def test_metrics_file_records_the_run(tiny_run):
    import json
    records = [json.loads(line) for line in (tiny_run / "metrics.jsonl").read_text().splitlines()]
    train_rows = [r for r in records if "train_loss" in r]
    val_rows = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in val_rows] == [30, 60]
    assert {"step", "time", "train_loss", "lr", "grad_norm", "chars_per_sec"} <= set(train_rows[0])
    assert val_rows[-1]["val_bpc"] == pytest.approx(val_rows[-1]["val_loss"] / math.log(2))


def test_evaluation_equals_one_pass_over_the_whole_text():
    import numpy as np
    import torch.nn.functional as F
    from chargen.tokenizers import ByteTokenizer
    from chargen.evaluate import evaluate

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


@pytest.mark.parametrize("p", [0.1, 0.3, 0.5])
def test_dropout_drops_the_given_share_and_keeps_the_mean(p):
    torch.manual_seed(0)
    ones = torch.ones(400, 1000)
    dropped = dropout(ones, p, training=True)
    assert abs((dropped == 0).float().mean().item() - p) < 0.003
    assert abs(dropped.mean().item() - 1.0) < 0.005
    survivors = dropped[dropped != 0]
    torch.testing.assert_close(survivors, torch.full_like(survivors, survivors[0].item()))  # one scale
    assert dropout(ones, p, training=False) is ones and dropout(ones, 0.0, training=True) is ones


def test_dropout_masks_are_fresh_each_call_and_follow_the_seed():
    x = torch.ones(64, 512, dtype=torch.bfloat16, requires_grad=True)
    torch.manual_seed(3)
    first, second = dropout(x, 0.3, True), dropout(x, 0.3, True)
    torch.manual_seed(3)
    again = dropout(x, 0.3, True)
    assert first.dtype == torch.bfloat16 and not torch.equal(first, second) and torch.equal(first, again)
    first.sum().backward()  # the gradient passes where the mask kept the unit, scaled like it
    torch.testing.assert_close(x.grad, first.detach())


@pytest.mark.parametrize("cell", ["lstm", "gru", "rnn"])
def test_training_forward_is_the_stacked_cell_with_dropout_between_layers(cell, monkeypatch):
    # Layer by layer (so the inter-layer masks are drawn by chargen's dropout), it must compute
    # exactly what the fused multi-layer call computes when no unit is dropped.
    torch.manual_seed(0)
    model = CharLM(ModelConfig(vocab_size=13, cell=cell, layers=3, hidden=16, dropout=0.3))
    tokens = torch.randint(13, (4, 9))
    start = model(tokens[:, :3])[1]
    expected, expected_state = model.eval()(tokens[:, 3:], start)
    calls = []
    monkeypatch.setattr(chargen.model, "dropout", lambda x, p, training: calls.append(p) or x)
    model.train().drop.p = 0.0
    got, got_state = model(tokens[:, 3:], start)
    assert calls == [0.3, 0.3, 0.0]  # between layers 1-2 and 2-3, and the output; not the embedding
    torch.testing.assert_close(got, expected)
    torch.testing.assert_close(got_state, expected_state)


@pytest.mark.parametrize("cell,layers,rate", [("lstm", 2, 0.0), ("lstm", 1, 0.0), ("gru", 2, 0.0), ("rnn", 2, 0.0),
                                              ("lstm", 3, 0.3)])
def test_one_hot_input_path_is_the_same_model_with_the_same_gradients(cell, layers, rate, monkeypatch):
    # For a vocabulary narrower than the hidden size, training feeds one-hot ids through W_ih·Eᵀ
    # instead of embedding them: the logits, the carried state and every gradient must not change,
    # also layer by layer (dropout between layers, its masks made to keep every unit here).
    torch.manual_seed(0)
    monkeypatch.setattr(chargen.model, "dropout", lambda x, p, training: x)
    model = CharLM(ModelConfig(vocab_size=20, cell=cell, layers=layers, hidden=64, dropout=rate))
    tokens = torch.randint(20, (4, 30))
    assert model._one_hot_input(tokens) and not model._one_hot_input(tokens[:1, :1])  # not when sampling
    results = {}
    for one_hot in (True, False):
        monkeypatch.setattr(model, "_one_hot_input", lambda _tokens: one_hot)
        model.zero_grad()
        logits, state = model(tokens[:, :20])
        more, _ = model(tokens[:, 20:], state)
        (logits.square().mean() + more.mean()).backward()
        results[one_hot] = logits, state, more, [p.grad.clone() for p in model.parameters()]
    torch.testing.assert_close(results[True], results[False])


def test_one_hot_input_path_is_taken_with_dropout_and_left_for_wide_vocabularies():
    model = CharLM(ModelConfig(vocab_size=20, layers=2, hidden=64, dropout=0.2))
    tokens = torch.randint(20, (4, 30))
    assert model.train()._one_hot_input(tokens) and model.eval()._one_hot_input(tokens)
    wide = CharLM(ModelConfig(vocab_size=300, layers=2, hidden=64))  # e.g. sentencepiece pieces
    assert not wide._one_hot_input(torch.randint(300, (4, 30)))
