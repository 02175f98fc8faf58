import importlib
import io
from contextlib import nullcontext

from rich.console import Console

from chargen.dashboard import Dashboard
from chargen.train import TrainConfig, Trainer

from .conftest import TINY_OPTIONS


def test_live_dashboard_redraws_at_most_twice_a_second_and_ends_on_the_final_state(tiny_corpus, tmp_path,
                                                                                     monkeypatch):
    console = Console(file=io.StringIO(), force_terminal=True, width=100)
    dashboard = Dashboard(console)
    assert dashboard.live_mode
    clock = iter(range(10**6))  # each reading of the clock: 0.1 s later (two per step)
    monkeypatch.setattr("chargen.dashboard.time.monotonic", lambda: next(clock) / 10)
    renders = []
    render = dashboard._render
    monkeypatch.setattr(dashboard, "_render", lambda: renders.append(1) or render())
    with dashboard:
        Trainer(TrainConfig(**TINY_OPTIONS, out=str(tmp_path / "run")), [str(tiny_corpus)],
                on_event=dashboard).run()
    # 60 steps of 0.2 s are 12 s: ~24 redraws, plus one per other event; a redraw per step would be 66+.
    assert 20 <= len(renders) < 40
    screen = console.file.getvalue()
    assert "step" in screen and "60  (epoch" in screen and "best val" in screen


def test_the_shape_and_precision_auto_chose_for_a_time_budget_are_shown(tiny_corpus, tmp_path, monkeypatch):
    train_module = importlib.import_module("chargen.train")
    monkeypatch.setattr(train_module, "cpu_has_native_bf16", lambda: True)
    # A crawl, with bf16 the slower: as on an Intel Xeon without AMX.
    monkeypatch.setattr(train_module, "measure_speed", lambda *args: 2.0 if args[-1] is nullcontext else 1.0)
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
