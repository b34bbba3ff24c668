"""`walship check receive`: is wal-receive connected, how far behind is the repository, when did it last store.

The figures come from the server it streams from (pg_stat_replication: its flush position is what is
durable, in the repository too when synchronous) and from the repository (the newest stored piece or segment
under receive/), so the check runs where the other checks run, not only on wal-receive's host.
"""

from __future__ import annotations

import time

from walship.reporting.plugin import CRITICAL, OK, WARNING, CheckResult, Perf, format_age, format_bytes, worst
from walship.storage import Store


def newest_store_time(store: Store) -> float | None:
    """When wal-receive last stored something: the newest piece under receive/ (pieces of complete segments are
    deleted once the segment is stored: an empty receive/ then says nothing, and None is returned)."""
    from walship.repo.layout import RECEIVE_PREFIX
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
    from walship.pg.conn import connect
    from walship.pg.replication import receiver_on_server
    from walship.reporting.plugin import parse_age

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


# --- `walship status`: the wal-receive section ------------------------------------------------------------------
def status_section(settings, store: Store, conninfo: str | None, now: float) -> dict | None:
    """wal-receive's figures for `walship status`: the server's view (connection, flush position, lag, slot), the
    newest stored piece, and the spool's status file when this host runs it; None when nothing says wal-receive
    is in use (no slot, no connection, no piece, no spool status file)."""
    from walship.errors import WalshipError
    from walship.pg.conn import connect
    from walship.pg.replication import receive_status
    from walship.pg.walnames import parse_lsn

    server: dict = {}
    try:
        with connect(conninfo, application_name="walship status") as conn:
            server = receive_status(conn, settings.receive_slot, settings.receive_application_name)
    except WalshipError as exc:
        server = {"error": exc.message}
    if server.get("flush_lsn") and server.get("server_lsn"):
        server["lag_bytes"] = max(0, parse_lsn(server["server_lsn"]) - parse_lsn(server["flush_lsn"]))
    last_store = newest_store_time(store)
    spool = _spool_status(settings.receive_spool_dir)
    if not (server.get("slot_exists") or server.get("state") or last_store is not None or spool):
        return None
    return {"application_name": settings.receive_application_name, "server": server,
            "last_store": last_store, "last_store_age_s": None if last_store is None else max(0.0, now - last_store),
            "spool": spool}


def _spool_status(spool_dir: str | None) -> dict | None:
    if not spool_dir:
        return None
    import json
    import os

    from walship.receive.receiver import STATUS_FILE
    path = os.path.join(spool_dir, STATUS_FILE)
    try:
        with open(path) as fh:
            doc = json.load(fh)
    except (OSError, ValueError):
        return None
    return {**doc, "path": spool_dir} if isinstance(doc, dict) else None


def status_lines(section: dict | None, now: float) -> list[str]:
    if section is None:
        return []
    name, server = section["application_name"], section["server"]
    if "error" in server:
        lines = [f"wal-receive   unknown ({name}): {server['error']}"]
    elif server.get("state"):
        lag = format_bytes(server.get("lag_bytes", 0))
        seconds = f" ({server['flush_lag_s']:.1f} s)" if server.get("flush_lag_s") is not None else ""
        lines = [f"wal-receive   {server['state']} ({server['sync_state']}) as {name}, flushed {server['flush_lsn']} "
                 f"of {server['server_lsn']}: repository {lag} behind{seconds}"]
    else:
        lines = [f"wal-receive   NOT CONNECTED ({name}): WAL written now reaches the repository only through "
                 "archive_command"]
    if section["last_store_age_s"] is not None:
        lines.append(f"  last stored {format_age(section['last_store_age_s'])} ago (newest piece under receive/)")
    if server.get("slot_exists"):
        state = "LOST: the server removed WAL it kept for wal-receive; it cannot resume (take a new base backup, " \
                "drop and recreate the slot)" if server.get("slot_wal_status") == "lost" else server.get("slot_wal_status")
        lines.append(f"  slot        {server['slot']} {'active' if server['slot_active'] else 'inactive'}, "
                     f"restart_lsn {server['slot_restart_lsn']}, {state}")
    elif "error" not in server:
        lines.append(f"  slot        {server['slot']} does not exist (wal-receive creates it when it starts)")
    spool = section["spool"]
    if spool:
        mode = "synchronous" if spool.get("synchronous") else "asynchronous"
        lines.append(f"  spool       {spool['path']}: {mode}, received {spool.get('received_lsn')}, acknowledged "
                     f"{spool.get('acknowledged_lsn')} (written {format_age(max(0.0, now - spool['updated']))} ago"
                     f"{'' if spool.get('connected') else ', not connected'})")
    return lines
