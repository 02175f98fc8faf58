"""--log tensorboard|csv: what a short run's trackers wrote, read back with the trackers' own readers."""

import builtins
import csv
import json
import math
from pathlib import Path

import pytest

from chargen.training.events import EvalDone, RunFinished, StepDone
from chargen.ui.trackers import CSV_COLUMNS, Rows
from tests.conftest import CLI_RUN


def step(n, loss):
    return StepDone(step=n, epoch=n / 10, elapsed=n * 0.1, loss=loss, lr=1e-3, grad_norm=0.5, chars_per_sec=100.0,
                    progress=n / 10, skipped_steps=0)


def test_rows_average_the_window_and_join_evaluations_to_their_step():
    written = []
    rows = Rows(written.append)
    rows.log_every = 2
    for event in (step(1, 4.0), step(2, 2.0), EvalDone(2, 1.5, 1.5, True, ""), step(3, 1.0), EvalDone(3, 1.2, 1.2, True, ""),
                  step(4, 3.0), RunFinished(Path("."), 4, 1.0, 1.2, "max_steps")):
        rows(event)
    assert [r["step"] for r in written] == [2, 3, 4]
    assert written[0]["train_loss"] == 3.0 and written[0]["val_loss"] == 1.5
    assert written[1] == {"step": 3, "val_loss": 1.2, "val_bpc": 1.2 / math.log(2)}  # an evaluation off the log steps
    assert written[2]["train_loss"] == 2.0  # steps 3 and 4 averaged


@pytest.fixture(scope="module")
def tracked_run(tmp_path_factory):
    from chargen.ui.cli import main
    from tests.conftest import make_text

    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'chargen[tensorboard]')")
    root = tmp_path_factory.mktemp("tracked")
    corpus = root / "tiny.txt"
    corpus.write_text(make_text(), encoding="utf-8")
    run = root / "run"
    code = main(["train", str(corpus), *CLI_RUN, "--max-steps", "30", "--log-every", "5", "--preview-length", "20",
                 "--out", str(run), "--log", "tensorboard", "--log", "csv"])
    assert code == 0
    return run


def logged(run: Path, key: str) -> dict[int, float]:
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r[key] for r in records if key in r}


def test_tensorboard_event_file_holds_the_scalars(tracked_run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tracked_run))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"loss/train", "loss/val", "bpc/train", "bpc/val", "lr", "grad_norm", "throughput/chars_per_sec"} <= tags
    train = {e.step: e.value for e in events.Scalars("loss/train")}
    want = logged(tracked_run, "train_loss")
    assert train.keys() == want.keys() and all(train[s] == pytest.approx(want[s], rel=1e-5) for s in want)
    val = {e.step: e.value for e in events.Scalars("loss/val")}
    assert val == pytest.approx(logged(tracked_run, "val_loss"), rel=1e-5)
    texts = set(events.Tags()["tensors"])
    assert {"run/config/text_summary", "sample/text_summary"} <= texts


def test_csv_has_one_row_per_logged_step(tracked_run):
    with open(tracked_run / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == CSV_COLUMNS
    steps = sorted(set(logged(tracked_run, "train_loss")) | set(logged(tracked_run, "val_loss")))
    assert [int(r["step"]) for r in rows] == steps
    train = logged(tracked_run, "train_loss")
    assert all(float(r["train_loss"]) == pytest.approx(train[int(r["step"])]) for r in rows if r["train_loss"])


def test_a_missing_tensorboard_is_one_line_before_training(tiny_corpus, tmp_path, cli, monkeypatch):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith("torch.utils.tensorboard"):
            raise ImportError(name)
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    code, _, err = cli("train", tiny_corpus, *CLI_RUN, "--max-steps", "5", "--out", tmp_path / "run",
                       "--log", "tensorboard")
    assert code == 2 and "pip install 'chargen[tensorboard]'" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()
    with pytest.raises(SystemExit) as exit_info:  # argparse's own one line
        cli("train", tiny_corpus, "--log", "wandb")
    assert exit_info.value.code == 2


def test_a_resumed_run_logs_each_step_once(tiny_corpus, tmp_path):
    pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install 'chargen[tensorboard]')")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from chargen.training import TrainConfig, Trainer, TrainingInterrupted
    from chargen.ui.trackers import Trackers
    from tests.conftest import RUN

    out = tmp_path / "run"
    holder = {}

    def stop_at_20(event):
        trackers(event)
        if isinstance(event, StepDone) and event.step == 20:
            holder["trainer"].request_stop(2)

    with Trackers(["csv", "tensorboard"]) as trackers:
        holder["trainer"] = Trainer(TrainConfig(**dict(RUN, max_steps=40), out=str(out)), [str(tiny_corpus)],
                                    on_event=stop_at_20)
        with pytest.raises(TrainingInterrupted):
            holder["trainer"].run()
    with open(out / "metrics.csv", "a") as f:  # a row logged after the checkpoint, then a crash
        f.write("25,9.0,0.5,3.0,4.3,0.001,0.5,100.0,,\n")
    with Trackers(["csv", "tensorboard"]) as trackers:
        Trainer(TrainConfig(**dict(RUN, max_steps=40)), [], on_event=trackers, resume=str(out)).run()
    with open(out / "metrics.csv", newline="") as f:
        steps = [int(r["step"]) for r in csv.DictReader(f)]
    assert steps == sorted(set(steps)) and steps[-1] == 40 and 20 in steps
    events = EventAccumulator(str(out))
    events.Reload()
    train_steps = [e.step for e in events.Scalars("loss/train")]
    assert sorted(set(train_steps)) == sorted(train_steps) and max(train_steps) == 40
