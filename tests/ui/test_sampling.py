"""``chargen sample``: the prime from a file or standard input, samples to a file or as JSON lines,
a --temp list, several stops, stored defaults, and one line with exit code 2 for each bad value."""

import io
import json
import os
import shutil
import subprocess

import pytest

import chargen
from chargen.generation.defaults import DEFAULTS_NAME
from tests.conftest import CHARGEN, subprocess_env


def test_prime_from_standard_input(tiny_run, cli, monkeypatch):
    monkeypatch.setattr("sys.stdin", io.StringIO("the dog\n"))
    code, out, err = cli("sample", tiny_run, "--prime", "-", "--length", "20", "--seed", "1")
    assert code == 0 and out.startswith("the dog\n")
    expected = chargen.load(tiny_run).generate("the dog\n", length=20, seed=1)
    assert out == "the dog\n" + expected + "\n"


def test_prime_from_standard_input_of_a_real_process(tiny_run):
    result = subprocess.run([str(CHARGEN), "sample", str(tiny_run), "--prime", "-", "--length", "10", "--seed", "1",
                             "--device", "cpu"], input="a cat\n", capture_output=True, text=True, env=subprocess_env())
    assert result.returncode == 0 and result.stdout.startswith("a cat\n") and len(result.stdout) == 6 + 10 + 1


def test_prime_file_and_out_file(tiny_run, cli, tmp_path):
    prime = tmp_path / "prime.txt"
    prime.write_text("the quick ", encoding="utf-8")
    out = tmp_path / "samples.txt"
    code, stdout, err = cli("sample", tiny_run, "--prime-file", prime, "--length", "30", "--seed", "2",
                            "--out", out)
    assert code == 0 and stdout == ""
    assert out.read_text() == "the quick " + chargen.load(tiny_run).generate("the quick ", length=30, seed=2) + "\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temp file left


def test_jsonl_schema_round_trips(tiny_run, cli):
    code, out, err = cli("sample", tiny_run, "--prime", "the ", "--length", "40", "--num-samples", "3", "--jsonl",
                         "--stop", "q", "--stop", "z", "--temp", "1.5", "--repetition-penalty", "1.2")
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and len(lines) == 3 and sorted(r["sample"] for r in lines) == [0, 1, 2]
    model = chargen.load(tiny_run)
    for record in lines:
        assert set(record) == {"text", "prime", "sample", "settings", "seed", "tokens", "nats_per_char",
                               "stop_reason", "stop_string"}
        assert record["prime"] == "the " and record["stop_reason"] in ("length", "stop")
        assert record["settings"]["stop"] == ["q", "z"] and record["settings"]["repetition_penalty"] == 1.2
        assert isinstance(record["seed"], int) and record["nats_per_char"] > 0
        assert record["tokens"] == (40 if record["stop_reason"] == "length" else len(record["text"]) + 1)
        # the settings and seed recorded make the very same samples again
        again = model.generate(record["prime"], num_samples=3, **record["settings"])
        assert again[record["sample"]] == record["text"]


def test_a_temperature_list_gives_one_labelled_sample_each(tiny_run, cli):
    code, out, err = cli("sample", tiny_run, "--temp", "0,1.0", "--length", "30", "--seed", "3", "--prime", "a")
    assert code == 0
    model = chargen.load(tiny_run)
    assert out == (f"--- temp 0 ---\na{model.generate('a', temp=0, length=30, seed=3)}\n"
                   f"--- temp 1 ---\na{model.generate('a', temp=1.0, length=30, seed=3)}\n")
    code, out, err = cli("sample", tiny_run, "--temp", "0,1", "--num-samples", "2", "--length", "5", "--jsonl")
    assert [json.loads(line)["settings"]["temp"] for line in out.splitlines()] == [0, 0, 1, 1]


def test_unknown_characters_in_the_prime(tiny_run, cli):
    code, out, err = cli("sample", tiny_run, "--prime", "Zoo", "--length", "5")
    assert code == 2 and "--prime has characters the model never saw: 'Z'" in err and "--unknown" in err
    code, out, err = cli("sample", tiny_run, "--prime", "Zoo", "--length", "5", "--unknown", "skip")
    assert code == 0 and out.startswith("oo") and err.count("\n") == 1 and "'Z'" in err


def test_save_defaults_then_sample_and_repl_start_from_them(tiny_run, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    code, out, err = cli("sample", run, "--temp", "0", "--length", "25", "--save-defaults")
    assert code == 0 and (run / DEFAULTS_NAME).is_file()
    greedy = chargen.load(tiny_run).generate("the", temp=0, length=25)
    assert cli("sample", run, "--prime", "the")[1] == "the" + greedy + "\n"
    assert len(cli("sample", run, "--prime", "the", "--length", "5")[1]) == 3 + 5 + 1  # explicit wins
    code, out, err = cli("sample", run, "--save-defaults", "--seed", "3")  # nothing storable given
    assert code == 2 and "--save-defaults: give the sampling options" in err
    result = subprocess.run([str(CHARGEN), "repl", str(run), "--stop", ""], input="the\n", capture_output=True,
                            text=True, env=subprocess_env())
    assert result.returncode == 0 and result.stdout == chargen.load(run).generate("the", temp=0, length=25) + "\n"


BAD = [
    (["--temp", "0.5,x"], "--temp"), (["--temp", "-1"], "--temp"), (["--repetition-penalty", "0"], "--repetition-penalty"),
    (["--repetition-penalty", "x"], "--repetition-penalty"), (["--no-repeat-ngram", "-1"], "--no-repeat-ngram"),
    (["--no-repeat-ngram", "1.5"], "--no-repeat-ngram"), (["--repeat-window", "-1"], "--repeat-window"),
    (["--min-length", "-3"], "--min-length"), (["--max-time", "soon"], "duration"), (["--max-time", "0"], "duration"),
    (["--stop", ""], "--stop"), (["--unknown", "drop"], "--unknown"), (["--prime-file", "/nonexistent"], "--prime-file"),
    (["--prime", "a", "--prime-file", "x"], "--prime-file"), (["--out", "/nonexistent/dir/x.txt"], "x.txt"),
    (["--save-defaults", "--temp", "1,2"], "--save-defaults"),
    (["--beam", "2", "--jsonl"], "--beam"),
]


def run_cli(cli, capsys, *args):
    """``cli``, where argparse's own errors (SystemExit) count as an exit code too."""
    try:
        return cli(*args)
    except SystemExit as exit:
        captured = capsys.readouterr()
        return exit.code, captured.out, captured.err


@pytest.mark.parametrize("args,named", BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_values_are_one_line_and_exit_2(tiny_run, cli, capsys, args, named):
    code, out, err = run_cli(cli, capsys, "sample", tiny_run, "--length", "5", *args)
    assert code == 2 and err.count("\n") == 1 and named in err and "Traceback" not in err


def test_bad_prime_file_bytes(tiny_run, cli, tmp_path):
    prime = tmp_path / "latin1.txt"
    prime.write_bytes(b"caf\xe9")
    code, out, err = cli("sample", tiny_run, "--prime-file", prime)
    assert code == 2 and "not UTF-8" in err and err.count("\n") == 1
    assert os.path.exists(prime)
