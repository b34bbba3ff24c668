"""The Nagios/Icinga plugin conventions walship's checks and passive results follow.

One line `STATE: text | perfdata`, and the state as exit code: 0 OK, 1 WARNING,
2 CRITICAL, 3 UNKNOWN. Perfdata items are `label=value[unit];warn;crit;min;max`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

OK, WARNING, CRITICAL, UNKNOWN = 0, 1, 2, 3
STATE_NAMES = {OK: "OK", WARNING: "WARNING", CRITICAL: "CRITICAL", UNKNOWN: "UNKNOWN"}

_AGE_RE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")
_AGE_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


@dataclass(frozen=True)
class Perf:
    label: str
    value: float | int
    unit: str = ""                 # "s", "B", "" (a count)
    warning: float | None = None
    critical: float | None = None
    minimum: float | None = 0

    def __str__(self) -> str:
        def num(x):
            if x is None:
                return ""
            return str(int(x)) if float(x).is_integer() else f"{x:.3f}".rstrip("0")
        label = f"'{self.label}'" if " " in self.label else self.label
        text = f"{label}={num(self.value)}{self.unit};{num(self.warning)};{num(self.critical)};{num(self.minimum)}"
        return text.rstrip(";")


@dataclass
class CheckResult:
    state: int
    text: str
    perfdata: list[Perf] = field(default_factory=list)

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
    match = _AGE_RE.match(str(text))
    if not match:
        raise ValueError(f"{text!r} is not an age; use a number with s, m, h, d or w (e.g. 90m, 26h, 2d)")
    return float(match.group(1)) * _AGE_UNITS[match.group(2)]


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
