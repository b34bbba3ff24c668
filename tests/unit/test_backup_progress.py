"""Progress: a bar with rate and ETA on a terminal, log lines every few seconds or percent otherwise."""

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


def test_without_a_terminal_auto_logs_lines(monkeypatch):
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert isinstance(progress.make("auto", "x", 1), progress.Lines)
    assert isinstance(progress.make("line", "x", 1), progress.Lines)
    assert isinstance(progress.make("bar", "x", 1), progress.Bar)
    assert isinstance(progress.make("none", "x", 1), progress.NoProgress)


def test_lines_come_every_few_percent_or_seconds_and_once_at_the_end():
    now = [1000.0]
    lines: list[tuple[str, dict]] = []
    meter = progress.Lines("backup b1", total=100 << 20, clock=lambda: now[0],
                           emit=lambda message, fields: lines.append((message, fields)))
    for _ in range(10):                       # 10 MiB in 1 MiB steps, 0.1 s apart: a line each 5 %
        now[0] += 0.1
        meter.advance(1 << 20)
    assert [f["percent"] for _, f in lines] == [5.0, 10.0]
    assert lines[0][0].startswith("backup b1: 5% of about 100.0 MiB, 5.0 MiB at 10.0 MiB/s, ETA 0:")
    now[0] += progress.LINE_EVERY_S            # slow now: the time brings the next line
    meter.advance(1024)
    assert len(lines) == 3 and lines[2][1]["done_bytes"] == (10 << 20) + 1024
    meter.advance(1024)                        # neither 10 s nor 5 % since the last one
    assert len(lines) == 3
    meter.close()
    assert len(lines) == 4 and " done in 0:11 " in lines[3][0]
