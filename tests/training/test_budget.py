"""A run's budget: the step limit it implies, how far along a run is, and why it stops."""

import pytest

from chargen.training.auto import DEFAULT_EPOCHS
from chargen.training.budget import Budget


def test_total_steps_is_the_nearest_of_the_step_and_epoch_limits():
    assert Budget(100, max_steps=50).total_steps() == 50
    assert Budget(100, epochs=2.5).total_steps() == 250
    assert Budget(100, max_steps=300, epochs=2).total_steps() == 200
    assert Budget(100, max_steps=150, epochs=2).total_steps() == 150
    assert Budget(3, epochs=0.5).total_steps() == 2  # a part of an epoch rounds up to a whole step


def test_without_limits_a_run_reads_its_text_the_default_number_of_times():
    assert Budget(100).total_steps() == DEFAULT_EPOCHS * 100


def test_a_time_budget_alone_sets_no_step_limit():
    assert Budget(100, max_time=60.0).total_steps() is None
    assert Budget(100, max_time=60.0, max_steps=10).total_steps() == 10


def test_progress_is_the_share_of_the_nearest_limit():
    assert Budget(100, max_steps=200).progress(50, elapsed=1e6) == 0.25  # no time budget: time is no limit
    assert Budget(100, max_time=100.0).progress(10**6, elapsed=30.0) == pytest.approx(0.3)
    both = Budget(100, max_steps=200, max_time=100.0)
    assert both.progress(50, elapsed=80.0) == pytest.approx(0.8)  # time runs out first
    assert both.progress(150, elapsed=10.0) == pytest.approx(0.75)  # steps run out first
    assert both.progress(250, elapsed=130.0) == 1.0  # never past the end
    assert Budget(100).progress(500, elapsed=0.0) == 0.5


def test_finished_reason_names_the_limit_reached():
    assert Budget(100, max_steps=50).finished_reason(49, 0.0) is None
    assert Budget(100, max_steps=50).finished_reason(50, 0.0) == "max_steps"
    assert Budget(100, epochs=2).finished_reason(200, 0.0) == "epochs"
    assert Budget(10).finished_reason(10 * DEFAULT_EPOCHS - 1, 0.0) is None
    assert Budget(10).finished_reason(10 * DEFAULT_EPOCHS, 0.0) == "epochs"
    assert Budget(100, max_time=60.0).finished_reason(10**9, 59.0) is None  # a time budget alone: no step limit
    assert Budget(100, max_time=60.0).finished_reason(5, 60.0) == "max_time"
    assert Budget(100, max_steps=50, max_time=60.0).finished_reason(50, 70.0) == "max_steps"


def test_a_time_budget_keeps_room_for_the_final_evaluation():
    budget = Budget(100, max_time=60.0)
    assert budget.finished_reason(5, 49.0, final_eval_seconds=10.0) is None
    assert budget.finished_reason(5, 50.0, final_eval_seconds=10.0) == "max_time"
    assert Budget(100, max_steps=50).finished_reason(10, 1e6, final_eval_seconds=10.0) is None  # only under a time budget
