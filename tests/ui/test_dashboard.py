"""The training dashboard: a live view redrawn at most twice a second, or plain lines; what auto chose."""

import io
from contextlib import nullcontext
from types import SimpleNamespace

from rich.console import Console

from chargen import devices
from chargen.training import TrainConfig, Trainer
from chargen.training import probe as probe_module
from chargen.ui import dashboard as dashboard_module
from chargen.ui.dashboard import REDRAW_EVERY_S, Dashboard
from tests.conftest import TINY_OPTIONS


def test_live_dashboard_redraws_at_most_twice_a_second_and_ends_on_the_final_state(tiny_corpus, tmp_path,
                                                                                     monkeypatch):
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    dashboard = Dashboard(console)
    assert dashboard.live_mode and REDRAW_EVERY_S == 0.5
    clock = iter(range(10**6))  # each reading of the dashboard's clock: 0.1 s later (two per step)
    monkeypatch.setattr(dashboard_module, "time", SimpleNamespace(monotonic=lambda: next(clock) / 10))
    redraws = []
    update = dashboard.live.update
    monkeypatch.setattr(dashboard.live, "update", lambda *args, **kwargs: redraws.append(1) or update(*args, **kwargs))
    with dashboard:
        Trainer(TrainConfig(**TINY_OPTIONS, out=str(tmp_path / "run")), [str(tiny_corpus)],
                on_event=dashboard).run()
    # 60 steps of 0.2 s are 12 s: ~24 redraws, plus one per other event; a redraw per step would be 66+.
    assert 20 <= len(redraws) < 40
    screen = console.file.getvalue()
    assert "step" in screen and "60  (epoch" in screen and "best val" in screen


def test_plain_lines_report_the_run_evaluations_and_the_end(tiny_corpus, tmp_path):
    console = Console(file=io.StringIO(), force_terminal=False, width=200)
    with Dashboard(console) as dashboard:
        assert not dashboard.live_mode and dashboard.live is None
        Trainer(TrainConfig(**TINY_OPTIONS, out=str(tmp_path / "run")), [str(tiny_corpus)], on_event=dashboard).run()
    lines = console.file.getvalue().splitlines()
    assert lines[0].startswith("run: 1x32 lstm, ") and "cpu fp32" in lines[0] and "budget 60 steps" in lines[0]
    assert any(line.startswith("eval step 30: val ") and line.endswith("(new best)") for line in lines)
    assert any(line.startswith("saved ") and "last.safetensors (step 60)" in line for line in lines)
    assert lines[-1].startswith("done: 60 steps in ") and lines[-1].endswith(f"checkpoints in {tmp_path / 'run'}")


def test_the_shape_and_precision_auto_chose_for_a_time_budget_are_shown(tiny_corpus, tmp_path, monkeypatch):
    monkeypatch.setattr(devices, "cpu_has_native_bf16", lambda: True)
    # A crawl, with bf16 the slower: as on a CPU that has bf16 but no matrix units for it.
    monkeypatch.setattr(probe_module, "measure_speed", lambda *args: 2.0 if args[-1] is nullcontext else 1.0)
    for live in (True, False):
        console = Console(file=io.StringIO(), force_terminal=live, width=200)
        config = TrainConfig(**{**TINY_OPTIONS, "hidden": "auto", "seq_len": "auto", "max_steps": 4,
                                "max_time": 600.0, "precision": "auto"}, out=str(tmp_path / f"run-{live}"))
        with Dashboard(console) as dashboard:
            Trainer(config, [str(tiny_corpus)], on_event=dashboard).run()
        screen = console.file.getvalue()
        assert "2x256 lstm" not in screen and "1x256 lstm" in screen and "batch 8x32" in screen and "cpu fp32" in screen
        assert "hidden 256, seq len 32 for" in screen and "probed tokens/s by width: 512: 2, 448: 2" in screen
        assert "fp32 (timed 512-wide, 32-token windows: fp32 2, bf16 1 tokens/s)" in screen
