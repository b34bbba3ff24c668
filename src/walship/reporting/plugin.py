"""The Nagios/Icinga plugin conventions walship's checks and passive results follow.

One line `STATE: text | perfdata`, and the state as exit code: 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN. Perfdata items are `label=value[unit];warn;crit;min;max`.
"""

from __future__ import annotations

# plain classes and a hand-made parser, not dataclasses and re: wal-push builds its passive result in every
# archive_command call, and those two modules cost the call 9 ms

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


class Perf:
    """One perfdata item: label=value[unit];warn;crit;min."""

    __slots__ = ("label", "value", "unit", "warning", "critical", "minimum")

    def __init__(self, label: str, value: float | int, unit: str = "", warning: float | None = None,
                 critical: float | None = None, minimum: float | None = 0):
        self.label, self.value, self.unit = label, value, unit          # unit: "s", "B", "" (a count)
        self.warning, self.critical, self.minimum = warning, critical, minimum

    def _fields(self) -> tuple:
        return (self.label, self.value, self.unit, self.warning, self.critical, self.minimum)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Perf) and self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        return "Perf(" + ", ".join(map(repr, self._fields())) + ")"

    def __str__(self) -> str:
        def num(x):
            if x is None:
                return ""
            return str(int(x)) if float(x).is_integer() else f"{x:.3f}".rstrip("0")
        label = f"'{self.label}'" if " " in self.label else self.label
        text = f"{label}={num(self.value)}{self.unit};{num(self.warning)};{num(self.critical)};{num(self.minimum)}"
        return text.rstrip(";")


class CheckResult:
    """A check's state, its one-line text, and its perfdata."""

    __slots__ = ("state", "text", "perfdata")

    def __init__(self, state: int, text: str, perfdata: list[Perf] | None = None):
        self.state, self.text = state, text
        self.perfdata: list[Perf] = perfdata if perfdata is not None else []

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, CheckResult)
                and (self.state, self.text, self.perfdata) == (other.state, other.text, other.perfdata))

    __hash__ = None  # type: ignore[assignment]   # mutable, as the dataclass it replaces: not hashable

    def __repr__(self) -> str:
        return f"CheckResult({self.state!r}, {self.text!r}, {self.perfdata!r})"

    @property
    def state_name(self) -> str:
        return STATE_NAMES[self.state]

    @property
    def output(self) -> str:
        """The plugin output without perfdata: 'STATE: text' on one line."""
        return f"{self.state_name}: {' '.join(self.text.split())}"

    def line(self) -> str:
        perf = " ".join(str(p) for p in self.perfdata)
        return f"{self.output} | {perf}" if perf else self.output


def worst(*states: int) -> int:
    """CRITICAL beats WARNING beats UNKNOWN beats OK: a known problem outranks an unknown one."""
    rank = {OK: 0, UNKNOWN: 1, WARNING: 2, CRITICAL: 3}
    return max(states, key=rank.__getitem__, default=OK)


def parse_age(text: str) -> float:
    """'90m', '26h', '2d', '1w', '45s' or plain seconds -> seconds."""
    word = str(text).strip()
    unit = word[-1:] if word[-1:] in _AGE_UNITS else ""
    number = word[:len(word) - len(unit)].rstrip()
    whole, dot, fraction = number.partition(".")
    if not (whole.isdigit() and whole.isascii() and (not dot or (fraction.isdigit() and fraction.isascii()))):
        raise ValueError(f"{text!r} is not an age; use a number with s, m, h, d or w (e.g. 90m, 26h, 2d)")
    return float(number) * _AGE_UNITS[unit]


def format_age(seconds: float) -> str:
    """A short human form: 45s, 12m, 5h12m, 3d4h."""
    s = int(max(0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m"
    if s < 86400:
        h, m = divmod(s // 60, 60)
        return f"{h}h{m:02d}m" if m else f"{h}h"
    d, h = divmod(s // 3600, 24)
    return f"{d}d{h}h" if h else f"{d}d"


def format_bytes(n: float) -> str:
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(value) < 1024 or unit == "TiB":
            return f"{int(value)} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError
