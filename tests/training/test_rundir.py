"""The run directory: where a run lives, who may write there, and its metrics log."""

import json
import os
import re
from datetime import datetime
from pathlib import Path
from types import SimpleNamespace

import pytest

from chargen.checkpoint import LAST_NAME
from chargen.errors import ChargenError
from chargen.training import TrainConfig, Trainer, rundir
from chargen.training.rundir import METRICS_NAME, MetricsLog, check_writable, lock_run_dir, make_run_dir
from tests.conftest import train_until_stopped


def test_a_run_directory_is_named_after_the_corpus_and_the_time(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    first = make_run_dir(None, ["data/shakespeare.txt"])
    assert re.fullmatch(r"checkpoints/shakespeare-\d{8}-\d{6}", first.as_posix())
    monkeypatch.setattr(rundir, "datetime", SimpleNamespace(now=lambda: datetime(2030, 1, 2, 3, 4, 5)))
    assert make_run_dir(None, ["data/shakespeare.txt"]).as_posix() == "checkpoints/shakespeare-20300102-030405"
    Path("checkpoints/shakespeare-20300102-030405").mkdir(parents=True)
    again = make_run_dir(None, ["data/shakespeare.txt"])  # the same second: not the same directory
    assert again.as_posix() == "checkpoints/shakespeare-20300102-030405-2"
    assert make_run_dir(None, []).as_posix() == "checkpoints/run-20300102-030405"
    assert make_run_dir(str(tmp_path / "mine"), ["x.txt"]) == tmp_path / "mine"


def test_out_that_holds_a_run_is_refused(tiny_run):
    with pytest.raises(ChargenError, match=f"--out {tiny_run}: already holds a training run; continue it with "
                                           f"--resume {tiny_run} or choose another --out"):
        make_run_dir(str(tiny_run), ["x.txt"])


def test_an_unwritable_place_is_named_before_any_work(tmp_path):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    with pytest.raises(ChargenError, match=f"--out {blocker / 'run'}: {blocker} is a file, not a directory; "
                                           "choose another --out"):
        check_writable(blocker / "run")
    check_writable(tmp_path / "new" / "deeper")  # not there yet, but can be made
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        with pytest.raises(ChargenError, match=f"--resume {locked}: {locked} is not writable; make it writable"):
            check_writable(locked, "--resume")


def test_unwritable_out_is_a_clear_error(tiny_corpus, tmp_path, cli):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = cli("train", tiny_corpus, "--out", blocker / "run", "--plain", "--max-steps", "1")
    assert code == 2 and "is a file, not a directory; choose another --out" in err and "Traceback" not in err
    code, _, err = cli("train", tiny_corpus, "--out", blocker, "--plain", "--max-steps", "1")
    assert code == 2 and "choose another --out" in err


def test_a_run_directory_is_locked_while_a_trainer_writes_it(tmp_path):
    first = lock_run_dir(tmp_path)
    with pytest.raises(ChargenError, match="another chargen process is training this run right now"):
        lock_run_dir(tmp_path)
    first.close()
    lock_run_dir(tmp_path).close()  # released


def test_two_trainers_never_write_the_same_run(tiny_corpus, tmp_path):
    run = tmp_path / "run"
    train_until_stopped(tiny_corpus, run, 3)
    first = Trainer(TrainConfig(), resume=str(run))
    with pytest.raises(ChargenError, match="another chargen process is training this run"):
        Trainer(TrainConfig(), resume=str(run))
    first.lock.close()
    Trainer(TrainConfig(), resume=str(run)).lock.close()  # free again once the first let go


# ---- metrics.jsonl ----------------------------------------------------------------------------------

def lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_metrics_are_appended_one_json_object_a_line(tmp_path):
    log = MetricsLog(tmp_path)
    log.append(step=1, train_loss=2.5)
    log.append(step=2, val_loss=2.0)
    assert log.path == tmp_path / METRICS_NAME
    assert lines(log.path) == [{"step": 1, "train_loss": 2.5}, {"step": 2, "val_loss": 2.0}]


def test_an_unwritable_metrics_log_says_how_to_go_on(tmp_path):
    (tmp_path / METRICS_NAME).mkdir()
    with pytest.raises(ChargenError, match=f"cannot write metrics: .*then continue with: chargen train --resume {tmp_path}"):
        MetricsLog(tmp_path).append(step=1)


def test_trim_after_drops_the_lines_past_the_step_and_a_torn_last_line(tmp_path):
    log = MetricsLog(tmp_path)
    for step in (0, 10, 20, 30):
        log.append(step=step, train_loss=1.0)
    with open(log.path, "a") as f:
        f.write('{"step": 40, "tra')  # torn by a crash
    log.trim_after(20)
    assert [r["step"] for r in lines(log.path)] == [0, 10, 20]
    assert log.path.read_text().endswith("}\n")
    log.append(step=30, train_loss=0.5)  # the resumed run carries on from there
    assert [r["step"] for r in lines(log.path)] == [0, 10, 20, 30]


def test_trim_after_a_torn_line_in_the_middle_keeps_the_rest(tmp_path):
    log = MetricsLog(tmp_path)
    log.path.write_text('{"step": 1}\n{"ste\n{"step": 2}\n')
    log.trim_after(5)
    assert lines(log.path) == [{"step": 1}, {"step": 2}]


def test_trim_after_leaves_the_file_alone_when_nothing_is_to_be_dropped(tmp_path):
    log = MetricsLog(tmp_path)
    log.trim_after(10)  # no log yet: nothing to do
    assert not log.path.exists()
    for step in (0, 5, 10):
        log.append(step=step)
    before = log.path.stat()
    log.trim_after(10)
    after = log.path.stat()
    assert (after.st_ino, after.st_mtime_ns, after.st_size) == (before.st_ino, before.st_mtime_ns, before.st_size)
    log.trim_after(0)  # all but the first dropped: written anew
    assert lines(log.path) == [{"step": 0}] and log.path.stat().st_ino != before.st_ino


def test_an_unreadable_metrics_log_stops_a_resume_with_a_way_out(tmp_path):
    (tmp_path / METRICS_NAME).mkdir()
    with pytest.raises(ChargenError, match="cannot read the metrics log: .*; move it aside to resume"):
        MetricsLog(tmp_path).trim_after(3)
