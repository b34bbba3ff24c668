"""Progress: a bar with rate and ETA on a terminal, nothing otherwise."""

from __future__ import annotations

import io

from walship.backup import progress


def test_the_bar_shows_fraction_rate_and_eta():
    out = io.StringIO()
    bar = progress.Bar("backup b1", total=100 << 20, stream=out)
    bar.started -= 10                                   # ten seconds ago
    bar.done = 25 << 20
    line = bar.line(bar.started + 10)
    assert "25%" in line and "25.0 MiB" in line and "2.5 MiB/s" in line and "ETA 0:30" in line
    bar.close()
    assert out.getvalue().endswith("\n")


def test_without_a_terminal_auto_draws_nothing(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress.make("auto", "x", 1), progress.NoProgress)
    assert isinstance(progress.make("bar", "x", 1), progress.Bar)
