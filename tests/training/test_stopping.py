"""Stopping on request: the first Ctrl-C or SIGTERM sets a flag, the second aborts at once."""

import os
import signal
import threading

import pytest

from chargen.training import TrainingAborted
from chargen.training.stopping import StopRequest


def test_a_request_is_a_flag_with_the_signal_that_set_it():
    stop = StopRequest()
    assert not stop.is_set() and stop.signal_number is None
    stop.set()
    assert stop.is_set() and stop.signal_number is None  # asked from code (the API, a callback)
    other = StopRequest()
    other.set(signal.SIGTERM)
    assert other.is_set() and other.signal_number == signal.SIGTERM


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_the_first_signal_asks_the_second_aborts_and_the_handlers_are_put_back(tmp_path, sig):
    before = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    stop = StopRequest()
    with pytest.raises(TrainingAborted) as info:
        with stop.on_signals(tmp_path):
            os.kill(os.getpid(), sig)
            assert stop.is_set() and stop.signal_number == sig  # the step in progress goes on
            os.kill(os.getpid(), sig)
            pytest.fail("the second signal did not abort")
    assert info.value.run_dir == tmp_path and info.value.signal_number == sig
    assert f"the last checkpoint in {tmp_path} is intact" in str(info.value)
    assert {s: signal.getsignal(s) for s in before} == before


def test_outside_the_main_thread_signals_are_left_alone(tmp_path):
    seen = []

    def in_thread():
        before = signal.getsignal(signal.SIGINT)
        with StopRequest().on_signals(tmp_path):
            seen.append(signal.getsignal(signal.SIGINT) is before)

    thread = threading.Thread(target=in_thread)
    thread.start()
    thread.join()
    assert seen == [True]
