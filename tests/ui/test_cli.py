"""The command line end to end: train, sample, eval, info and corpus, signals, exit codes."""

import json
import math
import signal
import subprocess
import sys

import pytest

import chargen
from chargen.checkpoint import LAST_NAME, load_checkpoint
from tests.conftest import CLI_RUN, RUN, make_text, spawn_train, wait_for_line

TINY = ["--layers", "1", "--hidden", "32", "--seq-len", "16", "--batch-size", "8", "--eval-every", "20",
        "--seed", "0", "--device", "cpu", "--precision", "fp32", "--warmup-steps", "5", "--plain"]


def test_train_sample_eval_info_end_to_end(tmp_path, cli):
    corpus, heldout = tmp_path / "corpus.txt", tmp_path / "heldout.txt"
    corpus.write_text(make_text(400, seed=1))
    heldout.write_text(make_text(40, seed=2))
    run = tmp_path / "run"

    code, out, err = cli("train", corpus, "--out", run, "--max-steps", "40", *TINY)
    assert code == 0, err
    assert "eval step 40" in out and "sample:" in out and f"checkpoints in {run}" in out
    assert (run / "best.safetensors").is_file() and (run / "last.safetensors").is_file()
    assert len((run / "metrics.jsonl").read_text().splitlines()) >= 4

    code, out, err = cli("sample", run, "--prime", "the ", "--length", "50", "--seed", "3")
    assert code == 0, err
    assert out.startswith("the ") and len(out) == 4 + 50 + 1 and out.endswith("\n")
    assert set(out) <= set(chargen.load(run).tokenizer.chars)
    assert cli("sample", run / "best.safetensors", "--prime", "the ", "--length", "50", "--seed", "3")[1] == out

    code, out, err = cli("sample", run, "--length", "20", "--num-samples", "3", "--seed", "1")
    assert code == 0 and out.count("--- sample") == 3

    code, out, err = cli("eval", run, heldout, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert set(result) == {"nats_per_char", "bits_per_char", "perplexity", "tokens", "chars"}
    assert result["bits_per_char"] == pytest.approx(result["nats_per_char"] / math.log(2))
    assert result["perplexity"] == pytest.approx(math.exp(result["nats_per_char"]))
    assert 0 < result["nats_per_char"] < math.log(30)  # better than uniform over the vocabulary
    assert "bits/char" in cli("eval", run, heldout)[1]

    code, out, err = cli("info", run, "--json")
    assert code == 0, err
    info = json.loads(out)
    assert info["steps"] == 40 and info["model"]["hidden"] == 32 and info["tokenizer"] == "char"
    assert info["vocab_size"] == len(info["vocab"]) and info["best_val_loss"] > 0
    assert info["train_config"]["lr"] == "auto" and 0 < info["lr"] <= 0.01  # what auto chose
    assert info["train_config"]["ar"] == "auto" and info["ar"] in (0.0, 2.0)  # likewise
    code, out, _ = cli("info", run)
    assert "parameters" in out and "best val loss" in out and f"lr={info['lr']}" in out
    flat = " ".join(out.split())  # rich folds the table to the terminal's width
    assert f", ar={info['ar']}, tar={info['tar']}," in flat and "ar=auto" not in flat
    assert "1x32 lstm" in out


def test_sentencepiece_run_reports_loss_per_char(tmp_path, cli):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(600, seed=3))
    run = tmp_path / "sp"
    code, out, err = cli("train", corpus, "--out", run, "--max-steps", "20", "--tokenizer", "sentencepiece",
                         "--vocab-size", "300", *TINY)
    assert code == 0, err
    code, out, err = cli("eval", run, corpus, "--json")
    result = json.loads(out)
    assert result["chars"] == len(corpus.read_text()) - 1 or result["chars"] > result["tokens"]
    assert result["tokens"] < result["chars"]  # subwords: fewer tokens than chars
    code, out, err = cli("sample", run, "--prime", "the", "--length", "10", "--seed", "0")
    assert code == 0 and out.startswith("the")


def test_byte_tokenizer_trains_on_any_script(tmp_path, cli):
    corpus = tmp_path / "mixed.txt"
    corpus.write_text(("नमस्ते दुनिया سلام دنیا ಕನ್ನಡ 😀\n" * 200))
    run = tmp_path / "bytes"
    code, _, err = cli("train", corpus, "--out", run, "--max-steps", "10", "--tokenizer", "byte", *TINY)
    assert code == 0, err
    code, out, err = cli("sample", run, "--prime", "सलाम ✓", "--length", "30", "--seed", "0")
    assert code == 0 and out.startswith("सलाम ✓")


def test_refuses_to_overwrite_an_existing_run(tiny_run, tiny_corpus, cli):
    before = (tiny_run / "best.safetensors").read_bytes()
    code, _, err = cli("train", tiny_corpus, "--out", tiny_run, "--max-steps", "5", *TINY)
    assert code == 2 and "already holds a training run" in err and "--resume" in err
    assert (tiny_run / "best.safetensors").read_bytes() == before


def test_every_command_documents_its_options_with_defaults(cli, capsys):
    for command, expected in [("train", ["--max-time", "--seq-len", "--hidden", "(default: auto)", "--tokenizer",
                                         "--init-from"]),
                              ("sample", ["--temp", "(default: 0.8)", "--top-p", "--beam", "--num-samples"]),
                              ("eval", ["--json", "--encoding"]), ("info", ["--json"])]:
        with pytest.raises(SystemExit) as exit_info:
            cli(command, "--help")
        assert exit_info.value.code == 0
        text = capsys.readouterr().out
        for word in expected:
            assert word in text, (command, word)


def test_python_dash_m_chargen_is_the_same_cli():
    result = subprocess.run([sys.executable, "-m", "chargen", "--help"], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0
    assert "train" in result.stdout and "sample" in result.stdout and "repl" in result.stdout


def test_no_command_prints_the_help_and_exits_2(cli):
    code, out, _ = cli()
    assert code == 2 and "COMMAND" in out and "train" in out


def test_max_time_is_a_budget_the_run_keeps(tiny_corpus, tmp_path, cli):
    code, out, err = cli("train", tiny_corpus, "--out", tmp_path / "t", "--max-time", "1s", *TINY)
    assert code == 0, err
    assert "done:" in out
    assert load_checkpoint(tmp_path / "t").summary["elapsed"] < 30  # stopped by the clock, not the default epochs


def test_builtin_corpus_needs_no_download(tmp_path, cli):
    out_file = tmp_path / "stdlib.txt"
    code, out, err = cli("corpus", "stdlib", "--out", out_file, "--max-mb", "0.2")
    assert code == 0, err
    assert f"wrote {out_file}" in out
    text = out_file.read_text()
    assert 150_000 < len(text.encode()) <= 0.2 * (1 << 20) and "def " in text and "import " in text


def test_resume_refuses_a_different_out(tiny_run, cli):
    code, _, err = cli("train", "--resume", tiny_run, "--out", "elsewhere")
    assert code == 2 and "--out elsewhere" in err and "--init-from" in err


def test_skip_connections_are_on_by_default_and_can_be_turned_off(tmp_path, cli, capsys):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(200, seed=4))
    two_layers = [*TINY, "--layers", "2"]
    for name, flags in (("on", []), ("off", ["--no-skip-connections"])):
        code, _, err = cli("train", corpus, "--out", tmp_path / name, "--max-steps", "5", *two_layers, *flags)
        assert code == 0, err
        code, out, _ = cli("info", tmp_path / name)
        assert f"skip connections {'yes' if name == 'on' else 'no'}" in " ".join(out.split())  # however it wraps
        assert json.loads(cli("info", tmp_path / name, "--json")[1])["model"]["skip_connections"] is (name == "on")
    with pytest.raises(SystemExit):
        cli("train", "--help")
    assert "--skip-connections, --no-skip-connections" in capsys.readouterr().out


# ---- signals: the installed CLI in a subprocess ------------------------------------------------------

@pytest.mark.parametrize("sig, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_cli_signal_saves_says_how_to_resume_and_exits_128_plus_signal(tiny_corpus, tmp_path, sig, code):
    proc = spawn_train([tiny_corpus, "--out", "run", "--max-steps", "100000", *CLI_RUN], tmp_path)
    wait_for_line(proc, "saved")  # training is under way
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code, err
    assert "checkpoint saved" in out and "chargen train --resume run" in out
    step = load_checkpoint(tmp_path / "run" / LAST_NAME).summary["step"]
    assert f"stopped at step {step}" in out
    assert not list((tmp_path / "run").glob(".*.tmp*"))


def test_cli_second_ctrl_c_aborts_at_once_and_keeps_the_last_checkpoint(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    chargen.train(str(tiny_corpus), out=str(run), **RUN)
    before = (run / LAST_NAME).read_bytes()
    # Two SIGINTs in a row, as fast as they can be sent: the second lands wherever it lands
    # (in the step, in the save): the process exits 130 and last is the old file or a new one.
    proc = spawn_train(["--resume", "run", "--max-steps", "100000", "--eval-every", "1"], tmp_path)
    wait_for_line(proc, "saved")
    proc.send_signal(signal.SIGINT)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    ckpt = load_checkpoint(run / LAST_NAME, training_state=True)  # loadable, whichever it is
    assert ckpt.summary["step"] >= 40 or (run / LAST_NAME).read_bytes() == before
    assert not list(run.glob(".*.tmp*"))


def test_regularization_options_reach_the_model_and_info_shows_them(tmp_path, cli):
    corpus = tmp_path / "corpus.txt"
    corpus.write_text(make_text(200, seed=4))
    code, _, err = cli("train", corpus, "--out", tmp_path / "run", "--max-steps", "5", *TINY, "--layers", "2",
                       "--dropout", "0.2", "--weight-drop", "0.25", "--locked-dropout", "--embed-dropout", "0.1")
    assert code == 0, err
    code, out, _ = cli("info", tmp_path / "run")
    assert "dropout 0.2 (locked), weight drop 0.25, embedding dropout 0.1" in " ".join(out.split())
    model = json.loads(cli("info", tmp_path / "run", "--json")[1])["model"]
    assert (model["weight_drop"], model["locked_dropout"], model["embed_dropout"]) == (0.25, True, 0.1)
