"""``chargen train --config``: keys, overrides by the command line only, clear errors; and
``chargen info --toml`` writing a config that reads back to the same TrainConfig."""

from dataclasses import asdict, fields

import pytest

from chargen.checkpoint import load_checkpoint
from chargen.errors import ChargenError
from chargen.training.config import TrainConfig
from chargen.ui.cli import build_parser
from chargen.ui.options import train_options
from chargen.ui.train_config import config_toml, merge_config, read_train_config


def options_for(*argv) -> dict:
    args = build_parser().parse_args(["train", *map(str, argv)])
    return merge_config(args, train_options(args)), args


def test_the_file_sets_options_and_the_command_line_wins(tmp_path):
    config = tmp_path / "run.toml"
    config.write_text('hidden = 64\nmax-time = "5m"\nlr = 0.002\ntie_weights = false\nlayers = 3\n'
                      'corpus = ["a.txt", "b.txt"]\n')
    options, args = options_for("--config", config, "--layers", "2", "--no-tie-weights")
    assert (options["hidden"], options["max_time"], options["lr"], options["tie_weights"]) == (64, 300.0, 0.002, False)
    assert options["layers"] == 2  # given on the command line
    assert args.corpus == ["a.txt", "b.txt"]
    # an option left at its default on the command line does not undo the file
    options, _ = options_for("--config", config, "--layers", "2", "c.txt")
    assert options["hidden"] == 64 and options["tie_weights"] is False
    TrainConfig(**options).validate()


@pytest.mark.parametrize("content,message", [
    ("hiden = 64\n", "unknown option 'hiden'; did you mean hidden?"),
    ("max_step = 3\n", "did you mean max-steps?"),
    ("hidden = 'wide'\n", "hidden = 'wide': invalid hidden 'wide'"),
    ("layers = 2.5\n", "layers = 2.5: expected a number"),
    ("tie_weights = 1\n", "must be true or false"),
    ("cell = 3\n", "expected text"),
    ("corpus = 3\n", "corpus: must be a path"),
    ("[model]\nhidden = 3\n", "tables are not options"),
    ("hidden = \n", "not a valid TOML config file"),
])
def test_bad_files_are_one_error_naming_the_file_and_key(tmp_path, content, message):
    config = tmp_path / "bad.toml"
    config.write_text(content)
    with pytest.raises(ChargenError, match=None) as info:
        read_train_config(config)
    assert message in str(info.value) and str(info.value).startswith(str(config))


def test_cli_reports_config_errors_in_one_line(cli, tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("lerning_rate = 1\n")
    code, out, err = cli("train", "--config", config)
    assert code == 2 and err.count("\n") == 1 and "'lerning_rate'" in err
    code, out, err = cli("train", "--config", tmp_path / "none.toml")
    assert code == 2 and "no such config file" in err


def test_info_toml_reads_back_to_the_same_config(tiny_run, cli, tmp_path):
    code, out, err = cli("info", tiny_run, "--toml")
    assert code == 0
    config = tmp_path / "again.toml"
    config.write_text(out)
    saved = load_checkpoint(tiny_run).summary
    options, args = options_for("--config", config)
    assert TrainConfig(**options) == TrainConfig(**saved["train_config"])
    assert args.corpus == saved["corpus"]


def test_a_config_with_every_field_round_trips(tmp_path):
    changed = TrainConfig(hidden=48, dropout=0.1, normalize="NFKC", max_time=90.0, save_every="off", lr=3e-3,
                          compile=True, init_from="x/run", schedule="linear")
    config = tmp_path / "all.toml"
    config.write_text(config_toml(asdict(changed)))
    assert TrainConfig(**options_for("--config", config)[0]) == changed
    assert set(read_train_config(config)[0]) == {f.name for f in fields(TrainConfig)} - {
        f.name for f in fields(TrainConfig) if getattr(changed, f.name) is None}
