"""metrics.jsonl after a kill: readers take every whole record, and resume drops what follows the checkpoint."""

from __future__ import annotations

import json

import pytest

from chargen.errors import ChargenError
from chargen.training.rundir import METRICS_NAME, MetricsLog, read_metrics

RECORDS = [{"step": 10, "train_loss": 2.5}, {"step": 20, "train_loss": 2.1}, {"step": 20, "val_loss": 2.2},
           {"step": 30, "train_loss": 1.9}]


def write(path, text: str) -> None:
    path.write_text(text, encoding="utf-8")


def lines(records) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def test_reads_every_record_of_a_whole_log(tmp_path):
    write(tmp_path / METRICS_NAME, lines(RECORDS))
    assert read_metrics(tmp_path / METRICS_NAME) == RECORDS


def test_a_missing_log_has_no_records(tmp_path):
    assert read_metrics(tmp_path / METRICS_NAME) == []


@pytest.mark.parametrize("cut", [1, 5, 17])
def test_a_last_line_cut_by_a_kill_is_skipped(tmp_path, cut):
    write(tmp_path / METRICS_NAME, lines(RECORDS) + json.dumps({"step": 40, "train_loss": 1.8})[:cut])
    assert read_metrics(tmp_path / METRICS_NAME) == RECORDS


def test_lines_that_are_not_objects_are_skipped(tmp_path):
    write(tmp_path / METRICS_NAME, lines(RECORDS[:2]) + "[1, 2]\n42\n\n\"text\"\nnot json\n" + lines(RECORDS[2:]))
    assert read_metrics(tmp_path / METRICS_NAME) == RECORDS


def test_bytes_that_are_not_utf8_do_not_stop_the_reader(tmp_path):
    (tmp_path / METRICS_NAME).write_bytes(lines(RECORDS).encode() + b'{"step": 40, "x": "\xff\xfe')
    assert read_metrics(tmp_path / METRICS_NAME) == RECORDS


def test_trim_after_drops_records_past_the_step_and_a_cut_line(tmp_path):
    write(tmp_path / METRICS_NAME, lines(RECORDS) + '{"step": 40, "tra')
    log = MetricsLog(tmp_path)
    log.trim_after(20)
    assert read_metrics(tmp_path / METRICS_NAME) == RECORDS[:3]
    log.append(step=21, train_loss=2.0)  # the resumed run's records follow on a line of their own
    assert read_metrics(tmp_path / METRICS_NAME) == RECORDS[:3] + [{"step": 21, "train_loss": 2.0}]


def test_trim_after_drops_a_cut_line_even_when_no_record_is_past_the_step(tmp_path):
    write(tmp_path / METRICS_NAME, lines(RECORDS) + '{"step": 4')
    MetricsLog(tmp_path).trim_after(30)
    assert (tmp_path / METRICS_NAME).read_text(encoding="utf-8") == lines(RECORDS)


def test_trim_after_leaves_a_whole_log_alone(tmp_path):
    write(tmp_path / METRICS_NAME, lines(RECORDS))
    before = (tmp_path / METRICS_NAME).stat().st_mtime_ns
    MetricsLog(tmp_path).trim_after(30)
    assert (tmp_path / METRICS_NAME).stat().st_mtime_ns == before
    assert read_metrics(tmp_path / METRICS_NAME) == RECORDS


def test_trim_after_without_a_log_does_nothing(tmp_path):
    MetricsLog(tmp_path).trim_after(10)
    assert not (tmp_path / METRICS_NAME).exists()


def test_trim_after_drops_records_whose_step_is_not_a_number(tmp_path):
    write(tmp_path / METRICS_NAME, lines(RECORDS[:1]) + lines([{"step": "ten"}, {"note": "no step"}]))
    MetricsLog(tmp_path).trim_after(10)
    # A record without a step counts as step 0 (kept); one whose step is not a number is dropped.
    assert read_metrics(tmp_path / METRICS_NAME) == RECORDS[:1] + [{"note": "no step"}]


def test_an_unreadable_log_is_one_clear_error(tmp_path):
    (tmp_path / METRICS_NAME).mkdir()  # a directory where the log should be: reading it fails
    with pytest.raises(ChargenError, match="cannot read the metrics log"):
        MetricsLog(tmp_path).trim_after(10)
