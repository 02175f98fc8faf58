"""Training options: one field each, with the help text ``--help`` shows and the checks it runs."""

from dataclasses import fields, replace

import pytest

from chargen.errors import ChargenError
from chargen.training.auto import (DEFAULT_HIDDEN, DEFAULT_SEQ_LEN, DROPOUT_FREE_EPOCHS, SHORT_SEQ_LEN,
                                   SHORT_SEQ_MAX_EPOCHS, WIDTHS, auto_dropout, auto_lr, auto_weight_decay)
from chargen.training.config import RESUME_OVERRIDABLE, SCHEDULES, TrainConfig, flag_name

PLAIN_KINDS = {"int": int, "float": float, "str": str, "duration": float}


def test_every_option_has_help_and_a_kind_that_fits_its_default():
    for f in fields(TrainConfig):
        default, kind = f.default, f.metadata["kind"]
        assert f.metadata["help"] and (kind == "flag" or kind in PLAIN_KINDS or kind.startswith("auto-")), f.name
        if kind == "flag":
            assert isinstance(default, bool), f.name
        elif kind.startswith("auto-"):
            assert default == "auto", f.name  # "auto" or a number (or a duration)
        elif default is not None:
            assert isinstance(default, PLAIN_KINDS[kind]), f.name


def test_the_help_is_built_from_the_constants_the_rules_use():
    helps = {f.name: f.metadata["help"] for f in fields(TrainConfig)}
    assert (f"none up to {DROPOUT_FREE_EPOCHS}, {auto_dropout(10):g} at 10, {auto_dropout(20):g} at 20"
            in helps["dropout"])
    assert f"{auto_weight_decay(0):g} up to 5, {auto_weight_decay(20):g} at 20" in helps["weight_decay"]
    assert f"{auto_lr(0):g} up to 5, {auto_lr(10):g} from 10" in helps["lr"]
    assert f"auto for {DEFAULT_HIDDEN}" in helps["hidden"] and f"down to {min(WIDTHS)}" in helps["hidden"]
    assert (f"auto for {DEFAULT_SEQ_LEN}, or {SHORT_SEQ_LEN} when" in helps["seq_len"]
            and f"at most {SHORT_SEQ_MAX_EPOCHS:g} times" in helps["seq_len"])
    assert "every 1,638,400 training tokens (800 steps of batch 32 x seq 64, 1,600 of 32 x 32)" in helps["eval_every"]


def test_the_defaults_are_valid():
    config = TrainConfig()
    assert config.validate() is config
    assert (config.hidden, config.seq_len, config.dropout, config.lr, config.eval_every) == ("auto",) * 5
    assert config.schedule == SCHEDULES[0] == "cosine"


def test_flag_names_and_what_a_resume_may_change():
    assert flag_name("max_steps") == "--max-steps" and flag_name("lr") == "--lr"
    names = {f.name for f in fields(TrainConfig)}
    assert set(RESUME_OVERRIDABLE) <= names
    assert not {"hidden", "layers", "cell", "seq_len", "batch_size", "tokenizer", "seed"} & set(RESUME_OVERRIDABLE)


@pytest.mark.parametrize("change, message", [
    (dict(layers=0), "--layers 0: must be a whole number from 1 to 1000000"),
    (dict(hidden=1.5), "--hidden 1.5: must be auto or a whole number from 1"),
    (dict(seq_len="long"), "--seq-len long: must be auto or a whole number"),
    (dict(batch_size=True + 0.5), "--batch-size 1.5: must be a whole number"),
    (dict(dropout=1.0), r"--dropout 1.0: must be auto or a number in \[0, 1\)"),
    (dict(cell="lstm2"), "--cell lstm2: choose one of lstm, gru, rnn, lstm-peephole"),
    (dict(schedule="step"), "--schedule step: choose cosine or linear"),
    (dict(max_time=float("nan")), "--max-time nan: must be > 0 and at most a year"),
    (dict(seed=2**64), "--seed 18446744073709551616: must be a whole number that fits in 64 bits"),
    (dict(precision="fp16"), "--precision fp16: choose auto, fp32 or bf16"),
])
def test_validate_names_the_option_at_fault(change, message):
    with pytest.raises(ChargenError, match=f"^{message}"):
        replace(TrainConfig(), **change).validate()


def test_the_model_config_is_taken_from_the_options():
    config = TrainConfig(cell="gru", layers=3, hidden=64, tie_weights=False, skip_connections=False)
    model = config.model_config(vocab_size=30, dropout=0.1)
    assert (model.vocab_size, model.cell, model.layers, model.hidden, model.dropout, model.tie_weights,
            model.skip_connections) == (30, "gru", 3, 64, 0.1, False, False)
