"""`walship check receive`: is wal-receive connected, how far behind is the repository, when did it last store.

The figures come from the server it streams from (pg_stat_replication: its flush position is what is
durable, in the repository too when synchronous) and from the repository (the newest stored piece or segment
under receive/), so the check runs where the other checks run, not only on wal-receive's host.
"""

from __future__ import annotations

import time

from walship.monitoring.plugin import CRITICAL, OK, WARNING, CheckResult, Perf, format_age, format_bytes, worst
from walship.storage import Store


def newest_store_time(store: Store) -> float | None:
    """When wal-receive last stored something: the newest piece under receive/ (pieces of complete segments are
    deleted once the segment is stored: an empty receive/ then says nothing, and None is returned)."""
    from walship.receive.partial import RECEIVE_PREFIX
    newest = None
    for info in store.list(RECEIVE_PREFIX):
        newest = info.mtime if newest is None else max(newest, info.mtime)
    return newest


def check_receive(seen: tuple[str, str, int, float | None] | None, last_store: float | None, now: float, *,
                  lag_warning: int, lag_critical: int, age_warning_s: float, age_critical_s: float,
                  application_name: str) -> CheckResult:
    if seen is None:
        return CheckResult(CRITICAL, f"wal-receive ({application_name}) is not connected to the server: WAL "
                                     "written now reaches the repository only through archive_command "
                                     "(docs/operations.md, 'wal-receive is not connected')")
    state, sync_state, lag_bytes, lag_s = seen
    states = [OK if state == "streaming" else WARNING]
    states.append(CRITICAL if lag_bytes >= lag_critical else WARNING if lag_bytes >= lag_warning else OK)
    text = [f"wal-receive {state} ({sync_state}), repository {format_bytes(lag_bytes)} behind"
            + (f" ({lag_s:.1f} s)" if lag_s is not None else "")]
    perf = [Perf("lag_bytes", lag_bytes, "B", lag_warning, lag_critical),
            Perf("lag_seconds", round(lag_s or 0.0, 3), "s")]
    if last_store is not None:
        age = max(0.0, now - last_store)
        # a server with no writes sends nothing to store: an old last store is only a problem with lag
        if lag_bytes > 0:
            states.append(CRITICAL if age >= age_critical_s else WARNING if age >= age_warning_s else OK)
        text.append(f"last stored {format_age(age)} ago")
        perf.append(Perf("last_store_age", round(age, 1), "s", age_warning_s, age_critical_s))
    return CheckResult(worst(*states), ", ".join(text), perf)


def run_check(args, settings, store_factory) -> CheckResult:
    from walship.monitoring.plugin import parse_age
    from walship.pg.conn import connect
    from walship.pg.replication import receiver_on_server

    application_name = args.application_name or settings.receive_application_name
    with connect(args.pg, application_name="walship-check") as conn:
        seen = receiver_on_server(conn, application_name)
    store = store_factory()
    try:
        last_store = newest_store_time(store)
    finally:
        store.close()
    return check_receive(seen, last_store, time.time(), lag_warning=args.lag_warning, lag_critical=args.lag_critical,
                         age_warning_s=parse_age(args.age_warning), age_critical_s=parse_age(args.age_critical),
                         application_name=application_name)
