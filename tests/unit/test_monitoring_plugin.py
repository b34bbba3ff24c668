import pytest

from walship.reporting.plugin import CRITICAL, OK, UNKNOWN, WARNING, CheckResult, Perf, format_age, parse_age, worst


@pytest.mark.parametrize("text,seconds", [("90m", 5400), ("26h", 93600), ("2d", 172800), ("45s", 45),
                                          ("1w", 604800), ("120", 120), ("1.5h", 5400)])
def test_parse_age(text, seconds):
    assert parse_age(text) == seconds


@pytest.mark.parametrize("text", ["", "2 days", "h", "-5m", "5y"])
def test_parse_age_rejects_nonsense_with_a_hint(text):
    with pytest.raises(ValueError, match="90m, 26h, 2d"):
        parse_age(text)


def test_format_age():
    assert [format_age(s) for s in (5, 600, 3600, 5 * 3600 + 720, 86400 * 3 + 3600 * 4)] == \
        ["5s", "10m", "1h", "5h12m", "3d4h"]


def test_perfdata_follows_the_plugin_format():
    assert str(Perf("duration", 12.5, "s")) == "duration=12.5s;;;0"
    assert str(Perf("age", 3600, "s", 93600, 180000)) == "age=3600s;93600;180000;0"
    assert str(Perf("backlog", 3, "", 10, 100, None)) == "backlog=3;10;100"
    assert str(Perf("some label", 1)) == "'some label'=1;;;0"


def test_plugin_line_is_one_line_with_state_text_and_perfdata():
    result = CheckResult(CRITICAL, "wal-push failed:\nconnection refused", [Perf("backlog", 4)])
    assert result.line() == "CRITICAL: wal-push failed: connection refused | backlog=4;;;0"
    assert CheckResult(OK, "fine").line() == "OK: fine"


def test_worst_state_ranks_known_problems_above_unknown():
    assert worst(OK, UNKNOWN) == UNKNOWN
    assert worst(UNKNOWN, WARNING) == WARNING
    assert worst(WARNING, CRITICAL, UNKNOWN) == CRITICAL
    assert worst() == OK


def test_check_usage_and_config_errors_are_unknown(capsys, monkeypatch):
    from walship.cli import main
    monkeypatch.setenv("WALSHIP_COMPRESSION", "rar")
    assert main(["check", "backup"]) == 3
    assert capsys.readouterr().out.startswith("UNKNOWN: unknown compression 'rar'")
    monkeypatch.delenv("WALSHIP_COMPRESSION")
    with pytest.raises(SystemExit) as exit_:
        main(["check", "archive", "--backlog-warning", "many"])
    assert exit_.value.code == 3
    assert capsys.readouterr().out.startswith("UNKNOWN: argument --backlog-warning: invalid int value: 'many'")
    monkeypatch.delenv("WALSHIP_REPO", raising=False)
    assert main(["check"]) == 3          # the end-to-end check needs a repository
    assert capsys.readouterr().out.startswith("UNKNOWN: no repository configured")
