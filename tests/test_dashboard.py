import io

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
